"""Load a tagger by name or path and run it with TensorFlow or ONNX Runtime.

>>> tagger = load_tagger("MSD_musicnn")                         # TensorFlow
>>> tagger = load_tagger("MSD_musicnn", backend="onnxruntime")  # ONNX Runtime
>>> tagger = load_tagger("MSD_musicnn", backend="auto")         # what model.backend defaults to
>>> probabilities = tagger.predict(windows)   # (n, 187, 96) -> (n, 50)

Both backends are a :class:`BaseTagger` (checking, warm-up, whole-signal
tagging) with their own ``_run``: :class:`Tagger` runs ``model.keras`` as a
``tf.function``, :class:`model.onnx.OnnxTagger` runs ``model.onnx`` in an ONNX
Runtime session without importing TensorFlow.

Pretrained names are converted from the musicnn wheel once and cached as a
model folder (``model.keras`` + ``contract.json``) under ``cache_dir``; the
same folder format (:mod:`model.folder`) is what training checkpoints and
``python -m training export`` write, so a path to such a folder works wherever
a name does.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

import numpy as np

from model.contract import ContractError, ModelContract
from model.convert import PRETRAINED, convert
from model.features import log_mel
from model.folder import MODEL_FILE, ModelLoadError, load_network, save_model_folder

if TYPE_CHECKING:
    from model.onnx import OnnxTagger

__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "DEVICES",
    "PRECISIONS",
    "BaseTagger",
    "ModelLoadError",
    "Tagger",
    "cpu_has_bfloat16",
    "load_tagger",
    "resolve_backend",
    "window_starts",
]

logger = logging.getLogger(__name__)

BACKENDS = ("tensorflow", "onnxruntime")
#: What ``model.backend`` and ``load_tagger(backend=...)`` take: a backend, or "auto".
BACKEND_CHOICES = ("auto", *BACKENDS)
DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("float32", "bfloat16")
CACHE_FORMAT = "v1"  # bump when the conversion changes, so stale caches are rebuilt
_device_lock = threading.Lock()


def _select_device(device: str) -> str:
    """Apply ``device`` to TensorFlow; return the device string to place ops on."""
    import tensorflow as tf

    if device not in DEVICES:
        raise ModelLoadError(f"device={device!r} must be one of {', '.join(DEVICES)}")
    with _device_lock:
        gpus = tf.config.list_physical_devices("GPU")
        if device == "cpu" and gpus:
            # Once TensorFlow has initialised, GPUs stay visible: ops are placed on the CPU.
            with contextlib.suppress(RuntimeError):
                tf.config.set_visible_devices([], "GPU")
            return "/CPU:0"
        if device == "gpu" and not gpus:
            raise ModelLoadError(
                "model.device is 'gpu' but TensorFlow sees no GPU; "
                "install a GPU build of TensorFlow or set model.device = 'auto'"
            )
        return "/GPU:0" if gpus and device != "cpu" else "/CPU:0"


def resolve_backend(backend: str, *, precision: str = "float32") -> str:
    """The backend that ``backend`` names: "auto" is "onnxruntime", or "tensorflow" for bfloat16.

    ONNX Runtime runs musicnn 2.1-2.6x faster per window than TensorFlow on an
    AVX2 CPU and starts in a fraction of a second without TensorFlow
    (``docs/EDGE.md``), so "auto" picks it; ``precision = "bfloat16"`` is a
    TensorFlow option, so with it "auto" picks TensorFlow.  The worker's
    streaming mode follows the tagger's backend
    (:class:`inference.backends.StreamingBackend`).

    Raises
    ------
    ModelLoadError
        ``backend`` is not one of :data:`BACKEND_CHOICES`.
    """
    if backend not in BACKEND_CHOICES:
        raise ModelLoadError(f"backend={backend!r} must be one of {', '.join(BACKEND_CHOICES)}")
    if backend != "auto":
        return backend
    return "tensorflow" if precision == "bfloat16" else "onnxruntime"


def cpu_has_bfloat16() -> bool | None:
    """Whether the CPU has bfloat16 instructions (AVX512_BF16 or AMX).

    Returns
    -------
    bool or None
        None when ``/proc/cpuinfo`` cannot be read.  Without them ``precision="bfloat16"``
        is refused, so a comparison of bfloat16 with float32 can only run where this is True.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_bf16" in text or "amx_bf16" in text


#: The former private name, still imported by tests/test_model.py (owned by another change).
_cpu_has_bfloat16 = cpu_has_bfloat16


def _select_precision(precision: str) -> None:
    """Apply ``precision``: "bfloat16" turns on oneDNN's automatic mixed precision.

    TensorFlow's graph optimiser then runs convolutions and matrix products in
    bfloat16 (accumulating in float32) and keeps the rest in float32.  It is a
    process-wide TensorFlow option, read when a function is first run: every
    model of the process runs that way afterwards.  It acts on CPU (oneDNN)
    kernels only.
    """
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision={precision!r} must be one of {', '.join(PRECISIONS)}")
    if precision == "bfloat16":
        if cpu_has_bfloat16() is False:
            logger.warning(
                "model.precision is 'bfloat16' but this CPU has no bfloat16 instructions "
                "(AVX512_BF16 or AMX): it will run slower than float32; set "
                "model.precision = 'float32'"
            )
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})


class BaseTagger(abc.ABC):
    """A tagging network with its contract, behind one ``predict``; the backends' common part.

    A backend (:class:`Tagger` for TensorFlow, :class:`model.onnx.OnnxTagger`
    for ONNX Runtime) implements :meth:`_run` over checked windows; checking,
    warm-up and tagging whole signals are the same for every backend.

    Attributes
    ----------
    backend : str
        The name ``model.backend`` gives it ("tensorflow", "onnxruntime").
    contract : ModelContract
    """

    backend: ClassVar[str]

    def __init__(self, contract: ModelContract) -> None:
        self.contract = contract

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def tags(self) -> tuple[str, ...]:
        return self.contract.tags

    @abc.abstractmethod
    def _run(self, windows: np.ndarray) -> np.ndarray:
        """The network on ``windows`` (n >= 1, checked, contiguous float32) -> (n, n_tags)."""

    def _check_network(self, input_shape: tuple[Any, ...], n_outputs: Any) -> None:
        """Refuse a network whose input or output size disagrees with the contract.

        ``input_shape`` is the network's input shape without the batch axis;
        ``None`` (or a symbolic name) for the time axis accepts any length.
        """
        contract = self.contract
        expected = (contract.window_frames, contract.features.n_mels)
        time_free = not isinstance(input_shape[0], int)
        if tuple(input_shape) != expected and not (time_free and input_shape[1] == expected[1]):
            raise ContractError(
                f"model {contract.name}: network input {tuple(input_shape)} disagrees with "
                f"its contract {expected}"
            )
        if n_outputs != len(contract.tags):
            raise ContractError(
                f"model {contract.name}: network has {n_outputs} outputs but its contract "
                f"lists {len(contract.tags)} tags"
            )

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Tag probabilities of log-mel windows.

        Parameters
        ----------
        windows : np.ndarray [shape=(n, window_frames, n_mels)]

        Returns
        -------
        np.ndarray [shape=(n, n_tags)], float32 in [0, 1]
        """
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if windows.ndim != 3 or windows.shape[1:] != (
            self.contract.window_frames,
            self.contract.features.n_mels,
        ):
            raise ValueError(
                f"windows must have shape (n, {self.contract.window_frames}, "
                f"{self.contract.features.n_mels}), got {windows.shape}"
            )
        if len(windows) == 0:
            return np.zeros((0, len(self.tags)), dtype=np.float32)
        return self._run(windows)

    def warm_up(self, *, batch_size: int = 1) -> None:
        """Run the network once, so the first real call is fast.

        With ``batch_size`` > 1 it also runs one call of that size: TensorFlow
        and ONNX Runtime keep the memory of the largest batch they have run, so
        a server that warms up with its largest batch holds its peak memory
        from the start instead of growing towards it over hours.
        """
        shape = (self.contract.window_frames, self.contract.features.n_mels)
        self.predict(np.zeros((1, *shape)))
        if batch_size > 1:
            self.predict(np.zeros((batch_size, *shape)))

    def tag_audio(
        self, y: np.ndarray, *, hop_frames: int | None = None, batch_size: int = 32
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tag a whole mono signal at the contract's sample rate.

        Returns
        -------
        (starts, probabilities) : np.ndarray [shape=(w,)] seconds, np.ndarray [shape=(w, n_tags)]
        """
        mel = log_mel(y, spec=self.contract.features)
        return self.tag_mel(mel, hop_frames=hop_frames, batch_size=batch_size)

    def tag_mel(
        self, mel: np.ndarray, *, hop_frames: int | None = None, batch_size: int = 32
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tag every whole window of a log-mel spectrogram (frames, n_mels).

        Returns
        -------
        (starts, probabilities) : np.ndarray [shape=(w,)] seconds, np.ndarray [shape=(w, n_tags)]
        """
        frames = self.contract.window_frames
        starts = window_starts(len(mel), frames, hop_frames)
        probabilities = [
            self.predict(np.stack([mel[s : s + frames] for s in chunk]))
            for chunk in _chunks(starts, batch_size)
        ]
        seconds = starts * self.contract.features.frame_seconds
        if not probabilities:
            return seconds, np.zeros((0, len(self.tags)), dtype=np.float32)
        return seconds, np.concatenate(probabilities)


class Tagger(BaseTagger):
    """A Keras tagging network with its contract, run through one ``tf.function``.

    Parameters
    ----------
    network : keras.Model
        (batch, window_frames, n_mels) -> (batch, n_tags).
    contract : ModelContract
    device : {"auto", "cpu", "gpu"}
    precision : {"float32", "bfloat16"}
        "bfloat16" runs the convolutions and matrix products in bfloat16 on CPUs
        that have bfloat16 instructions (process-wide, see :func:`_select_precision`).
    """

    backend = "tensorflow"

    def __init__(
        self,
        network: Any,
        contract: ModelContract,
        *,
        device: str = "auto",
        precision: str = "float32",
    ) -> None:
        import tensorflow as tf

        super().__init__(contract)
        self.network = network
        self.device = _select_device(device)
        _select_precision(precision)
        self.precision = precision
        self._check_network(tuple(network.inputs[0].shape)[1:], network.outputs[0].shape[-1])
        expected = (contract.window_frames, contract.features.n_mels)
        signature = [tf.TensorSpec((None, *expected), tf.float32)]

        @tf.function(input_signature=signature, reduce_retracing=True)
        def _predict(batch: tf.Tensor) -> tf.Tensor:
            return network(batch, training=False)

        self._predict = _predict

    def _run(self, windows: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        with tf.device(self.device):
            return self._predict(tf.constant(windows)).numpy()


def window_starts(n_frames: int, window_frames: int, hop_frames: int | None = None) -> np.ndarray:
    """First frame of every whole window (musicnn's batching; a partial tail is dropped)."""
    hop = hop_frames if hop_frames else window_frames
    return np.arange(0, max(n_frames - window_frames + 1, 0), hop, dtype=np.int64)


def _chunks(values: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _cache_folder(name: str, cache_dir: Path) -> Path:
    return cache_dir / f"{name}-{CACHE_FORMAT}"


def _convert_to_cache(name: str, folder: Path) -> None:
    """Convert the pretrained ``name`` and write it to ``folder`` atomically.

    Another process converting at the same time may win; its copy is as good.
    """
    network, contract = convert(name)
    save_model_folder(folder, network, contract, replace=False)
    logger.info("converted model=%s cache=%s", name, folder)


def resolve_model_folder(name_or_path: str, *, cache_dir: str | os.PathLike[str]) -> Path:
    """The model folder for a pretrained name (converting it once) or an exported path."""
    if name_or_path in PRETRAINED:
        folder = _cache_folder(name_or_path, Path(os.path.expanduser(cache_dir)))
        if not (folder / MODEL_FILE).is_file():
            _convert_to_cache(name_or_path, folder)
        return folder
    folder = Path(os.path.expanduser(name_or_path))
    if folder.is_file() and folder.name == MODEL_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise ModelLoadError(
            f"model {name_or_path!r} is neither a pretrained name "
            f"({', '.join(PRETRAINED)}) nor a model folder"
        )
    return folder


@overload
def load_tagger(
    name_or_path: str = ...,
    *,
    cache_dir: str | os.PathLike[str] = ...,
    device: str = ...,
    precision: str = ...,
    backend: Literal["tensorflow"] = ...,
) -> Tagger: ...


@overload
def load_tagger(
    name_or_path: str = ...,
    *,
    cache_dir: str | os.PathLike[str] = ...,
    device: str = ...,
    precision: str = ...,
    backend: Literal["onnxruntime"],
) -> OnnxTagger: ...


@overload
def load_tagger(
    name_or_path: str = ...,
    *,
    cache_dir: str | os.PathLike[str] = ...,
    device: str = ...,
    precision: str = ...,
    backend: str,
) -> BaseTagger: ...


def load_tagger(
    name_or_path: str = "MSD_musicnn",
    *,
    cache_dir: str | os.PathLike[str] = "~/.cache/tagstream",
    device: str = "auto",
    precision: str = "float32",
    backend: str = "tensorflow",
) -> BaseTagger:
    """Load a tagger: a pretrained name ("MSD_musicnn", "MSD_vgg") or a model folder path.

    A model folder is any folder :mod:`model.folder` describes: a converted
    pretrained model, an exported model or a training checkpoint.

    Parameters
    ----------
    backend : {"tensorflow", "onnxruntime", "auto"}
        "tensorflow" runs ``model.keras`` (:class:`Tagger`); "onnxruntime" runs
        the folder's ``model.onnx`` (:class:`model.onnx.OnnxTagger`), built from
        ``model.keras`` the first time (that once with TensorFlow); when it is
        up to date, TensorFlow is never imported.  "auto" (``model.backend``'s
        default) is one of them (:func:`resolve_backend`).

    Raises
    ------
    ModelLoadError, ContractError
        The model cannot be had (both :class:`~tagstream.errors.UnavailableError`,
        exit status 3).
    """
    backend = resolve_backend(backend, precision=precision)
    folder = resolve_model_folder(name_or_path, cache_dir=cache_dir)
    contract = ModelContract.load(folder)
    if backend == "onnxruntime":
        from model.onnx import load_onnx_tagger

        return load_onnx_tagger(folder, contract, device=device, precision=precision)
    network = load_network(folder)
    logger.debug("loaded model=%s folder=%s", contract.name, folder)
    return Tagger(network, contract, device=device, precision=precision)
