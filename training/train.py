"""Training: data preparation, callbacks, resumable checkpoints, ``train()``.

A run folder ``<out>`` holds::

    checkpoints/last/   a model folder: model.keras (with optimizer state),
                        contract.json, state.json (see training.checkpoint)
    checkpoints/best/   the same, for the best validation macro ROC-AUC
    tensorboard/        train/ and validation/ (Keras), tags/ (per-tag AUC, mel images)

A checkpoint is a model folder: ``load_tagger("<out>/checkpoints/best")`` runs
it.  ``state.json`` carries the :class:`~training.config.TrainConfig`, the epoch
count and the early-stopping and learning-rate bookkeeping, so ``--resume``
continues exactly where the run stopped; the contract carries the tags, the
feature settings and the window, so ``export`` copies it and never guesses.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from model.contract import ModelContract
from model.features import MUSICNN_FEATURES
from training.architectures import build_model
from training.checkpoint import (
    CHECKPOINTS,
    check_run_folder,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from training.config import ConfigError, TrainConfig
from training.datasets import DatasetError, TaggedSet, load_dataset
from training.metrics import binarise_top_k, song_level, tagging_metrics
from training.pipeline import (
    FeatureCache,
    WindowTable,
    crop_windows,
    fixed_windows,
    make_dataset,
    read_windows,
    teacher_windows,
)

__all__ = [
    "MONITOR",
    "PreparedData",
    "TaggingMetrics",
    "TrainResult",
    "compile_model",
    "prepare_data",
    "train",
]

logger = logging.getLogger(__name__)

MONITOR = "val_roc_auc_macro"


@dataclass
class PreparedData:
    """The dataset, its feature cache and the window tables of each split."""

    dataset: TaggedSet
    cache: FeatureCache
    train: WindowTable
    valid: WindowTable


def _cache_for(config: TrainConfig) -> FeatureCache:
    max_seconds = config.data.max_seconds_per_file if config.data.format == "distill" else 0.0
    return FeatureCache(config.resolve(config.data.cache_dir), max_seconds=max_seconds)


def split_table(
    config: TrainConfig,
    dataset: TaggedSet,
    split: str,
    cache: FeatureCache,
    *,
    progress: bool = True,
    max_per_file: int = 0,
) -> WindowTable:
    """Fixed windows of ``split``: teacher windows for distillation, else evenly spaced."""
    tracks = dataset.split(split)
    window = config.model.window_frames
    if dataset.teacher:
        return teacher_windows(
            tracks,
            cache,
            teacher=dataset.teacher,
            window_frames=window,
            hop_frames=config.data.teacher_hop_frames,
            teacher_cache_dir=config.data.teacher_cache_dir,
            progress=progress,
        )
    return fixed_windows(
        tracks,
        cache,
        n_tags=len(dataset.tags),
        window_frames=window,
        max_per_file=max_per_file,
        progress=progress,
    )


def prepare_data(
    config: TrainConfig, *, dataset: TaggedSet | None = None, progress: bool = True
) -> PreparedData:
    """Load the dataset (unless given), fill the feature cache, build the train/valid tables."""
    dataset = dataset if dataset is not None else load_dataset(config)
    if not dataset.train:
        raise DatasetError("no training tracks: check the data paths of the config")
    if not dataset.valid:
        raise ConfigError(
            "data.valid_fraction: no validation tracks; set it above 0 or set data.valid_manifest"
        )
    cache = _cache_for(config)
    if dataset.teacher:
        train_table = split_table(config, dataset, "train", cache, progress=progress)
    else:
        train_table = crop_windows(
            dataset.train,
            cache,
            n_tags=len(dataset.tags),
            crops_per_file=config.train.crops_per_file,
            progress=progress,
        )
    valid_table = split_table(
        config,
        dataset,
        "valid",
        cache,
        progress=progress,
        max_per_file=config.train.valid_windows_per_file,
    )
    logger.info(
        "data format=%s tags=%d train_tracks=%d train_rows=%d valid_tracks=%d valid_rows=%d",
        config.data.format,
        len(dataset.tags),
        len(dataset.train),
        len(train_table),
        len(dataset.valid),
        len(valid_table),
    )
    return PreparedData(dataset, cache, train_table, valid_table)


def song_targets(table: WindowTable, top_k: int) -> np.ndarray:
    """Binary song-level ground truth: labels, or the teacher's top ``top_k`` tags."""
    if table.soft:
        return binarise_top_k(table.track_targets, top_k)
    return (table.track_targets > 0.5).astype(np.float32)


# --------------------------------------------------------------------------- callbacks


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed by ``tf.summary``) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class TaggingMetrics(keras.callbacks.Callback):
    """Validation loss, ROC-AUC and PR-AUC (macro and per tag) at every epoch end.

    Song-level: window probabilities are averaged per track, then scored with
    scikit-learn.  Adds ``val_loss``, ``val_roc_auc_macro``, ``val_pr_auc_macro``,
    ``val_roc_auc_micro`` and ``val_pr_auc_micro`` to the epoch logs (so the
    callbacks after it and TensorBoard see them) and writes per-tag values and
    example mel inputs to ``log_dir``.
    """

    def __init__(
        self,
        table: WindowTable,
        *,
        tags: tuple[str, ...],
        window_frames: int,
        top_k: int,
        log_dir: Path | None = None,
        n_images: int = 3,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.windows = read_windows(table, window_frames=window_frames)
        self.table = table
        self.tags = tags
        self.truth = song_targets(table, top_k)
        self.batch_size = batch_size
        self.n_images = n_images
        self.log_dir = log_dir
        self._writer: Any = None
        self.last: dict[str, Any] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        import tensorflow as tf

        logs = logs if logs is not None else {}
        probs = self.model.predict(self.windows, batch_size=self.batch_size, verbose=0)
        clipped = np.clip(probs, 1e-7, 1 - 1e-7)
        target = self.table.target
        loss = -np.mean(target * np.log(clipped) + (1 - target) * np.log(1 - clipped))
        scores = song_level(self.table.track, probs, len(self.table.feature_files))
        result = tagging_metrics(self.truth, scores, self.tags)
        self.last = result
        logs["val_loss"] = float(loss)
        for key in ("roc_auc_macro", "pr_auc_macro", "roc_auc_micro", "pr_auc_micro"):
            logs[f"val_{key}"] = result[key]
        if self.log_dir is None or not tensorboard_available():
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        with self._writer.as_default(step=epoch):
            for tag, entry in result["per_tag"].items():
                name = tag.replace(" ", "_")
                if entry["roc_auc"] is not None:
                    tf.summary.scalar(f"roc_auc_per_tag/{name}", entry["roc_auc"])
                    tf.summary.scalar(f"pr_auc_per_tag/{name}", entry["pr_auc"])
            if self.n_images:
                mel = self.windows[: self.n_images]
                image = mel.transpose(0, 2, 1)[:, ::-1, :, None]  # low bands at the bottom
                image = image / max(float(image.max()), 1e-6)
                tf.summary.image("mel_inputs", image, max_outputs=self.n_images)
        self._writer.flush()


class _Resumable(keras.callbacks.Callback):
    """A Keras callback whose ``counters`` survive ``--resume``.

    Keras resets them in ``on_train_begin``; they are restored right after
    from ``state`` (what :meth:`state` returned when the checkpoint was written).
    """

    counters: tuple[str, ...] = ()

    def __init__(self, *args: Any, state: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_state = state or {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        for name in self.counters:
            if name in self.resume_state:
                setattr(self, name, self.resume_state[name])

    def state(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.counters}
        return {
            k: v if v is None else float(v) if k == "best" else int(v) for k, v in values.items()
        }


class ResumableEarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters survive ``--resume``."""

    counters = ("wait", "best")


class ResumableReduceLROnPlateau(_Resumable, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive ``--resume``."""

    counters = ("wait", "best", "cooldown_counter")


class Checkpointer(keras.callbacks.Callback):
    """Writes ``checkpoints/last`` every epoch and ``checkpoints/best`` on improvement.

    Each is a model folder: the network, ``contract`` (its ``extra`` updated
    with the epoch and the score) and the training state.
    """

    def __init__(
        self,
        folder: Path,
        *,
        contract: ModelContract,
        base_state: dict[str, Any],
        stateful: dict[str, Any],
        best: float | None = None,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.contract = contract
        self.base_state = base_state
        self.stateful = stateful
        self.best = best

    def _save(self, name: str, state: dict[str, Any]) -> None:
        folder = self.folder / name
        contract = self.contract.replace(
            source=f"tagstream training, checkpoint {folder.resolve()}",
            extra={
                **self.contract.extra,
                "epoch": state["epoch"],
                "monitor": MONITOR,
                "best": state["best"],
            },
        )
        save_checkpoint(folder, self.model, contract, state)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        current = logs.get(MONITOR)
        improved = (
            current is not None
            and math.isfinite(current)
            and (self.best is None or current > self.best)
        )
        if improved:
            self.best = float(current)  # type: ignore[arg-type]
        state = {
            **self.base_state,
            "epoch": epoch + 1,
            "best": self.best,
            "callbacks": {name: cb.state() for name, cb in self.stateful.items()},
            "logs": {k: float(v) for k, v in logs.items() if isinstance(v, int | float)},
        }
        self._save("last", state)
        if improved or not (self.folder / "best").is_dir():
            self._save("best", state)
        logger.info(
            "epoch=%d loss=%.4f val_loss=%.4f %s=%.4f best=%s",
            epoch + 1,
            logs.get("loss", float("nan")),
            logs.get("val_loss", float("nan")),
            MONITOR,
            logs.get(MONITOR, float("nan")),
            self.best,
        )


# --------------------------------------------------------------------------- training


def compile_model(network: keras.Model, config: TrainConfig, *, steps_per_epoch: int) -> None:
    """Adam with the configured schedule, binary cross-entropy (soft targets work too)."""
    settings = config.train
    learning_rate: Any = settings.learning_rate
    if settings.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            settings.learning_rate,
            decay_steps=max(1, settings.epochs * steps_per_epoch),
            alpha=settings.min_lr_fraction,
        )
    network.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
    )


@dataclass
class TrainResult:
    """Where a run's outputs are and how it went."""

    out_dir: Path
    best_checkpoint: Path
    epochs_done: int
    best: float | None
    history: dict[str, list[float]] = field(default_factory=dict)


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    dataset: TaggedSet | None = None,
    verbose: int = 1,
    progress: bool = True,
) -> TrainResult:
    """Train the network a config describes; see the module docstring for the outputs.

    Parameters
    ----------
    config : TrainConfig
    out_dir : path-like
        Run folder (created).
    resume : bool
        Continue from ``<out_dir>/checkpoints/last``; the config may only change
        ``[train]`` settings (e.g. more epochs).
    dataset : TaggedSet or None
        The config's dataset when already loaded (``load_dataset(config)``).
    verbose : {0, 1, 2}
        Keras' progress output (1 = a progress bar per epoch).
    progress : bool
        Progress bars for the feature cache and teacher targets.
    """
    out = Path(out_dir)
    checkpoints = out / CHECKPOINTS
    check_run_folder(config, out, resume=resume)
    resume_state: dict[str, Any] = {}
    if resume:
        network, resumed, resume_state = load_checkpoint(checkpoints / "last", compile=True)
    keras.utils.set_random_seed(config.train.seed + int(resume_state.get("epoch", 0)))
    data = prepare_data(config, dataset=dataset, progress=progress)
    tags = data.dataset.tags
    if resume and resumed.tags != tags:
        raise DatasetError("the dataset's tags differ from the checkpoint's; use another --out")
    steps_per_epoch = math.ceil(len(data.train) / config.train.batch_size)
    if not resume:
        network = build_model(config.model, tags=tags)
        compile_model(network, config, steps_per_epoch=steps_per_epoch)
    window = config.model.window_frames
    train_ds = make_dataset(
        data.train,
        window_frames=window,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
    )
    saved_callbacks = resume_state.get("callbacks", {})
    early = ResumableEarlyStopping(
        monitor=MONITOR,
        mode="max",
        patience=config.train.early_stopping_patience,
        state=saved_callbacks.get("early_stopping"),
    )
    stateful: dict[str, Any] = {"early_stopping": early}
    callbacks: list[keras.callbacks.Callback] = [
        TaggingMetrics(
            data.valid,
            tags=tags,
            window_frames=window,
            top_k=config.data.teacher_top_k,
            log_dir=out / "tensorboard" / "tags",
            n_images=config.train.tensorboard_images,
        )
    ]
    if config.train.lr_schedule == "plateau":
        plateau = ResumableReduceLROnPlateau(
            monitor=MONITOR,
            mode="max",
            factor=config.train.plateau_factor,
            patience=config.train.plateau_patience,
            state=saved_callbacks.get("plateau"),
        )
        stateful["plateau"] = plateau
        callbacks.append(plateau)
    contract = ModelContract(
        name=out.resolve().name,
        architecture=config.model.architecture,
        tags=tags,
        features=MUSICNN_FEATURES,
        window_frames=window,
        extra={"teacher": data.dataset.teacher, "init": config.model.init},
    )
    base_state = {"config": config.to_dict(), "monitor": MONITOR}
    callbacks += [
        early,
        Checkpointer(
            checkpoints,
            contract=contract,
            base_state=base_state,
            stateful=stateful,
            best=resume_state.get("best"),
        ),
    ]
    if tensorboard_available():
        callbacks.append(
            keras.callbacks.TensorBoard(
                log_dir=str(out / "tensorboard"), write_graph=False, update_freq="epoch"
            )
        )
    else:
        logger.warning(
            "tensorboard is not installed: no TensorBoard logs (pip install tensorboard)"
        )
    initial_epoch = int(resume_state.get("epoch", 0))
    history = network.fit(
        train_ds,
        epochs=config.train.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )
    state = (
        read_state(checkpoints / "last")
        if (checkpoints / "last").is_dir()
        else {"epoch": initial_epoch, "best": resume_state.get("best")}
    )
    return TrainResult(
        out,
        checkpoints / "best",
        int(state.get("epoch") or 0),
        state.get("best"),
        {k: [float(v) for v in vs] for k, vs in history.history.items()},
    )
