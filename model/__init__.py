"""Model architectures, the model contract and weight loading.

The public entry point is :func:`load_tagger`; the feature extractor every
process shares is :mod:`model.features`.  Importing this package is cheap:
TensorFlow and Keras load only when a tagger is (``model.tagger``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN) is noise for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from model.contract import MSD_TAGS, ContractError, ModelContract
from model.features import MUSICNN_FEATURES, FeatureSpec, MelExtractor, log_mel

if TYPE_CHECKING:
    from model.tagger import ModelLoadError, Tagger, load_tagger

__all__ = [
    "MSD_TAGS",
    "MUSICNN_FEATURES",
    "ContractError",
    "FeatureSpec",
    "MelExtractor",
    "ModelContract",
    "ModelLoadError",
    "Tagger",
    "load_tagger",
    "log_mel",
]

_LAZY = {"ModelLoadError", "Tagger", "load_tagger"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from model import tagger

        return getattr(tagger, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
