"""The engine seam and the one loop that drives either engine into the store.

An engine turns files into results; it never writes.  :func:`run_archive`
feeds it the files not yet in the output, hands each result to the
:class:`archive.store.ArchiveStore`, and keeps the progress bar and the counts
of the summary.  Two engines implement :class:`Engine`:
:class:`archive.local.LocalEngine` (one machine, no Ray) and
:class:`archive.ray_engine.RayEngine` (Ray Data, one machine or a cluster).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

from archive.inputs import InputFile
from archive.store import ArchiveStore, FileFailure

if TYPE_CHECKING:
    from model.tagging import FileTags

__all__ = ["ArchiveSummary", "Engine", "Result", "run_archive"]

logger = logging.getLogger(__name__)

#: One file's outcome: its tags, or why it failed.
Result = tuple[InputFile, "FileTags | FileFailure"]


class Engine(Protocol):
    """Tags files; the store, the progress and the loop are :func:`run_archive`'s.

    Attributes
    ----------
    name : str
        ``"local"`` or ``"ray"``.
    backend : str
        The tagger's backend (``model.backend``), recorded in each row.
    """

    name: str
    backend: str

    def results(self, files: Sequence[InputFile], stop: threading.Event) -> Iterator[Result]:
        """Yield each file's result once, in any order; return early once ``stop`` is set."""
        ...

    def close(self) -> None:
        """Release what the engine holds (threads, a Ray connection); safe to call twice."""
        ...


@dataclass
class ArchiveSummary:
    """What one run did.

    Attributes
    ----------
    listed : int
        Files the inputs named.
    skipped : int
        Already in the output (resume).
    tagged, failed : int
        Files this run tagged / wrote to the errors table.
    audio_s : float
        Seconds of audio this run tagged.
    wall_s : float
        Seconds from the first file handed to the engine to the last result.
    interrupted : bool
        The run stopped before every file had a result.
    engine : str
    extra : dict
        Engine-specific numbers (the Ray engine's peak memory per actor).
    """

    listed: int = 0
    skipped: int = 0
    tagged: int = 0
    failed: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    interrupted: bool = False
    engine: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return (self.tagged + self.failed) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def audio_hours_per_s(self) -> float:
        return self.audio_s / 3600.0 / self.wall_s if self.wall_s > 0 else 0.0

    def line(self, out: str) -> str:
        """The summary the command prints."""
        done = "interrupted" if self.interrupted else "done"
        return (
            f"{done}: {self.tagged} files tagged ({self.audio_s / 3600:.3f} h of audio), "
            f"{self.failed} failed, {self.skipped} already in {out}, of {self.listed} listed; "
            f"{self.wall_s:.1f} s, {self.files_per_s:.2f} files/s, "
            f"{self.audio_hours_per_s:.4f} audio-h/s ({self.engine} engine)"
        )


class _Progress:
    """The bar: files done of the files to do, files/s and ETA (tqdm's), audio-hours/s."""

    def __init__(self, total: int, *, stream: TextIO | None, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="file",
            file=stream,
            disable=not enabled or None,
            smoothing=0.05,
            dynamic_ncols=True,
        )
        self.started = time.monotonic()
        self.audio_s = 0.0
        self.failed = 0

    def update(self, result: FileTags | FileFailure) -> None:
        if isinstance(result, FileFailure):
            self.failed += 1
        else:
            self.audio_s += result.duration_s
        elapsed = time.monotonic() - self.started
        rate = self.audio_s / 3600.0 / elapsed if elapsed > 0 else 0.0
        self.bar.set_postfix_str(f"{rate:.3f} audio-h/s, {self.failed} failed", refresh=False)
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


def run_archive(
    files: Sequence[InputFile | tuple[str, OSError]],
    store: ArchiveStore,
    engine: Engine,
    *,
    stop: threading.Event | None = None,
    progress: TextIO | None = None,
    show_progress: bool = True,
) -> ArchiveSummary:
    """Tag every listed file not yet in ``store`` with ``engine``; write each result once.

    Parameters
    ----------
    files : sequence of InputFile or (path, OSError)
        From :func:`archive.inputs.expand_inputs`; unreadable ones go to the errors table.
    store : ArchiveStore
        Open.
    engine : Engine
    stop : threading.Event or None
        Set it (SIGINT) to stop after the results in flight; what has results is written.
    progress : text stream or None
        Where the bar goes (stderr).
    show_progress : bool

    Returns
    -------
    ArchiveSummary
    """
    stop = stop or threading.Event()
    summary = ArchiveSummary(listed=len(files), engine=engine.name)
    todo: list[InputFile] = []
    for item in files:
        if isinstance(item, InputFile):
            if item in store:
                summary.skipped += 1
            else:
                todo.append(item)
        else:
            path, exc = item
            if store.add(InputFile(path, -1, 0), FileFailure.of(exc), backend=engine.backend):
                summary.failed += 1
            else:
                summary.skipped += 1
    logger.info(
        "engine=%s listed=%d already_done=%d to_tag=%d",
        engine.name,
        summary.listed,
        summary.skipped,
        len(todo),
    )
    bar = _Progress(len(todo), stream=progress, enabled=show_progress and len(todo) > 0)
    started = time.monotonic()
    seen = 0
    try:
        if todo:
            for file, result in engine.results(todo, stop):
                if not store.add(file, result, backend=engine.backend):
                    logger.debug("path=%s came twice: kept once", file.path)
                    continue
                seen += 1
                bar.update(result)
                if isinstance(result, FileFailure):
                    summary.failed += 1
                else:
                    summary.tagged += 1
                    summary.audio_s += result.duration_s
                if stop.is_set():
                    break
    finally:
        summary.wall_s = time.monotonic() - started
        bar.close()
        store.flush()
    summary.interrupted = seen < len(todo)
    return summary
