"""Per-window inference time of the pretrained taggers by backend and batch size.

    .venv/bin/python -m benchmarks.inference_backends [--models NAME ...] [--repeats N]

Backends, all on the CPU and all fed the same log-mel windows of synthetic
music: the original TF-1 graph as musicnn ships it (the baseline), the Keras
network through ``Tagger.predict`` (a ``tf.function``), the same function
compiled by XLA (``jit_compile=True``), and LiteRT (TFLite) interpreters
converted from the Keras network, float32 and dynamic-range int8, with
``--threads`` threads (default 2).  Calls are interleaved across backends and
the table gives medians in ms per window, the speed-up over the baseline
measured in the same run, and the largest absolute probability difference from
the baseline.  LiteRT runs through ``ai_edge_litert`` when installed, else
through ``tf.lite.Interpreter``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODELS = ("MSD_musicnn", "MSD_vgg")
BATCH_SIZES = (1, 8, 32)
BASELINE = "tf1-graph"

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Row:
    model: str
    backend: str
    batch: int
    ms_per_window: float
    speed_up: float
    max_abs_diff: float


def xla_predictor(network: Any) -> Predict:
    """The Keras network through ``tf.function(jit_compile=True)``; one compile per batch size."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def predict(windows: tf.Tensor) -> tf.Tensor:
        return network(windows, training=False)

    return lambda windows: predict(tf.constant(windows)).numpy()


def litert_model(network: Any, *, quantize: bool) -> bytes:
    """Convert the Keras network to a LiteRT flatbuffer (dynamic-range int8 if ``quantize``)."""
    import tensorflow as tf

    holder = tf.Module()
    holder.weights = [variable.value for variable in network.variables]  # frozen by the converter
    shape = (None, *network.inputs[0].shape[1:])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def predict(windows: tf.Tensor) -> tf.Tensor:
        return network(windows, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [predict.get_concrete_function()], holder
    )
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(converter.convert())


def litert_predictor(flatbuffer: bytes, *, threads: int) -> Predict:
    """A LiteRT interpreter over ``flatbuffer``, resized whenever the batch size changes."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    allocated: list[tuple[int, ...]] = [()]

    def predict(windows: np.ndarray) -> np.ndarray:
        if windows.shape != allocated[0]:
            interpreter.resize_tensor_input(input_index, windows.shape)
            interpreter.allocate_tensors()
            allocated[0] = windows.shape
        interpreter.set_tensor(input_index, np.ascontiguousarray(windows, dtype=np.float32))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(output_index))

    return predict


def backends(name: str, *, threads: int) -> tuple[dict[str, Predict], Callable[[], None]]:
    """Every backend for model ``name``, the baseline first; and a function to close them."""
    from model import load_tagger
    from model.reference import OriginalGraph

    tagger = load_tagger(name)
    original = OriginalGraph(name)
    predictors: dict[str, Predict] = {
        BASELINE: original.predict,
        "keras tf.function": tagger.predict,
        "xla": xla_predictor(tagger.network),
        "litert f32": litert_predictor(
            litert_model(tagger.network, quantize=False), threads=threads
        ),
        "litert int8-dyn": litert_predictor(
            litert_model(tagger.network, quantize=True), threads=threads
        ),
    }
    return predictors, original.close


def test_windows(count: int, *, seed: int) -> np.ndarray:
    """``count`` log-mel windows (187 frames) cut from synthetic music-like signals."""
    from benchmarks.common import synthetic_music
    from model import log_mel

    rng = np.random.default_rng(seed)
    windows: list[np.ndarray] = []
    while len(windows) < count:
        mel = log_mel(synthetic_music(30.0, rng=rng))
        windows += [mel[start : start + 187] for start in range(0, len(mel) - 187 + 1, 187)]
    return np.stack(windows[:count]).astype(np.float32)


def measure(
    name: str, predictors: dict[str, Predict], windows: np.ndarray, *, repeats: int
) -> list[Row]:
    """Interleave every backend's calls per batch size; medians and ratios to the baseline."""
    reference = predictors[BASELINE](windows)
    diffs = {
        backend: float(np.abs(predict(windows) - reference).max())
        for backend, predict in predictors.items()
    }
    rows = []
    for batch in BATCH_SIZES:
        batch_windows = windows[:batch]
        for predict in predictors.values():
            predict(batch_windows)  # trace, compile or allocate for this shape
        seconds: dict[str, list[float]] = {backend: [] for backend in predictors}
        for _ in range(repeats):
            for backend, predict in predictors.items():
                started = time.perf_counter()
                predict(batch_windows)
                seconds[backend].append(time.perf_counter() - started)
        baseline = float(np.median(seconds[BASELINE]))
        for backend, times in seconds.items():
            median = float(np.median(times))
            rows.append(
                Row(name, backend, batch, 1e3 * median / batch, baseline / median, diffs[backend])
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per backend and batch")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT interpreter threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    windows = test_windows(max(BATCH_SIZES), seed=args.seed)
    print(
        f"ms per window, median of {args.repeats} interleaved calls; speed-up over {BASELINE} "
        "in the same run; max |dp| = largest probability difference from it"
    )
    print(
        f"{'model':<12} {'backend':<18} {'batch':>5} {'ms/window':>10} {'speed-up':>9} "
        f"{'max |dp|':>9}"
    )
    for name in args.models:
        predictors, close = backends(name, threads=args.threads)
        try:
            rows = measure(name, predictors, windows, repeats=args.repeats)
        finally:
            close()
        for row in rows:
            print(
                f"{row.model:<12} {row.backend:<18} {row.batch:>5} {row.ms_per_window:10.2f} "
                f"{row.speed_up:8.2f}x {row.max_abs_diff:9.2e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
