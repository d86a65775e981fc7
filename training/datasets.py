"""Dataset adapters: where the audio files are and what their target tags are.

Three formats, each returning a :class:`TaggedSet` (tag vocabulary plus
train / valid / test lists of :class:`Track`):

``msd``
    The Million Song Dataset top-50 layout: a split folder such as
    MSD_split_for_tagging (``train_x_msd_id.txt``, ``valid_x_msd_id.txt``,
    ``test_x_msd_id.txt``, optionally ``train_y.npy`` ... in
    :data:`model.MSD_TAGS` order), Last.fm tags (the ``lastfm_tags.db`` SQLite
    database or the per-track ``TR....json`` files; a tag counts when its
    value is at least ``min_tag_value``, 50 as in Choi et al. 2016) and a folder
    of previews found by track id (any file whose name starts with the track id,
    e.g. ``A/B/TRAAAGR128F425B14B.clip.mp3``; or the split's
    ``*_x_filename.txt`` paths with ``.clip.mp3``).
``manifest``
    A CSV with columns ``path,tags`` (tags separated by ``;``; paths relative
    to the CSV), any vocabulary.
``distill``
    A folder of unlabelled audio; a teacher model's window probabilities
    become the targets (see :func:`training.pipeline.teacher_windows`).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.contract import MSD_TAGS
from tagstream.errors import UnavailableError, UsageError

if TYPE_CHECKING:
    from training.config import TrainConfig

__all__ = [
    "AUDIO_EXTENSIONS",
    "DatasetError",
    "TaggedSet",
    "Track",
    "distill_dataset",
    "find_audio_by_track_id",
    "load_dataset",
    "manifest_dataset",
    "msd_dataset",
    "read_lastfm_db",
    "read_lastfm_json",
    "read_manifest",
    "split_tracks",
]

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".mp3", ".ogg", ".flac", ".wav", ".aiff", ".aif", ".opus")
SPLITS = ("train", "valid", "test")
_TRACK_ID = re.compile(r"^(TR[A-Z0-9]{16})")


class DatasetError(UnavailableError, ValueError):
    """A dataset file is missing or malformed; the message names the file (exit status 3)."""


@dataclass(frozen=True)
class Track:
    """One audio file and its targets.

    Attributes
    ----------
    path : Path
    labels : np.ndarray [shape=(n_tags,)], float32 in {0, 1}, or None
        ``None`` for unlabelled audio (distillation).
    track_id : str
    """

    path: Path
    labels: np.ndarray | None = field(default=None, compare=False)
    track_id: str = ""


@dataclass(frozen=True)
class TaggedSet:
    """A tag vocabulary and the tracks of each split."""

    tags: tuple[str, ...]
    train: list[Track]
    valid: list[Track]
    test: list[Track]
    #: Teacher model (name or path) whose outputs are the targets; "" for labelled data.
    teacher: str = ""

    def split(self, name: str) -> list[Track]:
        if name not in SPLITS:
            raise UsageError(f"split={name!r} must be one of {', '.join(SPLITS)}")
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


# --------------------------------------------------------------------------- helpers


def _multi_hot(tags: Iterable[str], vocabulary: Sequence[str]) -> np.ndarray:
    index = {tag: i for i, tag in enumerate(vocabulary)}
    labels = np.zeros(len(vocabulary), dtype=np.float32)
    for tag in tags:
        if tag in index:
            labels[index[tag]] = 1.0
    return labels


def split_tracks(
    tracks: Sequence[Track], *, valid_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> tuple[list[Track], list[Track], list[Track]]:
    """Shuffle with ``seed`` and cut into (train, valid, test); each non-empty split has >= 1."""
    order = np.random.default_rng(seed).permutation(len(tracks))
    shuffled = [tracks[i] for i in order]
    n_valid = round(valid_fraction * len(shuffled))
    n_test = round(test_fraction * len(shuffled))
    if valid_fraction > 0 and len(shuffled) > 1:
        n_valid = max(n_valid, 1)
    if test_fraction > 0 and len(shuffled) > 2:
        n_test = max(n_test, 1)
    valid = shuffled[:n_valid]
    test = shuffled[n_valid : n_valid + n_test]
    return shuffled[n_valid + n_test :], valid, test


# --------------------------------------------------------------------------- manifest


def read_manifest(
    csv_path: Path, *, tags: Sequence[str] | None = None
) -> tuple[list[tuple[Path, list[str]]], tuple[str, ...]]:
    """Rows ``(absolute path, [tag, ...])`` of a ``path,tags`` CSV and its vocabulary.

    The vocabulary is ``tags`` when given, else the sorted set of tags in the file.
    """
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{csv_path}: manifest not found") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot be read ({exc.strerror})") from None
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"path", "tags"} <= set(reader.fieldnames):
        raise DatasetError(
            f"{csv_path}: a manifest needs the columns path,tags; got {reader.fieldnames}"
        )
    rows = []
    for line, row in enumerate(reader, start=2):
        if not row["path"]:
            raise DatasetError(f"{csv_path}:{line}: empty path")
        path = Path(row["path"]).expanduser()
        path = path if path.is_absolute() else csv_path.parent / path
        row_tags = [t.strip() for t in (row["tags"] or "").split(";") if t.strip()]
        rows.append((path, row_tags))
    vocabulary = tuple(tags) if tags else tuple(sorted({t for _, ts in rows for t in ts}))
    return rows, vocabulary


def _manifest_tracks(csv_path: Path, vocabulary: Sequence[str]) -> list[Track]:
    rows, _ = read_manifest(csv_path, tags=vocabulary)
    missing = [str(p) for p, _ in rows if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{csv_path}: {len(missing)} audio file(s) not found, first: {missing[0]}"
        )
    return [Track(path, _multi_hot(ts, vocabulary), path.stem) for path, ts in rows]


def manifest_dataset(
    manifest: Path,
    *,
    valid_manifest: Path | None = None,
    test_manifest: Path | None = None,
    tags: Sequence[str] = (),
    valid_fraction: float = 0.15,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> TaggedSet:
    """Tracks of ``path,tags`` CSV manifests.

    Without ``valid_manifest`` (``test_manifest``) a seeded ``valid_fraction``
    (``test_fraction``) of ``manifest`` is held out.
    """
    _, vocabulary = read_manifest(manifest, tags=tags or None)
    if not vocabulary:
        raise DatasetError(f"{manifest}: no tags in the manifest; fill the tags column")
    tracks = _manifest_tracks(manifest, vocabulary)
    fractions = (0.0 if valid_manifest else valid_fraction, 0.0 if test_manifest else test_fraction)
    train, valid, test = split_tracks(
        tracks, valid_fraction=fractions[0], test_fraction=fractions[1], seed=seed
    )
    if valid_manifest:
        valid = _manifest_tracks(valid_manifest, vocabulary)
    if test_manifest:
        test = _manifest_tracks(test_manifest, vocabulary)
    return TaggedSet(vocabulary, train, valid, test)


# --------------------------------------------------------------------------- MSD / Last.fm


def read_lastfm_db(
    db_path: Path, track_ids: Iterable[str], tags: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{track_id: {tag: value}}`` from ``lastfm_tags.db`` for the given tracks and tags.

    The database has tables ``tids(tid)``, ``tags(tag)`` and
    ``tid_tag(tid, tag, val)`` whose ``tid`` / ``tag`` columns are rowids of
    the first two.
    """
    if not db_path.is_file():
        raise DatasetError(f"{db_path}: Last.fm tag database not found")
    wanted = set(track_ids)
    values: dict[str, dict[str, float]] = {}
    placeholders = ",".join("?" * len(tags))
    query = (
        "SELECT tids.tid, tags.tag, tid_tag.val FROM tid_tag "
        "JOIN tids ON tid_tag.tid = tids.ROWID JOIN tags ON tid_tag.tag = tags.ROWID "
        f"WHERE tags.tag IN ({placeholders})"
    )
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
            for tid, tag, value in connection.execute(query, list(tags)):
                if tid in wanted:
                    values.setdefault(tid, {})[tag] = float(value)
    except sqlite3.DatabaseError as exc:
        raise DatasetError(f"{db_path}: not a Last.fm tag database ({exc})") from None
    return values


def read_lastfm_json(
    json_dir: Path, track_ids: Iterable[str], tags: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{track_id: {tag: value}}`` from Last.fm per-track JSON files under ``json_dir``.

    Each file (any depth, named ``<TRACKID>.json``) holds
    ``{"track_id": ..., "tags": [[tag, count], ...]}``.
    """
    if not json_dir.is_dir():
        raise DatasetError(f"{json_dir}: Last.fm JSON folder not found")
    wanted = set(track_ids)
    vocabulary = set(tags)
    values: dict[str, dict[str, float]] = {}
    for path in json_dir.rglob("*.json"):
        if path.stem not in wanted:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pairs = record["tags"]
            track_id = str(record.get("track_id", path.stem))
            values[track_id] = {
                str(tag): float(count) for tag, count in pairs if str(tag) in vocabulary
            }
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: not a Last.fm track file ({exc!r})") from None
    return values


def find_audio_by_track_id(audio_dir: Path) -> dict[str, Path]:
    """Map MSD track id -> audio file for every file under ``audio_dir`` named after one."""
    if not audio_dir.is_dir():
        raise DatasetError(f"{audio_dir}: audio folder not found")
    found: dict[str, Path] = {}
    for path in sorted(audio_dir.rglob("*")):
        match = _TRACK_ID.match(path.name)
        if match and path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
            found.setdefault(match.group(1), path)
    return found


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise DatasetError(f"{path}: split file not found") from None


def msd_dataset(
    *,
    audio_dir: Path,
    split_dir: Path,
    tags_db: Path | None = None,
    tags_json_dir: Path | None = None,
    tags: Sequence[str] = (),
    min_tag_value: float = 50.0,
) -> TaggedSet:
    """Tracks of the MSD tagging split that have audio under ``audio_dir``.

    Labels come from ``<split>_y.npy`` when it exists, matches the split's
    length and the vocabulary is :data:`model.MSD_TAGS`; otherwise from
    ``tags_db`` or ``tags_json_dir`` (a tag is on when its Last.fm value is
    at least ``min_tag_value``).  Tracks without audio are skipped and counted
    in the log.
    """
    vocabulary = tuple(tags) if tags else MSD_TAGS
    by_id = find_audio_by_track_id(audio_dir)
    splits: dict[str, list[Track]] = {}
    for split in SPLITS:
        ids = _read_lines(split_dir / f"{split}_x_msd_id.txt")
        paths: list[Path | None] = [by_id.get(i) for i in ids]
        filenames = split_dir / f"{split}_x_filename.txt"
        if filenames.is_file():
            names = _read_lines(filenames)
            if len(names) == len(ids):
                for i, name in enumerate(names):
                    candidate = audio_dir / re.sub(r"\.npy$", ".clip.mp3", name)
                    if paths[i] is None and candidate.is_file():
                        paths[i] = candidate
        labels = _msd_labels(
            split_dir, split, ids, vocabulary, tags_db, tags_json_dir, min_tag_value
        )
        tracks = [
            Track(path, labels[i], ids[i]) for i, path in enumerate(paths) if path is not None
        ]
        if len(tracks) < len(ids):
            logger.warning(
                "msd split=%s tracks=%d without_audio=%d", split, len(ids), len(ids) - len(tracks)
            )
        splits[split] = tracks
    return TaggedSet(vocabulary, splits["train"], splits["valid"], splits["test"])


def _msd_labels(
    split_dir: Path,
    split: str,
    ids: list[str],
    vocabulary: tuple[str, ...],
    tags_db: Path | None,
    tags_json_dir: Path | None,
    min_tag_value: float,
) -> np.ndarray:
    y_path = split_dir / f"{split}_y.npy"
    if vocabulary == MSD_TAGS and y_path.is_file():
        y = np.load(y_path)
        if y.shape == (len(ids), len(MSD_TAGS)):
            return (y > 0).astype(np.float32)
        logger.warning("msd labels=%s shape=%s ignored: does not match the split", y_path, y.shape)
    if tags_db is not None:
        values = read_lastfm_db(tags_db, ids, vocabulary)
    elif tags_json_dir is not None:
        values = read_lastfm_json(tags_json_dir, ids, vocabulary)
    else:
        raise DatasetError(f"{y_path}: no usable labels; set data.tags_db or data.tags_json_dir")
    return (
        np.stack(
            [
                _multi_hot(
                    [t for t, v in values.get(i, {}).items() if v >= min_tag_value], vocabulary
                )
                for i in ids
            ]
        )
        if ids
        else np.zeros((0, len(vocabulary)), dtype=np.float32)
    )


# --------------------------------------------------------------------------- distillation


def find_audio(folder: Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: audio folder not found")
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    )


def distill_dataset(
    audio_dir: Path,
    *,
    teacher: str,
    teacher_cache_dir: str = "~/.cache/tagstream",
    valid_fraction: float = 0.15,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> TaggedSet:
    """Unlabelled tracks under ``audio_dir``, with the teacher's tag vocabulary."""
    from model.contract import ModelContract
    from model.tagger import resolve_model_folder

    files = find_audio(audio_dir)
    if not files:
        raise DatasetError(f"{audio_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    contract = ModelContract.load(resolve_model_folder(teacher, cache_dir=teacher_cache_dir))
    tracks = [Track(path, None, path.stem) for path in files]
    train, valid, test = split_tracks(
        tracks, valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed
    )
    return TaggedSet(contract.tags, train, valid, test, teacher=teacher)


def load_dataset(config: TrainConfig) -> TaggedSet:
    """The :class:`TaggedSet` a training config describes."""
    data = config.data
    if data.format == "manifest":
        return manifest_dataset(
            config.resolve(data.manifest),
            valid_manifest=config.resolve(data.valid_manifest) if data.valid_manifest else None,
            test_manifest=config.resolve(data.test_manifest) if data.test_manifest else None,
            tags=data.tags,
            valid_fraction=data.valid_fraction,
            test_fraction=data.test_fraction,
            seed=config.train.seed,
        )
    if data.format == "msd":
        return msd_dataset(
            audio_dir=config.resolve(data.audio_dir),
            split_dir=config.resolve(data.split_dir),
            tags_db=config.resolve(data.tags_db) if data.tags_db else None,
            tags_json_dir=config.resolve(data.tags_json_dir) if data.tags_json_dir else None,
            tags=data.tags,
        )
    return distill_dataset(
        config.resolve(data.audio_dir),
        teacher=data.teacher,
        teacher_cache_dir=data.teacher_cache_dir,
        valid_fraction=data.valid_fraction,
        test_fraction=data.test_fraction,
        seed=config.train.seed,
    )
