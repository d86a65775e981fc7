"""Per-window inference time of the pretrained taggers by backend and batch size.

    .venv/bin/python -m benchmarks.inference_backends [--models NAME ...] [--repeats N]
        [--backends NAME ...] [--sweep]

Backends, all on the CPU and all fed the same log-mel windows of synthetic
music: the original TF-1 graph as musicnn ships it (the baseline), the Keras
network through ``Tagger.predict`` (a ``tf.function``, ``model.backend =
"tensorflow"``), the same function compiled by XLA (``jit_compile=True``),
ONNX Runtime on the model folder's ``model.onnx`` (``OnnxTagger.predict``,
``model.backend = "onnxruntime"``), and LiteRT (TFLite) interpreters converted
from the Keras network, float32 and dynamic-range int8, with ``--threads``
threads (default 2).  Calls are interleaved across backends and the table
gives medians in ms per window, the speed-up over the baseline and over the
Keras ``tf.function`` measured in the same run, and the largest absolute
probability difference from the baseline.  LiteRT runs through
``ai_edge_litert`` when installed, else through ``tf.lite.Interpreter``.

``--sweep`` adds ONNX Runtime sessions with one option changed from the
chosen ones (:func:`model.onnx.session_options`): one intra-op thread, basic
or extended instead of all graph optimisations, none, no memory arena, idle
threads spinning, and parallel execution (inter-op threads) instead of
sequential: how the options were chosen.  The CPU (model, cores, instruction sets) is printed first.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODELS = ("MSD_musicnn", "MSD_vgg")
BATCH_SIZES = (1, 16, 32)
BASELINE = "tf1-graph"
KERAS = "keras tf.function"
ONNX = "onnxruntime"
OPTIONAL = (ONNX, "xla", "litert f32", "litert int8-dyn")

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Row:
    model: str
    backend: str
    batch: int
    ms_per_window: float
    speed_up: float
    vs_keras: float
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


def _session_predictor(session: Any) -> Predict:
    return lambda windows: np.asarray(session.run(None, {"mel": windows})[0])


def onnx_sweep(folder: Any) -> dict[str, Predict]:
    """ONNX Runtime sessions over ``folder``'s ``model.onnx``, each one option off the chosen."""
    import onnxruntime as ort

    from model.folder import ONNX_FILE
    from model.onnx import session_options

    level = ort.GraphOptimizationLevel
    variants: dict[str, dict[str, Any]] = {
        "ort 1 thread": {"intra_op_num_threads": 1},
        "ort opt basic": {"graph_optimization_level": level.ORT_ENABLE_BASIC},
        "ort opt extended": {"graph_optimization_level": level.ORT_ENABLE_EXTENDED},
        "ort opt none": {"graph_optimization_level": level.ORT_DISABLE_ALL},
        "ort no arena": {"enable_cpu_mem_arena": False},
        "ort spinning": {"session.intra_op.allow_spinning": "1"},
        "ort parallel": {
            "execution_mode": ort.ExecutionMode.ORT_PARALLEL,
            "inter_op_num_threads": 2,
        },
    }
    predictors: dict[str, Predict] = {}
    for label, changes in variants.items():
        options = session_options()
        for option, value in changes.items():
            if option.startswith("session."):
                options.add_session_config_entry(option, value)
            else:
                setattr(options, option, value)
        session = ort.InferenceSession(
            str(folder / ONNX_FILE), sess_options=options, providers=["CPUExecutionProvider"]
        )
        predictors[label] = _session_predictor(session)
    return predictors


def backends(
    name: str, *, threads: int, chosen: Sequence[str], sweep: bool
) -> tuple[dict[str, Predict], Callable[[], None]]:
    """The backends of model ``name`` in ``chosen`` (the baseline first) and a closer."""
    from model import load_tagger
    from model.reference import OriginalGraph
    from model.tagger import resolve_model_folder

    tagger = load_tagger(name)
    original = OriginalGraph(name)
    makers: dict[str, Callable[[], Predict]] = {
        KERAS: lambda: tagger.predict,
        "xla": lambda: xla_predictor(tagger.network),
        ONNX: lambda: load_tagger(name, backend="onnxruntime", device="cpu").predict,
        "litert f32": lambda: litert_predictor(
            litert_model(tagger.network, quantize=False), threads=threads
        ),
        "litert int8-dyn": lambda: litert_predictor(
            litert_model(tagger.network, quantize=True), threads=threads
        ),
    }
    predictors: dict[str, Predict] = {BASELINE: original.predict}
    for backend in (KERAS, *chosen):
        predictors[backend] = makers[backend]()
    if sweep:
        load_tagger(name, backend="onnxruntime")  # model.onnx built
        predictors.update(onnx_sweep(resolve_model_folder(name, cache_dir="~/.cache/tagstream")))
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
        keras = float(np.median(seconds[KERAS]))
        for backend, times in seconds.items():
            median = float(np.median(times))
            rows.append(
                Row(name, backend, batch, 1e3 * median / batch, baseline / median,
                    keras / median, diffs[backend])
            )  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per backend and batch")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT interpreter threads")
    parser.add_argument(
        "--backends", nargs="+", default=list(OPTIONAL), choices=OPTIONAL,
        help=f"besides {BASELINE} and {KERAS} (default: all)",
    )  # fmt: skip
    parser.add_argument("--sweep", action="store_true", help="ONNX Runtime session options too")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from benchmarks.common import cpu_description

    windows = test_windows(max(BATCH_SIZES), seed=args.seed)
    print(f"CPU: {cpu_description()}")
    print(
        f"ms per window, median of {args.repeats} interleaved calls; speed-up over {BASELINE} "
        f"and over {KERAS} (vs keras) in the same run; max |dp| = largest probability "
        "difference from the baseline"
    )
    print(
        f"{'model':<12} {'backend':<18} {'batch':>5} {'ms/window':>10} {'speed-up':>9} "
        f"{'vs keras':>9} {'max |dp|':>9}"
    )
    for name in args.models:
        predictors, close = backends(
            name, threads=args.threads, chosen=args.backends, sweep=args.sweep
        )
        try:
            rows = measure(name, predictors, windows, repeats=args.repeats)
        finally:
            close()
        for row in rows:
            print(
                f"{row.model:<12} {row.backend:<18} {row.batch:>5} {row.ms_per_window:10.2f} "
                f"{row.speed_up:8.2f}x {row.vs_keras:8.2f}x {row.max_abs_diff:9.2e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
