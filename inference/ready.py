"""The ready file: how a started worker tells other processes that it serves.

``python -m inference --ready-file PATH`` writes ``PATH`` once its model is
warmed up and its sockets are bound, atomically (a reader sees the whole file
or none), as one JSON object::

    {"pid": 4242, "input_endpoint": "tcp://127.0.0.1:5555",
     "publish_endpoint": "tcp://127.0.0.1:5556", "model": "MSD_musicnn",
     "mode": "exact", "backend": "tensorflow", "precision": "float32"}

The endpoints are the bound ones (the real port where the settings said
``tcp://...:*``).  The worker removes a stale file before it loads the model
and its own file when it stops.  Tests, tools and supervisors wait for it with
:func:`wait_ready` instead of reading the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tagstream.errors import UnavailableError

__all__ = [
    "READY_KEYS",
    "NotReadyError",
    "read_ready_file",
    "remove_ready_file",
    "wait_ready",
    "write_ready_file",
]

#: Keys every ready file has.
READY_KEYS = (
    "pid",
    "input_endpoint",
    "publish_endpoint",
    "model",
    "mode",
    "backend",
    "precision",
)


class NotReadyError(UnavailableError):
    """The worker exited, or did not become ready in time."""


def write_ready_file(path: str | os.PathLike[str], info: dict[str, Any]) -> None:
    """Write ``info`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(info, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def read_ready_file(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ready file's object, or ``None`` when there is no (complete) file."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def remove_ready_file(path: str | os.PathLike[str], *, pid: int | None = None) -> None:
    """Remove ``path``; with ``pid``, only when the file names that process."""
    if pid is not None:
        info = read_ready_file(path)
        if info is None or info.get("pid") != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()


def wait_ready(
    path: str | os.PathLike[str],
    *,
    process: subprocess.Popen[Any] | None = None,
    timeout_s: float = 60.0,
    poll_s: float = 0.05,
) -> dict[str, Any]:
    """Wait until ``path`` says a worker serves (``process``, when given); return the file's object.

    Parameters
    ----------
    path : path-like
        The worker's ``--ready-file``.
    process : subprocess.Popen or None
        The worker process: its file must name its pid, and its exit ends the wait.
    timeout_s : float > 0
    poll_s : float > 0
        Seconds between two looks at the file.

    Raises
    ------
    NotReadyError
        If ``process`` exits first or ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        info = read_ready_file(path)
        if info is not None and (process is None or info.get("pid") == process.pid):
            return info
        if process is not None and process.poll() is not None:
            raise NotReadyError(
                f"the worker exited with status {process.returncode} before it was ready; "
                "see its log"
            )
        if time.monotonic() >= deadline:
            raise NotReadyError(
                f"no worker was ready after {timeout_s:g} s ({path} not written); see its log"
            )
        time.sleep(poll_s)
