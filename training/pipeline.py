"""Feature cache and the tf.data input pipeline.

Feature cache
    :class:`FeatureCache` computes the log-mel of each audio file once with
    :func:`model.features.log_mel` and stores it as a **float16** ``.npy``
    file (half the size of float32; the values are log-compressed, 0 to about
    8, where float16's spacing is at most 2**-8 ~ 0.004, below the noise of
    any tagger; :data:`FLOAT16_ATOL` is the bound the tests check).  A cache
    entry is keyed by the file's absolute path, mtime, size, the
    :class:`model.FeatureSpec` and the read limit, so an edited file or other
    mel settings never reuse stale features.  Audio is decoded by
    :func:`model.audio.load_audio`, the decoder file tagging and the streamer
    use, so training accepts and refuses the same files they do.

Window tables
    A :class:`WindowTable` lists examples as (track, start frame, target).
    Training crops of labelled files use ``start = -1``: a random crop drawn
    in the pipeline at every epoch.  Validation, evaluation and distillation
    use fixed starts.

Pipeline
    :func:`make_dataset` shuffles the table, reads the windows from memory-
    mapped cache files in parallel, batches and ends with
    ``.prefetch(tf.data.AUTOTUNE)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.audio import load_audio
from model.features import MUSICNN_FEATURES, FeatureSpec, log_mel
from model.tagger import window_starts
from training.datasets import DatasetError, Track

__all__ = [
    "FLOAT16_ATOL",
    "FeatureCache",
    "WindowTable",
    "crop_windows",
    "fixed_windows",
    "make_dataset",
    "read_windows",
    "teacher_windows",
]

logger = logging.getLogger(__name__)

#: Largest absolute error of the float16 cache for log-mel values below 8.
FLOAT16_ATOL = 4e-3


class FeatureCache:
    """Log-mel features of audio files, computed once and kept as float16 ``.npy``.

    Parameters
    ----------
    root : path-like
        Cache folder; created on first write.
    spec : FeatureSpec
    max_seconds : float >= 0
        Only the first ``max_seconds`` of each file (0 = all); part of the key.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        spec: FeatureSpec = MUSICNN_FEATURES,
        max_seconds: float = 0.0,
    ) -> None:
        self.root = Path(root).expanduser()
        self.spec = spec
        self.max_seconds = max_seconds
        spec_text = json.dumps({**spec.to_dict(), "max_seconds": max_seconds}, sort_keys=True)
        self.spec_hash = hashlib.sha1(spec_text.encode()).hexdigest()[:12]

    def key(self, audio_path: Path) -> str:
        """Cache key of ``audio_path``: absolute path, mtime, size, feature spec."""
        resolved = Path(audio_path).resolve()
        stat = resolved.stat()
        text = f"{resolved}\0{stat.st_mtime_ns}\0{stat.st_size}\0{self.spec_hash}"
        return hashlib.sha1(text.encode()).hexdigest()

    def path_for(self, audio_path: Path) -> Path:
        key = self.key(audio_path)
        return self.root / "mel" / key[:2] / f"{key}.npy"

    def ensure(self, audio_path: Path) -> Path:
        """The cache file of ``audio_path``, computing it if missing."""
        target = self.path_for(audio_path)
        if target.is_file():
            return target
        y = load_audio(audio_path, sample_rate=self.spec.sample_rate, max_seconds=self.max_seconds)
        mel = log_mel(y, spec=self.spec).astype(np.float16)
        _save_atomic(target, mel)
        logger.debug("cached path=%s frames=%d", audio_path, len(mel))
        return target

    def ensure_all(self, paths: Sequence[Path], *, progress: bool = True) -> list[Path]:
        """Cache files of ``paths`` (in order), with a progress bar while computing."""
        from tqdm import tqdm

        missing = sum(not self.path_for(p).is_file() for p in paths)
        bar = tqdm(
            paths,
            desc="log-mel cache",
            unit="file",
            disable=not progress or missing == 0,
            leave=False,
        )
        return [self.ensure(p) for p in bar]

    def load(self, audio_path: Path) -> np.ndarray:
        """Log-mel frames of ``audio_path``, shape (frames, n_mels), float16 (memory-mapped)."""
        return np.load(self.ensure(audio_path), mmap_mode="r")


def _save_atomic(target: Path, array: np.ndarray) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(suffix=".npy", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@dataclass
class WindowTable:
    """Examples as rows (track, start, target) over cached feature files.

    Attributes
    ----------
    feature_files : list of str
        One cache file per track.
    n_frames : np.ndarray [shape=(tracks,)], int
    track_targets : np.ndarray [shape=(tracks, n_tags)], float32
        Song-level targets: the labels, or the mean teacher probability.
    track : np.ndarray [shape=(rows,)], int
    start : np.ndarray [shape=(rows,)], int; -1 = random crop
    target : np.ndarray [shape=(rows, n_tags)], float32
    soft : bool
        Targets are teacher probabilities rather than labels.
    """

    feature_files: list[str]
    n_frames: np.ndarray
    track_targets: np.ndarray
    track: np.ndarray
    start: np.ndarray
    target: np.ndarray
    soft: bool = False

    def __len__(self) -> int:
        return len(self.track)


def _track_frames(
    tracks: Sequence[Track], cache: FeatureCache, progress: bool
) -> tuple[list[str], np.ndarray]:
    files = cache.ensure_all([t.path for t in tracks], progress=progress)
    n_frames = np.array([np.load(f, mmap_mode="r").shape[0] for f in files], dtype=np.int64)
    return [str(f) for f in files], n_frames


def _labels(tracks: Sequence[Track], n_tags: int) -> np.ndarray:
    if any(t.labels is None for t in tracks):
        raise DatasetError("unlabelled tracks need a teacher: use data.format = 'distill'")
    return (
        np.stack([t.labels for t in tracks if t.labels is not None]).astype(np.float32)
        if tracks
        else np.zeros((0, n_tags), dtype=np.float32)
    )


def crop_windows(
    tracks: Sequence[Track],
    cache: FeatureCache,
    *,
    n_tags: int,
    crops_per_file: int = 1,
    progress: bool = True,
) -> WindowTable:
    """``crops_per_file`` random-crop rows per labelled track (training)."""
    files, n_frames = _track_frames(tracks, cache, progress)
    labels = _labels(tracks, n_tags)
    track = np.repeat(np.arange(len(tracks)), crops_per_file)
    return WindowTable(
        files, n_frames, labels, track, np.full(len(track), -1, dtype=np.int64), labels[track]
    )


def _spaced_starts(n_frames: int, window_frames: int, hop_frames: int, limit: int) -> np.ndarray:
    starts = window_starts(n_frames, window_frames, hop_frames)
    if len(starts) == 0:
        return np.zeros(1, dtype=np.int64)  # a short file: one zero-padded window
    if limit and len(starts) > limit:
        starts = starts[np.linspace(0, len(starts) - 1, limit).round().astype(int)]
    return starts


def fixed_windows(
    tracks: Sequence[Track],
    cache: FeatureCache,
    *,
    n_tags: int,
    window_frames: int,
    hop_frames: int | None = None,
    max_per_file: int = 0,
    progress: bool = True,
) -> WindowTable:
    """Evenly spaced whole windows of labelled tracks (validation, evaluation).

    Windows start every ``hop_frames`` (default: ``window_frames``) like
    :meth:`model.Tagger.tag_audio`; ``max_per_file`` > 0 keeps that many,
    evenly spaced.  A track shorter than a window gives one zero-padded window.
    """
    files, n_frames = _track_frames(tracks, cache, progress)
    labels = _labels(tracks, n_tags)
    per_track = [
        _spaced_starts(int(n), window_frames, hop_frames or window_frames, max_per_file)
        for n in n_frames
    ]
    track = np.concatenate([np.full(len(s), i) for i, s in enumerate(per_track)]).astype(np.int64)
    start = np.concatenate(per_track).astype(np.int64)
    return WindowTable(files, n_frames, labels, track, start, labels[track])


def _teacher_id(teacher: str, cache_dir: str) -> str:
    """Identity of a teacher for the target cache: its name, or its folder and mtime."""
    from model.contract import MODEL_FILE
    from model.tagger import resolve_model_folder

    folder = resolve_model_folder(teacher, cache_dir=cache_dir)
    stat = (folder / MODEL_FILE).stat()
    return hashlib.sha1(f"{folder.resolve()}\0{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def teacher_windows(
    tracks: Sequence[Track],
    cache: FeatureCache,
    *,
    teacher: str,
    window_frames: int,
    hop_frames: int,
    teacher_cache_dir: str = "~/.cache/tagstream",
    batch_size: int = 64,
    progress: bool = True,
) -> WindowTable:
    """Windows every ``hop_frames`` with the teacher's probabilities as soft targets.

    The teacher runs once per track on the cached features; its outputs are
    cached beside them (keyed by feature file, teacher and hop).
    """
    from tqdm import tqdm

    from model.tagger import load_tagger

    files, n_frames = _track_frames(tracks, cache, progress)
    teacher_key = _teacher_id(teacher, teacher_cache_dir)
    tagger = None
    per_track_starts, per_track_probs = [], []
    for file, n in tqdm(
        list(zip(files, n_frames, strict=True)),
        desc="teacher targets",
        unit="file",
        disable=not progress,
        leave=False,
    ):
        starts = _spaced_starts(int(n), window_frames, hop_frames, 0)
        target_file = Path(file).with_name(
            f"{Path(file).stem}.teacher-{teacher_key}-{hop_frames}.npy"
        )
        if target_file.is_file():
            probs = np.load(target_file)
        else:
            if tagger is None:
                tagger = load_tagger(teacher, cache_dir=teacher_cache_dir, device="cpu")
                if tagger.contract.window_frames != window_frames:
                    raise DatasetError(
                        f"teacher {teacher} takes {tagger.contract.window_frames} frames; "
                        f"set model.window_frames = {tagger.contract.window_frames}"
                    )
            mel = _read(file, starts, window_frames)
            probs = np.concatenate(
                [tagger.predict(mel[i : i + batch_size]) for i in range(0, len(mel), batch_size)]
            )
            _save_atomic(target_file, probs.astype(np.float32))
        per_track_starts.append(starts)
        per_track_probs.append(probs.astype(np.float32))
    track = np.concatenate([np.full(len(s), i) for i, s in enumerate(per_track_starts)]).astype(
        np.int64
    )
    target = np.concatenate(per_track_probs)
    track_targets = np.stack([p.mean(axis=0) for p in per_track_probs])
    return WindowTable(
        files, n_frames, track_targets, track, np.concatenate(per_track_starts), target, soft=True
    )


def _read(file: str, starts: np.ndarray, window_frames: int) -> np.ndarray:
    """Windows of one cache file as float32 (n, window_frames, n_mels), zero-padded at the end."""
    mel = np.load(file, mmap_mode="r")
    out = np.zeros((len(starts), window_frames, mel.shape[1]), dtype=np.float32)
    for i, s in enumerate(starts):
        chunk = mel[s : s + window_frames]
        out[i, : len(chunk)] = chunk
    return out


def read_windows(table: WindowTable, *, window_frames: int) -> np.ndarray:
    """All rows of a fixed-start table in memory, float32 (rows, window_frames, n_mels)."""
    if np.any(table.start < 0):
        raise ValueError("read_windows needs fixed starts; random-crop rows have start = -1")
    out = []
    for t in np.unique(table.track):
        rows = np.flatnonzero(table.track == t)
        out.append((rows, _read(table.feature_files[t], table.start[rows], window_frames)))
    n_mels = out[0][1].shape[2] if out else 96
    windows = np.zeros((len(table), window_frames, n_mels), dtype=np.float32)
    for rows, values in out:
        windows[rows] = values
    return windows


def make_dataset(
    table: WindowTable,
    *,
    window_frames: int,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    n_mels: int = MUSICNN_FEATURES.n_mels,
) -> Any:
    """A ``tf.data.Dataset`` of ``(mel (b, window_frames, n_mels), targets (b, n_tags))``.

    The mel batch feeds the network's single input, named ``mel``.

    Rows are shuffled (reshuffled every epoch) when ``shuffle``; random-crop
    rows draw a new start in [0, n_frames - window_frames] each time they are
    read; windows are read from the memory-mapped cache files in parallel.
    """
    import tensorflow as tf

    files = list(table.feature_files)
    mmaps: dict[int, np.ndarray] = {}

    def read_one(track: np.ndarray, start: np.ndarray) -> np.ndarray:
        t = int(track)
        if t not in mmaps:
            mmaps[t] = np.load(files[t], mmap_mode="r")
        mel = mmaps[t]
        out = np.zeros((window_frames, n_mels), dtype=np.float32)
        chunk = mel[int(start) : int(start) + window_frames]
        out[: len(chunk)] = chunk
        return out

    n_frames = tf.constant(table.n_frames, dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(
        (table.track.astype(np.int64), table.start.astype(np.int64), table.target)
    )
    if shuffle:
        ds = ds.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)

    def pick_start(track: tf.Tensor, start: tf.Tensor, target: tf.Tensor) -> tuple[Any, ...]:
        last = tf.maximum(tf.gather(n_frames, track) - window_frames, 0)
        random_start = tf.random.uniform((), 0, last + 1, dtype=tf.int64)
        return track, tf.where(start < 0, random_start, start), target

    def load(track: tf.Tensor, start: tf.Tensor, target: tf.Tensor) -> tuple[Any, Any]:
        mel = tf.numpy_function(read_one, [track, start], tf.float32, stateful=False)
        mel = tf.ensure_shape(mel, (window_frames, n_mels))
        return mel, target

    return (
        ds.map(pick_start, num_parallel_calls=tf.data.AUTOTUNE)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
