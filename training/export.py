"""Export a checkpoint as a model folder: ``model.keras`` + ``contract.json`` + ``model.tflite``.

The folder is what :func:`model.load_tagger`, the streaming worker and
``python -m tools.tag --model DIR`` load.  The Keras file is saved without
optimizer state and uses built-in layers only.  ``model.tflite`` is converted
from a concrete function with a dynamic batch axis; outputs agree with the
Keras model within :data:`TFLITE_ATOL`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from model.contract import MODEL_FILE, ModelContract
from model.features import FeatureSpec
from training.train import find_checkpoint, load_checkpoint

__all__ = ["TFLITE_ATOL", "TFLITE_FILE", "TFLiteTagger", "export_checkpoint", "to_tflite"]

logger = logging.getLogger(__name__)

TFLITE_FILE = "model.tflite"
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
    tflite: bool = True,
) -> Path:
    """Write the model folder of a checkpoint (or of a run folder's best checkpoint).

    Parameters
    ----------
    checkpoint : path-like
        A checkpoint folder, its ``model.keras``, or a run folder.
    out_dir : path-like
        The model folder to write (replaced if it exists).
    name : str or None
        Model name in the contract; default: the run folder's name.
    tflite : bool
        Also write ``model.tflite``.

    Returns
    -------
    Path
        ``out_dir``.
    """
    folder = find_checkpoint(checkpoint)
    network, state = load_checkpoint(folder, compile=False)
    features = FeatureSpec(**state["features"])
    run_name = folder.parent.parent.name if folder.parent.name == "checkpoints" else folder.name
    contract = ModelContract(
        name=name or run_name,
        architecture=str(state["architecture"]),
        tags=tuple(state["tags"]),
        features=features,
        window_frames=int(state["window_frames"]),
        source=f"tagstream training, checkpoint {folder.resolve()}",
        extra={
            "epoch": state.get("epoch"),
            "monitor": state.get("monitor"),
            "best": state.get("best"),
            "teacher": state.get("teacher", ""),
            "init": state["config"]["model"].get("init", ""),
        },
    )
    out = Path(out_dir)
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    network.save(staging / MODEL_FILE)
    contract.save(staging)
    if tflite:
        blob = to_tflite(network, window_frames=contract.window_frames, n_mels=features.n_mels)
        (staging / TFLITE_FILE).write_bytes(blob)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    logger.info("exported checkpoint=%s model=%s folder=%s", folder, contract.name, out)
    return out
