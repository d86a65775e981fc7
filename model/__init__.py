"""The model and its input: architectures, the model contract, model folders, taggers.

The public entry point is :func:`load_tagger` (``backend="tensorflow"`` or
``"onnxruntime"``, :mod:`model.onnx`; both give a :class:`BaseTagger`); the
feature extractor every process shares is :mod:`model.features`; the one
architecture registry is :mod:`model.architectures`; the one model-folder
writer is :mod:`model.folder`.  Beside the tagger: the content classifier
(:mod:`model.content`: music, speech or silence per window, and where its sound
changes) and where a change of item lies between overlapping windows
(:mod:`model.placement`, which the worker's ``content_change`` and the as-run
log share).
Importing this package is cheap: TensorFlow and Keras load only when a network
is built, converted or loaded with the TensorFlow backend.
"""

from __future__ import annotations

import os

# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN) is noise for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from model.contract import MSD_TAGS, ContractError, ModelContract
from model.features import MUSICNN_FEATURES, FeatureSpec, MelExtractor, log_mel
from model.folder import ModelLoadError
from model.tagger import BACKENDS, BaseTagger, Tagger, load_tagger

__all__ = [
    "BACKENDS",
    "MSD_TAGS",
    "MUSICNN_FEATURES",
    "BaseTagger",
    "ContractError",
    "FeatureSpec",
    "MelExtractor",
    "ModelContract",
    "ModelLoadError",
    "Tagger",
    "load_tagger",
    "log_mel",
]
