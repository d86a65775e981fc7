"""Files that installed wheels ship: pretrained models read without importing their packages.

Silero VAD's ONNX file, pyAudioAnalysis's SVM and inaSpeechSegmenter's network are
found through each wheel's file list (:mod:`importlib.metadata`), so ``silero_vad``
(which imports torch), ``pyAudioAnalysis`` (matplotlib, eyed3, pydub) and
``inaSpeechSegmenter`` (TensorFlow 2's own Keras, pyannote) are never imported.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

__all__ = ["installed_files"]


def installed_files(distribution: str) -> dict[str, Path] | None:
    """The files the installed ``distribution`` lists, by file name (the first of a name);
    None when it is not installed.  The callers check that the ones they need exist."""
    try:
        entries = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found: dict[str, Path] = {}
    for entry in entries:
        found.setdefault(entry.name, Path(str(entry.locate())))
    return found
