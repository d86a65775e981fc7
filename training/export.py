"""Export a checkpoint as a model folder: ``model.keras`` + ``contract.json`` + ``model.onnx``.

A checkpoint already is a model folder (:mod:`training.checkpoint`); export
copies its contract (renamed if asked), saves the network without the
optimizer state and without ``state.json``, and adds the other formats.  The
folder is what :func:`model.load_tagger`, the streaming worker and
``python -m tools.tag --model DIR`` load, written by the one atomic writer
(:func:`model.folder.write_folder`).

``model.onnx`` (:func:`model.onnx.to_onnx`) is what ``model.backend =
"onnxruntime"`` runs and what edge runtimes take (TensorRT on a Jetson,
``docs/EDGE.md``); it carries the hash of the ``model.keras`` written beside it,
so loading it never rebuilds it.

``model.tflite`` is deprecated and written only when asked (``tflite=True``,
``python -m training export --tflite``): TFLite
is dropped in favour of ONNX (``docs/EDGE.md``).  ``tf.lite.Interpreter`` is
deprecated in favour of LiteRT (``ai-edge-litert``), whose interpreter lacks
the TensorFlow ops a GRU needs here (``crnn`` converts only with
``SELECT_TF_OPS``), and the edge runtimes this project targets (TensorRT,
ONNX Runtime) take ONNX.  It is converted from a concrete function with a
dynamic batch axis; outputs agree with the Keras model within
:data:`TFLITE_ATOL`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from model.folder import ONNX_FILE, TFLITE_FILE, save_model_folder
from model.onnx import source_key, to_onnx
from training.checkpoint import find_checkpoint, load_checkpoint

__all__ = [
    "ONNX_FILE",
    "TFLITE_ATOL",
    "TFLITE_FILE",
    "TFLiteTagger",
    "export_checkpoint",
    "to_tflite",
]

logger = logging.getLogger(__name__)

#: Largest absolute difference between TFLite and Keras probabilities the tests accept.
TFLITE_ATOL = 1e-4


def to_tflite(network: Any, *, window_frames: int, n_mels: int) -> bytes:
    """Convert a Keras tagger to a TFLite flatbuffer (float32, batch axis dynamic).

    Goes through a SavedModel (Keras' ``export``) so the weights are frozen into
    constants; converting the Keras model's concrete function directly keeps
    them as resource variables, which the TFLite interpreter reads as NaN.
    """
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="tagstream-export-") as folder:
        network.export(
            folder,
            format="tf_saved_model",
            verbose=False,
            input_signature=[tf.TensorSpec((None, window_frames, n_mels), tf.float32)],
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        # GRUs and a few other ops fall back to TensorFlow kernels when TFLite has none.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,
        ]
        return bytes(converter.convert())


class TFLiteTagger:
    """Run an exported ``model.tflite``: ``predict(windows (n, frames, mels)) -> (n, tags)``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tensorflow as tf

        self.interpreter = tf.lite.Interpreter(model_path=str(path))
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]

    def predict(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        self.interpreter.resize_tensor_input(self._input, windows.shape)
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self._input, windows)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output))


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    tflite: bool = False,
    onnx: bool = True,
) -> Path:
    """Write the model folder of a checkpoint (or of a run folder's best checkpoint).

    Parameters
    ----------
    checkpoint : path-like
        A checkpoint folder, its ``model.keras``, or a run folder.
    out_dir : path-like
        The model folder to write (replaced atomically if it exists).
    name : str or None
        Model name in the contract; default: the checkpoint's (the run folder's name).
    tflite : bool
        Also write ``model.tflite`` (deprecated: ONNX replaces it, see the module doc).
    onnx : bool
        Also write ``model.onnx`` (keyed by the hash of the ``model.keras``
        written with it, so ``model.backend = "onnxruntime"`` loads it as is).

    Returns
    -------
    Path
        ``out_dir``.
    """
    folder = find_checkpoint(checkpoint)
    network, contract, _state = load_checkpoint(folder, compile=False)
    if name:
        contract = contract.replace(name=name)
    files: dict[str, bytes | str] = {}
    if tflite:
        files[TFLITE_FILE] = to_tflite(
            network, window_frames=contract.window_frames, n_mels=contract.features.n_mels
        )

    def add_onnx(staging: Path) -> None:
        (staging / ONNX_FILE).write_bytes(
            to_onnx(
                network,
                window_frames=contract.window_frames,
                n_mels=contract.features.n_mels,
                key=source_key(staging),
            )
        )

    out = Path(out_dir)
    save_model_folder(out, network, contract, files=files, derive=add_onnx if onnx else None)
    logger.info("exported checkpoint=%s model=%s folder=%s", folder, contract.name, out)
    return out
