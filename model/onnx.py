"""The ONNX Runtime backend: ``model.onnx`` built once from ``model.keras``, run without TensorFlow.

>>> tagger = load_tagger("MSD_musicnn", backend="onnxruntime")   # model.load_tagger

:func:`load_onnx_tagger` runs a model folder's ``model.onnx``.  The file is
built from ``model.keras`` the first time the folder is loaded with this
backend (or by ``python -m training export``), with Keras' ONNX export
(``tf2onnx``, opset :data:`ONNX_OPSET`), and written into the folder
atomically (:func:`model.folder.write_file`).  It carries the SHA-256 of the
``model.keras`` it was built from in its metadata (:data:`SOURCE_KEY`): when
``model.keras`` changes the next load rebuilds it.  While the file is up to date
nothing here imports TensorFlow or Keras, so a process on this backend starts
in a fraction of a second and uses a fraction of the memory; a folder holding
only ``model.onnx`` and ``contract.json`` (a device without TensorFlow) loads
too.

The session options were chosen by measurement (``python -m
benchmarks.inference_backends --sweep``; the numbers are in ``docs/EDGE.md``):
all graph optimisations, the memory arena on, sequential execution with
ONNX Runtime's default intra-op thread pool (one thread per core this process
may use) whose idle threads do not spin.  On the CPU a tagger runs at most
:data:`CPU_CALL_WINDOWS` windows per session call: the cost per window is
the same from batch 1 up (within the noise of ``python -m
benchmarks.inference_backends``), while the memory arena keeps what the
largest call needed for the life of the process: a process that ran musicnn
on 16 windows at once holds 675 MiB, on 4 220 MiB, on 2 144 MiB, on 1 107
MiB.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.contract import ModelContract
from model.folder import MODEL_FILE, ONNX_FILE, ModelLoadError, load_network, write_file
from model.tagger import DEVICES, BaseTagger

if TYPE_CHECKING:
    import onnxruntime

    from model.streaming import StreamingMusicnn

__all__ = [
    "CPU_CALL_WINDOWS",
    "INPUT_NAME",
    "ONNX_FORMAT",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "SOURCE_KEY",
    "STREAMING_FILE",
    "OnnxTagger",
    "load_onnx_tagger",
    "load_streaming_step",
    "new_session",
    "session_options",
    "source_key",
    "to_onnx",
]

logger = logging.getLogger(__name__)

#: The ONNX opset written: the highest that TensorRT 8.2 (JetPack 4.6, Jetson TX1) parses.
ONNX_OPSET = 13
#: Bump when the conversion changes, so every cached ``model.onnx`` is rebuilt.
ONNX_FORMAT = "1"
#: Metadata key of ``model.onnx``: ``"<ONNX_FORMAT>:<sha256 of model.keras>"``.
SOURCE_KEY = "tagstream.source"
INPUT_NAME = "mel"
OUTPUT_NAME = "tags"
#: Most windows per session call on the CPU execution provider (a larger batch is split).
CPU_CALL_WINDOWS = 2
#: The streaming musicnn step's ONNX graph, beside ``model.onnx`` (:func:`load_streaming_step`).
STREAMING_FILE = "streaming.onnx"


def source_key(folder: str | os.PathLike[str]) -> str | None:
    """What a current ``model.onnx`` of ``folder`` carries; ``None`` without ``model.keras``."""
    path = Path(folder) / MODEL_FILE
    try:
        with path.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        return None
    return f"{ONNX_FORMAT}:{digest}"


def to_onnx(
    network: Any,
    *,
    window_frames: int | None,
    n_mels: int,
    key: str | None = None,
    opset: int = ONNX_OPSET,
) -> bytes:
    """Convert a Keras tagger to ONNX: ``mel`` (batch, frames, n_mels) -> ``tags`` (batch, n_tags).

    Imports TensorFlow, Keras, ``tf2onnx`` and ``onnx``: this is the one place
    the ONNX path needs them, once per model.

    Parameters
    ----------
    network : keras.Model
    window_frames : int > 0 or None
        ``None`` keeps the time axis free (a network that pools over time).
    n_mels : int > 0
    key : str or None
        Stored as the :data:`SOURCE_KEY` metadata (:func:`source_key`).
    opset : int

    Returns
    -------
    bytes
        The serialised ONNX model, checked by ``onnx.checker``.
    """
    import onnx
    import tensorflow as tf

    signature = [tf.TensorSpec((None, window_frames, n_mels), tf.float32, name=INPUT_NAME)]
    with tempfile.TemporaryDirectory(prefix="tagstream-onnx-") as folder:
        path = Path(folder) / ONNX_FILE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf2onnx's numpy-2 deprecations
            network.export(
                path, format="onnx", verbose=False, input_signature=signature, opset_version=opset
            )
        proto = onnx.load(path)
    graph = proto.graph
    old_output = graph.output[0].name
    for node in graph.node:
        for index, name in enumerate(node.output):
            if name == old_output:
                node.output[index] = OUTPUT_NAME
        for index, name in enumerate(node.input):
            if name == old_output:
                node.input[index] = OUTPUT_NAME
    graph.output[0].name = OUTPUT_NAME
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    if window_frames is None:
        graph.input[0].type.tensor_type.shape.dim[1].dim_param = "frames"
    if key is not None:
        onnx.helper.set_model_props(proto, {SOURCE_KEY: key})
    proto.doc_string = "tagstream tagger: log-mel windows in, tag probabilities out"
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def session_options(*, threads: int = 0) -> onnxruntime.SessionOptions:
    """The session options of every tagger (chosen by measurement, see the module doc).

    Parameters
    ----------
    threads : int >= 0
        Intra-op threads; 0 lets ONNX Runtime use one per core this process may use.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = True
    options.intra_op_num_threads = threads
    # Idle pool threads sleep instead of spinning: the cores are shared with decoding,
    # features and the worker's sockets, and spinning measured no faster here.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return options


def single_thread_session(model: Path | bytes, *, what: str, error: type[Exception]) -> Any:
    """An ONNX Runtime session of ``model`` (a file, or a model's bytes) on one CPU thread.

    The content classifier's small models run this way, in the worker's content thread
    beside the tagger.  Raises ``error``, one line naming ``what`` (e.g. "the speech
    detector"), when ONNX Runtime is not installed or the model does not load.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise error(
            f"{what} needs ONNX Runtime; install it with `pip install onnxruntime` "
            "(scripts/install.sh does)"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(
            source, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own unexported classes
        name = "its model" if isinstance(model, bytes) else str(model)
        raise error(f"{what} cannot load {name}: {exc}") from exc


def _providers(device: str) -> list[str]:
    """Execution providers for ``model.device``, the CPU last."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise ModelLoadError(f"device={device!r} must be one of {', '.join(DEVICES)}")
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "gpu" and not gpu:
        raise ModelLoadError(
            "model.device is 'gpu' but ONNX Runtime has no CUDA execution provider; "
            "install onnxruntime-gpu or set model.device = 'auto'"
        )
    if gpu and device != "cpu":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def new_session(
    model: str | os.PathLike[str] | bytes, *, device: str = "cpu", threads: int = 0
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session over a ``model.onnx`` path or bytes, with :func:`session_options`."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(
            source, sess_options=session_options(threads=threads), providers=_providers(device)
        )
    except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail...) share no other base
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = "model.onnx" if isinstance(model, bytes) else str(model)
        raise ModelLoadError(
            f"{where}: ONNX Runtime cannot load it ({reason}); put the model's model.keras "
            "beside it to have it rebuilt, or export it again (python -m training export)"
        ) from None


class OnnxTagger(BaseTagger):
    """A tagging network in an ONNX Runtime session, with its contract.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        One input (batch, window_frames, n_mels), one output (batch, n_tags).
    contract : ModelContract
    folder : path or None
        The model folder it was loaded from (:func:`load_onnx_tagger`), where
        the worker's streaming mode finds its step (:func:`load_streaming_step`).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        contract: ModelContract,
        *,
        folder: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(contract)
        self.session = session
        self.folder = Path(folder) if folder is not None else None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self._check_network(tuple(inputs[0].shape)[1:], outputs[0].shape[-1])
        self._input = inputs[0].name
        self._output = outputs[0].name
        on_cpu = session.get_providers()[0] == "CPUExecutionProvider"
        self.device = "/CPU:0" if on_cpu else "/GPU:0"
        self.precision = "float32"
        #: Most windows per session call (:data:`CPU_CALL_WINDOWS` on the CPU; GPUs take any).
        self.call_windows: int | None = CPU_CALL_WINDOWS if on_cpu else None

    def warm_up(self, *, batch_size: int = 1) -> None:
        """:meth:`BaseTagger.warm_up`; on the CPU a call of :attr:`call_windows` windows is the
        largest a batch of any size makes, so warming up with it holds the peak memory."""
        super().warm_up(batch_size=min(batch_size, self.call_windows or batch_size))

    def _run(self, windows: np.ndarray) -> np.ndarray:
        step = self.call_windows or len(windows)
        outputs = [
            self.session.run([self._output], {self._input: windows[start : start + step]})[0]
            for start in range(0, len(windows), step)
        ]
        return np.asarray(np.concatenate(outputs), dtype=np.float32)


def load_onnx_tagger(
    folder: str | os.PathLike[str],
    contract: ModelContract,
    *,
    device: str = "auto",
    precision: str = "float32",
) -> OnnxTagger:
    """The :class:`OnnxTagger` of a model folder, building its ``model.onnx`` when missing or stale.

    Raises
    ------
    ModelLoadError
        The folder has neither an ONNX file nor a Keras model, the ONNX file
        does not load, or ``precision`` is not "float32" (exit status 3).
    """
    folder = Path(folder)
    if precision != "float32":
        raise ModelLoadError(
            f"model.precision = {precision!r} is a TensorFlow option; the onnxruntime backend "
            "runs float32: set model.precision = 'float32' or model.backend = 'tensorflow'"
        )
    path = folder / ONNX_FILE
    key = source_key(folder)
    if path.is_file():
        try:
            session = new_session(path, device=device)
        except ModelLoadError:
            if key is None:  # nothing to rebuild it from
                raise
            logger.warning("rebuilding model=%s onnx=%s: it does not load", contract.name, path)
        else:
            built_from = session.get_modelmeta().custom_metadata_map.get(SOURCE_KEY)
            if key is None or built_from == key:
                logger.debug("loaded model=%s onnx=%s", contract.name, path)
                return OnnxTagger(session, contract, folder=folder)
            logger.info("rebuilding model=%s onnx=%s: model.keras changed", contract.name, path)
    elif key is None:
        raise ModelLoadError(
            f"{folder}: neither {MODEL_FILE} nor {ONNX_FILE}; is it a model folder?"
        )
    content = to_onnx(
        load_network(folder),
        window_frames=contract.window_frames,
        n_mels=contract.features.n_mels,
        key=key,
    )
    try:
        write_file(folder, ONNX_FILE, content)
        logger.info("built model=%s onnx=%s", contract.name, path)
    except OSError as exc:
        logger.warning(
            "cannot write %s (%s): it is rebuilt at every start; make the folder writable",
            path,
            exc.strerror or exc,
        )
    return OnnxTagger(new_session(content, device=device), contract, folder=folder)


def load_streaming_step(
    folder: str | os.PathLike[str], contract: ModelContract, *, device: str = "auto"
) -> StreamingMusicnn:
    """The streaming musicnn of a model folder on ONNX Runtime, building ``streaming.onnx`` once.

    Like ``model.onnx`` (:func:`load_onnx_tagger`): built from ``model.keras``
    (:meth:`model.streaming.StreamingMusicnn.to_onnx`, TensorFlow needed that
    once), written atomically beside it with the same :data:`SOURCE_KEY`, and
    rebuilt when ``model.keras`` changes; while it is up to date nothing here
    imports TensorFlow.

    Raises
    ------
    ModelLoadError
        Neither a loadable ``streaming.onnx`` nor ``model.keras`` (exit status 3).
    ValueError
        The network is not a musicnn (only musicnn streams).
    """
    from model.streaming import StreamingMusicnn

    folder = Path(folder)
    path = folder / STREAMING_FILE
    key = source_key(folder)
    if path.is_file():
        try:
            session = new_session(path, device=device)
        except ModelLoadError:
            if key is None:
                raise
            logger.warning("rebuilding model=%s step=%s: it does not load", contract.name, path)
        else:
            built_from = session.get_modelmeta().custom_metadata_map.get(SOURCE_KEY)
            if key is None or built_from == key:
                return StreamingMusicnn.from_onnx(session)
            logger.info("rebuilding model=%s step=%s: model.keras changed", contract.name, path)
    elif key is None:
        raise ModelLoadError(
            f"{folder}: neither {MODEL_FILE} nor {STREAMING_FILE}: streaming mode needs one"
        )
    streaming = StreamingMusicnn(load_network(folder), window_frames=contract.window_frames)
    content = streaming.to_onnx(opset=ONNX_OPSET, metadata={SOURCE_KEY: key} if key else None)
    try:
        write_file(folder, STREAMING_FILE, content)
        logger.info("built model=%s step=%s", contract.name, path)
    except OSError as exc:
        logger.warning(
            "cannot write %s (%s): it is rebuilt at every start; make the folder writable",
            path,
            exc.strerror or exc,
        )
    return StreamingMusicnn.from_onnx(new_session(content, device=device))
