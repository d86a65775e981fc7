"""Convert the TensorFlow-1 checkpoints of the ``musicnn`` 0.1.0 wheel to Keras 3.

The wheel (ISC licence; install with ``pip install --no-deps musicnn==0.1.0``)
ships ``MSD_musicnn`` and ``MSD_vgg`` as checkpoint folders whose files have no
name (``.index``, ``.data-00000-of-00001``, ``.meta``) and whose ``checkpoint``
file points to the author's home, so ``tf.train.load_checkpoint`` fails on
them; ``tf.compat.v1.train.NewCheckpointReader(folder + "/")`` reads them.
The checkpoints also hold Adam slots, which are skipped.  The networks are
those of the one registry (:data:`model.architectures.ARCHITECTURES`); the
converted model is written as a model folder by :mod:`model.tagger` through
:func:`model.folder.save_model_folder`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.architectures import ARCHITECTURES
from model.contract import MSD_TAGS, ModelContract
from tagstream.errors import UnavailableError

if TYPE_CHECKING:
    import keras

__all__ = ["PRETRAINED", "ConversionError", "checkpoint_dir", "convert", "read_checkpoint"]

#: Pretrained models this module converts: name -> architecture (a registry key).
PRETRAINED: dict[str, str] = {"MSD_musicnn": "musicnn", "MSD_vgg": "vgg"}
SOURCE = "musicnn 0.1.0 wheel (Pons & Serra, ISC licence)"
_MISSING = "install it with: .venv/bin/pip install --no-deps musicnn==0.1.0"


class ConversionError(UnavailableError, RuntimeError):
    """The musicnn wheel is missing or its checkpoint does not fit the Keras network."""


def checkpoint_dir(name: str) -> Path:
    """Folder of the pretrained checkpoint ``name`` inside the installed musicnn wheel."""
    if name not in PRETRAINED:
        raise ConversionError(
            f"unknown pretrained model {name!r}; choose one of {list(PRETRAINED)}"
        )
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(f"the musicnn package is not installed; {_MISSING}")
    folder = Path(next(iter(spec.submodule_search_locations))) / name
    if not (folder / ".index").is_file():
        raise ConversionError(f"{folder}: no checkpoint found; reinstall it: {_MISSING}")
    return folder


def read_checkpoint(name: str) -> dict[str, np.ndarray]:
    """Model variables of a pretrained checkpoint, without optimizer slots."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(str(checkpoint_dir(name)) + "/")
    values = {}
    for key in reader.get_variable_to_shape_map():
        if "Adam" in key or key.startswith(("beta1_power", "beta2_power")):
            continue
        values[key] = reader.get_tensor(key)
    return values


def _interleaved_to_blocks(values: np.ndarray) -> np.ndarray:
    """Reorder axis 0 from [max0, mean0, max1, mean1, ...] to [max..., mean...].

    The TF-1 back end stacked max and mean pools on a last axis before
    flattening; the Keras model concatenates them instead.
    """
    return np.concatenate([values[0::2], values[1::2]], axis=0)


def _layer_weights(
    layer_name: str, kind: str, checkpoint: dict[str, np.ndarray], targets: list[tuple[int, ...]]
) -> list[np.ndarray]:
    if kind == "BatchNormalization":
        keys = ["gamma", "beta", "moving_mean", "moving_variance"]
    else:
        keys = ["kernel", "bias"]
    weights = []
    for key, shape in zip(keys, targets, strict=True):
        full = f"{layer_name}/{key}"
        if full not in checkpoint:
            raise ConversionError(f"checkpoint has no variable {full}")
        value = checkpoint.pop(full)
        if value.shape != shape:
            value = value.reshape(shape)  # Conv2D (7, F, 1, C) -> Conv1D (7, F, C)
        weights.append(value.astype(np.float32))
    return weights


def convert(name: str) -> tuple[keras.Model, ModelContract]:
    """Build the Keras network of ``name`` and copy the checkpoint's weights into it.

    Returns
    -------
    (keras.Model, ModelContract)

    Raises
    ------
    ConversionError
        When a variable is missing, unused or of another size.
    """
    if name not in PRETRAINED:
        raise ConversionError(
            f"unknown pretrained model {name!r}; choose one of {list(PRETRAINED)}"
        )
    architecture = PRETRAINED[name]
    checkpoint = read_checkpoint(name)
    network = ARCHITECTURES[architecture](name=name)
    for layer in network.layers:
        if not layer.weights:
            continue
        targets = [tuple(w.shape) for w in layer.weights]
        kind = type(layer).__name__
        weights = _layer_weights(layer.name, kind, checkpoint, targets)
        if architecture == "musicnn" and layer.name in ("batch_normalization_9", "dense"):
            weights[0] = _interleaved_to_blocks(weights[0])
            if kind == "BatchNormalization":
                weights[1:] = [_interleaved_to_blocks(w) for w in weights[1:]]
        layer.set_weights(weights)
    if checkpoint:
        raise ConversionError(f"checkpoint variables left unused: {sorted(checkpoint)}")
    contract = ModelContract(name=name, architecture=architecture, tags=MSD_TAGS, source=SOURCE)
    return network, contract
