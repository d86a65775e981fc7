"""THE model folder: its file names, its one atomic writer and its network loader.

A model folder is what every process loads (:func:`model.load_tagger`)::

    model.keras      the Keras network (built-in layers only)
    contract.json    its :class:`~model.contract.ModelContract`
    model.onnx       optional: the same network for ONNX Runtime, built once from
                     model.keras and keyed by its hash (:mod:`model.onnx`)
    model.tflite     optional: the same network for TFLite (``training export``)
    state.json       a training checkpoint's training state (``training/checkpoint.py``)

Three things write one: the conversion of a pretrained model into the cache
(:mod:`model.tagger`), training checkpoints and ``training export``.  All go
through :func:`write_folder`, which never leaves a half-written folder behind
and never has a moment in which neither the old nor the new folder is on disk:

1. the files are written into a temporary sibling ``.<name>.tmp-XXXX`` and
   flushed to disk (``fsync``);
2. an existing folder is renamed aside to ``.<name>.old``;
3. the new folder is renamed into place and the parent folder flushed;
4. the old one is removed.

A process killed during 1 leaves the old folder as it was (and a stale
temporary folder, which the next replacing write removes).  Killed between 2
and 3, the old folder waits complete at ``.<name>.old``; the next write puts
it back first (:func:`recover`).

One file is added to a folder that is already in place: ``model.onnx``, built
the first time a model is loaded with the ONNX Runtime backend.  It goes
through :func:`write_file` (temporary file, ``fsync``, rename over), so a
reader sees the old file, the new file or none, never half of one.

Nothing here imports TensorFlow until a network is saved or loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tagstream.errors import UnavailableError

if TYPE_CHECKING:
    import keras

    from model.contract import ModelContract

__all__ = [
    "CONTRACT_FILE",
    "MODEL_FILE",
    "ONNX_FILE",
    "TFLITE_FILE",
    "ModelLoadError",
    "load_network",
    "recover",
    "save_model_folder",
    "write_file",
    "write_folder",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CONTRACT_FILE = "contract.json"
ONNX_FILE = "model.onnx"
TFLITE_FILE = "model.tflite"


class ModelLoadError(UnavailableError, RuntimeError):
    """The model could not be found, converted or loaded; the message says what to do."""


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush every file below ``folder``, then the folders themselves."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def recover(target: str | os.PathLike[str]) -> bool:
    """Put back an old folder left aside by a write that was killed mid-swap.

    Returns
    -------
    bool
        Whether ``target`` was missing and its ``.<name>.old`` was put back.
    """
    target = Path(target)
    aside = _aside(target)
    if target.exists() or not aside.is_dir():
        return False
    os.rename(aside, target)
    logger.warning("recovered folder=%s from an interrupted write", target)
    return True


def write_folder(
    target: str | os.PathLike[str],
    fill: Callable[[Path], None],
    *,
    replace: bool = True,
) -> bool:
    """Write the folder ``target`` atomically (see the module doc).

    Parameters
    ----------
    target : path-like
        The folder to write; its parent is created.
    fill : callable (Path) -> None
        Writes the folder's files into the empty temporary folder it is given.
    replace : bool
        Replace an existing ``target`` (one writer per target: stale temporary
        folders of ``target`` are removed).  With ``False`` an existing
        ``target`` wins: another process that wrote the same content first
        (the conversion cache) keeps its folder and this copy is dropped.

    Returns
    -------
    bool
        Whether this call's folder is now at ``target``.
    """
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    aside = _aside(target)
    if replace:
        recover(target)
        shutil.rmtree(aside, ignore_errors=True)
        for stale in parent.glob(_staging_prefix(target) + "*"):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=parent))
    try:
        fill(staging)
        _fsync_tree(staging)
        if not replace:
            try:
                os.rename(staging, target)
            except OSError:  # another writer was first; its folder is as good as ours
                shutil.rmtree(staging, ignore_errors=True)
                return False
        elif target.exists():
            os.rename(target, aside)
            os.rename(staging, target)
        else:
            os.rename(staging, target)
        _fsync(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if replace:
            recover(target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _umask() -> int:
    """This process's umask, read without changing it (Linux); 0o022 when unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_file(folder: str | os.PathLike[str], name: str, content: bytes) -> Path:
    """Write one file into an existing folder atomically: all of it or nothing.

    The bytes go to a temporary sibling, are flushed to disk and renamed over
    ``folder / name``; two processes writing the same file leave one complete
    copy.  Used for ``model.onnx``, built beside ``model.keras`` on first use.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    OSError
        The folder cannot be written (read-only, full): nothing is left behind.
    """
    folder = Path(folder)
    target = folder / name
    fd, staging = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would, not mkstemp's 0600
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, target)
        _fsync(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    return target


def save_model_folder(
    target: str | os.PathLike[str],
    network: keras.Model,
    contract: ModelContract,
    *,
    files: Mapping[str, bytes | str] | None = None,
    derive: Callable[[Path], None] | None = None,
    replace: bool = True,
) -> bool:
    """Write ``network`` and ``contract`` (plus ``files``: name -> content) as a model folder.

    ``network`` is saved as it is: a compiled network carries its optimizer
    state (a training checkpoint), one loaded with ``compile=False`` does not.
    ``derive``, when given, is called with the temporary folder once
    ``model.keras`` and ``contract.json`` are in it, to add files made from
    them (``training export`` adds ``model.onnx``, keyed by the hash of that
    ``model.keras``), so they arrive in the same atomic write.
    Returns what :func:`write_folder` returns.
    """

    def fill(staging: Path) -> None:
        network.save(staging / MODEL_FILE)
        contract.save(staging)
        for name, content in (files or {}).items():
            path = staging / name
            if isinstance(content, str):
                path.write_text(content)
            else:
                path.write_bytes(content)
        if derive is not None:
            derive(staging)

    return write_folder(target, fill, replace=replace)


def load_network(folder: str | os.PathLike[str], *, compile: bool = False) -> Any:
    """The Keras network of a model folder.

    Raises
    ------
    ModelLoadError
        ``model.keras`` is missing or cannot be read (exit status 3).
    """
    import keras

    path = Path(folder) / MODEL_FILE
    try:
        return keras.saving.load_model(path, compile=compile)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(
            f"{path}: cannot load ({reason}); delete the folder to rebuild a pretrained "
            "model, or write it again (training export)"
        ) from None
