"""The local engine: every core of one machine, decoding overlapped with the model, no Ray.

It is :func:`model.tagging.tag_files` with as many decoding threads as the
process may use cores: libsndfile, soxr and the log-mel of the next files run
in those threads while the model (whose own thread pool uses every core) runs
on the current file.  Results come in the order of the files.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING

from archive.engine import Result
from archive.inputs import InputFile
from archive.store import FileFailure
from model.tagging import FileTags, tag_files

if TYPE_CHECKING:
    from model.tagger import BaseTagger

__all__ = ["LocalEngine", "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class LocalEngine:
    """Tag files in this process with one loaded tagger.

    Parameters
    ----------
    tagger : model.tagger.BaseTagger
        Either backend.
    hop_seconds, pad, batch_size
        As :func:`model.tagging.tag_files`.
    decode_threads : int > 0 or None
        ``None``: one per usable core.
    """

    name = "local"

    def __init__(
        self,
        tagger: BaseTagger,
        *,
        hop_seconds: float = 0.0,
        pad: bool = False,
        batch_size: int = 32,
        decode_threads: int | None = None,
    ) -> None:
        self.tagger = tagger
        self.backend = tagger.backend
        self.hop_seconds = hop_seconds
        self.pad = pad
        self.batch_size = batch_size
        self.decode_threads = decode_threads or usable_cores()

    def results(self, files: Sequence[InputFile], stop: threading.Event) -> Iterator[Result]:
        by_path = {f.path: f for f in files}
        results = tag_files(
            [f.path for f in files],
            self.tagger,
            hop_seconds=self.hop_seconds,
            pad=self.pad,
            batch_size=self.batch_size,
            decode_threads=self.decode_threads,
            prefetch=2 * self.decode_threads,
        )
        try:
            for path, result in results:
                file = by_path[path]
                yield file, result if isinstance(result, FileTags) else FileFailure.of(result)
                if stop.is_set():
                    return
        finally:
            if isinstance(results, Generator):
                results.close()  # tag_files stops its decoding threads

    def close(self) -> None:
        """Nothing to release: the tagger belongs to the caller."""
