"""inaSpeechSegmenter's broadcast speech/music CNN, without inaSpeechSegmenter or TensorFlow.

>>> cnn = load_speech_music_cnn()
>>> cnn.speech_probability(samples)  # 3 s, 16 kHz mono float32
0.02

The ``inaSpeechSegmenter`` wheel 0.6.8 on PyPI (**MIT**, © 2018 Ina, David
Doukhan) ships ``keras_speech_music_cnn.hdf5``: the convolutional network of its
``'sm'`` engine, trained by INA (the French national audiovisual institute) on
radio and television broadcasts to tell speech from music, songs and raps
included, over 0.68 s patches of a 21-band log mel spectrogram (Doukhan et al.,
ICASSP 2017; the engine of its MIREX 2018 music and speech detection entry).
Later releases fetch their models from GitHub at first use; this one carries
them, so nothing is downloaded at run time.

Only the model file is used:

- **The features are computed here**, equal to the library's own
  (``sidekit_mfcc.mfcc``'s log mel spectrum: pre-emphasis 0.97, 25 ms Hann frames
  every 10 ms, a 512-point power spectrum, 24 triangular HTK-mel filters from 100
  Hz to 8 kHz, of which the network reads the first 21), to float32 rounding
  (``tests/test_inaspeech.py`` runs both).  Each patch of 68 frames is scaled to
  zero mean and unit variance, as ``segmenter._get_patches`` does.
- **The network runs through ONNX Runtime.**  Its Keras-2 HDF5 file is read with
  h5py and turned into an ONNX graph (batch normalisation folded into the
  convolutions and dense layers before it), checked against Keras's own reading
  of the file in the tests.  The graph is built once, with the ``onnx`` package,
  and kept in the model cache (``model.cache_dir``, keyed by the file's SHA-256),
  so that later starts, like the tagger's ONNX Runtime backend, need only
  onnxruntime.

A window's p(speech) is the mean of the network's speech probability over patches
every :data:`PATCH_STEP_FRAMES` frames.  :mod:`model.content` adds its log-odds to
its own (``docs/CONTENT.md``).

Install it with ``pip install --no-deps inaSpeechSegmenter==0.6.8``
(``scripts/install.sh`` does): its requirements (TensorFlow 2 with its own Keras,
pyannote.algorithms, scikit-image, ...) are not needed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from model.wheels import installed_files
from tagstream.errors import UnavailableError

__all__ = [
    "GRAPH_FORMAT",
    "PATCH_FRAMES",
    "PATCH_STEP_FRAMES",
    "CnnError",
    "SpeechMusicCnn",
    "load_speech_music_cnn",
    "log_mel_spectrum",
    "onnx_graph",
    "patches",
]

logger = logging.getLogger(__name__)

_DISTRIBUTION = "inaSpeechSegmenter"
_VERSION = "0.6.8"
_MODEL = "keras_speech_music_cnn.hdf5"
SAMPLE_RATE = 16000
#: The network's patch: 68 frames of 10 ms (0.68 s) by the spectrum's first 21 bands.
PATCH_FRAMES = 68
_PATCH_BANDS = 21
#: A window's p(speech) is the mean over patches this many frames apart (0.16 s: 15
#: patches in a 3 s window; the library takes one every 2 frames, for its frame labels).
PATCH_STEP_FRAMES = 16
_FRAME = 400  # 25 ms
_SHIFT = 160  # 10 ms
_N_FFT = 512
_PRE_EMPHASIS = 0.97
_N_FILTERS = 24
_LOW_HZ, _HIGH_HZ = 100.0, 8000.0
#: Part of the cached graph's name: raise it when :func:`onnx_graph` changes what it builds.
GRAPH_FORMAT = 1
DEFAULT_CACHE_DIR = "~/.cache/tagstream"  # model.cache_dir's default


class CnnError(UnavailableError):
    """The speech/music network cannot be loaded (an unavailable part, exit status 3)."""


def _install_hint() -> str:
    return (
        f"install it with `pip install --no-deps {_DISTRIBUTION}=={_VERSION}` "
        "(scripts/install.sh does)"
    )


def _model_file() -> Path:
    """The network's HDF5 file inside the installed inaSpeechSegmenter wheel."""
    files = installed_files(_DISTRIBUTION)
    if files is None:
        raise CnnError(
            f"the speech/music network needs inaSpeechSegmenter {_VERSION}; {_install_hint()}"
        )
    path = files.get(_MODEL)
    if path is not None and path.is_file():
        return path
    raise CnnError(
        f"the installed inaSpeechSegmenter has no {_MODEL} (releases after 0.6.8 download "
        f"their models); reinstall it with `pip install --no-deps --force-reinstall "
        f"{_DISTRIBUTION}=={_VERSION}`"
    )


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.cache
def _filter_bank() -> np.ndarray:
    """SIDEKIT's ``trfbank`` for 24 HTK-mel filters, 100 Hz to 8 kHz, 512 points: (24, 257).

    Each triangle has area-normalising height 2 / (upper - lower edge) and covers the
    bins strictly above its lower edge up to its centre, then up to (not including)
    the last bin below its upper edge, as the library's index ranges do.
    """
    mels = np.linspace(_hz_to_mel(np.array(_LOW_HZ)), _hz_to_mel(np.array(_HIGH_HZ)), 26)
    # The library steps by (max - low) / (n + 1) from low, which is linspace's grid.
    edges = _mel_to_hz(mels)
    heights = 2.0 / (edges[2:] - edges[:-2])
    bins = np.arange(_N_FFT) / _N_FFT * SAMPLE_RATE
    bank = np.zeros((_N_FILTERS, _N_FFT // 2 + 1), dtype=np.float32)
    for i in range(_N_FILTERS):
        low, centre, high = edges[i], edges[i + 1], edges[i + 2]
        left = np.arange(
            np.floor(low * _N_FFT / SAMPLE_RATE) + 1, np.floor(centre * _N_FFT / SAMPLE_RATE) + 1
        ).astype(int)
        right = np.arange(
            np.floor(centre * _N_FFT / SAMPLE_RATE) + 1,
            min(np.floor(high * _N_FFT / SAMPLE_RATE) + 1, _N_FFT),
        ).astype(int)
        bank[i, left] = heights[i] / (centre - low) * (bins[left] - low)
        bank[i, right[:-1]] = heights[i] / (high - centre) * (high - bins[right[:-1]])
    return bank


def log_mel_spectrum(samples: np.ndarray) -> np.ndarray:
    """SIDEKIT's log mel spectrum as inaSpeechSegmenter computes it: (frames, 24), float32.

    Frames of 25 ms every 10 ms (only whole ones), each pre-emphasised on its own
    (its first sample repeated before it), Hann-windowed, a 512-point power spectrum
    through :func:`_filter_bank`, natural log (``-inf`` for a frame of zeros, as there).
    """
    x = np.asarray(samples, dtype=np.float32)
    count = (len(x) - _FRAME) // _SHIFT + 1
    if count <= 0:
        return np.zeros((0, _N_FILTERS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, _FRAME)[::_SHIFT][:count]
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    emphasised = frames - previous * np.float32(_PRE_EMPHASIS)
    spectrum = np.fft.rfft(emphasised * np.hanning(_FRAME), _N_FFT, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    with np.errstate(divide="ignore"):
        return np.log(power @ _filter_bank().T)


def patches(spectrum: np.ndarray, step: int = PATCH_STEP_FRAMES) -> np.ndarray:
    """The network's inputs: (P, 68, 21) patches ``step`` frames apart, each standardised.

    Patches with a non-finite value (digital silence) are left out.
    """
    return _patches(spectrum, step)[0]


def _patches(spectrum: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`patches` and the seconds from the samples' start to each one's middle."""
    bands = spectrum[:, :_PATCH_BANDS]
    if len(bands) < PATCH_FRAMES:
        return np.zeros((0, PATCH_FRAMES, _PATCH_BANDS), dtype=np.float32), np.zeros(0)
    views = np.lib.stride_tricks.sliding_window_view(bands, (PATCH_FRAMES, _PATCH_BANDS))
    data = views[::step, 0].reshape(-1, PATCH_FRAMES * _PATCH_BANDS).astype(np.float64)
    # Patch j spans frames j*step .. j*step + 67; frame i spans samples i*shift .. + frame.
    first = np.arange(len(data)) * step * _SHIFT
    middles = (first + ((PATCH_FRAMES - 1) * _SHIFT + _FRAME) / 2) / SAMPLE_RATE
    finite = np.all(np.isfinite(data), axis=1)
    data, middles = data[finite], middles[finite]
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant patch has no spread
        data = (data - data.mean(axis=1, keepdims=True)) / data.std(axis=1, keepdims=True)
    keep = np.all(np.isfinite(data), axis=1)
    return data[keep].reshape(-1, PATCH_FRAMES, _PATCH_BANDS).astype(np.float32), middles[keep]


def onnx_graph(path: Path) -> Any:
    """The Keras-2 Sequential network in ``path`` as an ONNX model (``onnx.ModelProto``).

    Conv2D and Dense layers carry the BatchNormalization after them folded into their
    weights; Dropout is left out (inference); Keras's channels-last order is kept by a
    transpose before Flatten.  Raises :class:`CnnError` for a layer it does not know.
    """
    import h5py
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    weights: list[Any] = []
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        stored = f["model_weights"]

        def arrays(name: str) -> dict[str, np.ndarray]:
            group = stored[name]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            return {n.split("/")[-1].split(":")[0]: np.array(group[n]) for n in names}

        current, width, i = "patches", 0, 0
        weights.append(numpy_helper.from_array(np.array([-1, 1, 68, 21], np.int64), "shape"))

        def add(op: str, inputs: list[str], **attributes: Any) -> None:
            nonlocal current
            output = f"t{len(nodes)}"
            nodes.append(helper.make_node(op, inputs, [output], **attributes))
            current = output

        while i < len(layers):
            kind, settings = layers[i]["class_name"], layers[i]["config"]
            name = settings["name"]
            if kind == "Reshape":
                add("Reshape", [current, "shape"])
            elif kind in ("Conv2D", "Dense"):
                found = arrays(name)
                kernel, bias = found["kernel"].astype(np.float64), found["bias"].astype(np.float64)
                following = layers[i + 1] if i + 1 < len(layers) else None
                if following is not None and following["class_name"] == "BatchNormalization":
                    norm = arrays(following["config"]["name"])
                    scale = norm["gamma"] / np.sqrt(
                        norm["moving_variance"] + following["config"]["epsilon"]
                    )
                    kernel = kernel * scale
                    bias = (bias - norm["moving_mean"]) * scale + norm["beta"]
                    i += 1
                width = kernel.shape[-1]
                if kind == "Conv2D":
                    kernel = np.transpose(kernel, (3, 2, 0, 1))  # HWIO -> OIHW
                weights.append(numpy_helper.from_array(kernel.astype(np.float32), f"{name}_w"))
                weights.append(numpy_helper.from_array(bias.astype(np.float32), f"{name}_b"))
                if kind == "Conv2D":
                    add(
                        "Conv",
                        [current, f"{name}_w", f"{name}_b"],
                        kernel_shape=list(kernel.shape[2:]),
                        strides=settings["strides"],
                    )
                else:
                    add("Gemm", [current, f"{name}_w", f"{name}_b"])
                activation = settings.get("activation", "linear")
                if activation == "softmax":
                    add("Softmax", [current], axis=1)
                elif activation == "relu":
                    add("Relu", [current])
                elif activation != "linear":
                    raise CnnError(f"{path}: activation {activation!r} of {name} is not known here")
            elif kind == "Activation" and settings["activation"] in ("relu", "softmax"):
                if settings["activation"] == "relu":
                    add("Relu", [current])
                else:
                    add("Softmax", [current], axis=1)
            elif kind == "MaxPooling2D":
                add(
                    "MaxPool",
                    [current],
                    kernel_shape=settings["pool_size"],
                    strides=settings["strides"],
                    auto_pad="SAME_UPPER" if settings["padding"] == "same" else "VALID",
                )
            elif kind == "Flatten":
                add("Transpose", [current], perm=[0, 2, 3, 1])  # NCHW -> NHWC, Keras's order
                add("Flatten", [current], axis=1)
            elif kind != "Dropout":
                raise CnnError(f"{path}: layer {kind} ({name}) is not known here")
            i += 1
    graph = helper.make_graph(
        nodes,
        "ina_speech_music",
        [helper.make_tensor_value_info("patches", TensorProto.FLOAT, [None, 68, 21])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [None, width])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def cached_graph(path: Path, cache_dir: Path | None, *, rebuild: bool = False) -> bytes:
    """The ONNX graph of the network in ``path``: from ``cache_dir`` when it was built
    before (and not ``rebuild``), else built by :func:`onnx_graph` and kept there.

    Named by the file's SHA-256 and :data:`GRAPH_FORMAT`; written atomically, so two
    workers starting at once leave one whole copy.  A cache that cannot be written is
    logged and only costs the build (about a second) at each start.
    """
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise CnnError(f"cannot read the speech/music network {path}: {exc}") from None
    name = f"inaspeech-sm-{digest}-v{GRAPH_FORMAT}.onnx"
    if cache_dir is not None and not rebuild and (cache_dir / name).is_file():
        return (cache_dir / name).read_bytes()
    try:
        graph = bytes(onnx_graph(path).SerializeToString())
    except CnnError:
        raise
    except ImportError as exc:
        raise CnnError(
            f"building the speech/music network's graph needs the onnx package ({exc}); "
            "install it with `pip install onnx` (scripts/install.sh does)"
        ) from None
    except Exception as exc:  # h5py, json and the ONNX checker raise their own
        raise CnnError(f"cannot read the speech/music network {path}: {exc}") from exc
    if cache_dir is not None:
        from model.folder import write_file

        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            write_file(cache_dir, name, graph)
        except OSError as exc:
            logger.warning(
                "cannot keep the speech/music network's graph in %s (%s); it is built "
                "again at each start",
                cache_dir,
                exc,
            )
    return graph


class SpeechMusicCnn:
    """The ``'sm'`` network through ONNX Runtime on one CPU thread.

    Outputs (speech, music) per patch, in that order (``SpeechMusic.outlabels``).

    Parameters
    ----------
    path : Path, optional
        The HDF5 file (default: the installed wheel's).
    cache_dir : str or Path or None
        Where the built graph is kept (``model.cache_dir``); None builds it every time.
    """

    def __init__(
        self, path: Path | None = None, *, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        from model.onnx import single_thread_session

        self.path = path or _model_file()
        folder = None if cache_dir is None else Path(os.path.expanduser(cache_dir))
        graph = cached_graph(self.path, folder)
        try:
            self._session = single_thread_session(
                graph, what="the speech/music network", error=CnnError
            )
        except CnnError as exc:
            if folder is None:
                raise
            logger.warning("%s; building its graph again", exc)
            graph = cached_graph(self.path, folder, rebuild=True)
            self._session = single_thread_session(
                graph, what="the speech/music network", error=CnnError
            )
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()

    def patch_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(speech, music) probabilities of each patch of :func:`patches`: (P, 2)."""
        if len(batch) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        with self._lock:
            (out,) = self._session.run(None, {self._input: np.ascontiguousarray(batch)})
        return np.asarray(out, dtype=np.float32)

    def speech_probability(self, samples: np.ndarray) -> float:
        """Mean p(speech) over the window's patches; 0.5 when it has none (under 0.68 s,
        or digital silence)."""
        return self.speech_over_time(samples)[0]

    def speech_over_time(self, samples: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """:meth:`speech_probability`, and each patch's middle (seconds from the samples'
        start) with its p(speech): where in the window speech begins or ends."""
        batch, middles = _patches(log_mel_spectrum(samples), PATCH_STEP_FRAMES)
        speech = self.patch_probabilities(batch)[:, 0].astype(np.float64)
        return (float(speech.mean()) if len(speech) else 0.5), middles, speech


def load_speech_music_cnn(
    path: Path | None = None, *, cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR
) -> SpeechMusicCnn:
    """The ``'sm'`` network of the installed inaSpeechSegmenter 0.6.8 wheel, its graph
    kept in ``cache_dir`` (:func:`cached_graph`).

    Raises
    ------
    CnnError
        ONNX Runtime or the wheel is not installed, or its file is unreadable.
    """
    return SpeechMusicCnn(path, cache_dir=cache_dir)
