"""Tag an archive of audio files into a Parquet dataset: resumable, on one machine or a Ray cluster.

>>> files = list(expand_inputs(["/music"]))                             # doctest: +SKIP
>>> settings = ArchiveSettings("MSD_musicnn", tagger.tags, 0.0, False, False)  # doctest: +SKIP
>>> with ArchiveStore("out", settings) as store:                        # doctest: +SKIP
...     summary = run_archive(files, store, LocalEngine(tagger))

- :mod:`archive.inputs`: files, folders, glob patterns and manifests -> the files to tag;
- :mod:`archive.store`: the output (Parquet parts, resume index, errors table);
- :mod:`archive.engine`: the engine seam and the loop that drives it into the store;
- :mod:`archive.local`: the local engine (``model.tagging.tag_files`` on every core);
- :mod:`archive.ray_engine`: the Ray Data engine (decoding tasks, an actor pool of taggers).

``python -m tools.archive`` (``tagstream archive``) is the command.  Ray is an
optional extra (``pip install 'tagstream[ray]'``): nothing here imports it
unless the Ray engine is used.
"""

from __future__ import annotations

from archive.engine import ArchiveSummary, Engine, run_archive
from archive.inputs import InputFile, expand_inputs
from archive.local import LocalEngine
from archive.store import ArchiveSettings, ArchiveStore, FileFailure, read_table

__all__ = [
    "ArchiveSettings",
    "ArchiveStore",
    "ArchiveSummary",
    "Engine",
    "FileFailure",
    "InputFile",
    "LocalEngine",
    "expand_inputs",
    "read_table",
    "run_archive",
]
