"""Training settings: one frozen :class:`TrainConfig`, a second schema over the one loader.

A training config is its own file (``training/configs/*.toml`` are commented
examples), separate from the runtime ``config.toml``, read by the same
machinery (:mod:`config.schema`): three sections, ``[data]``, ``[model]`` and
``[train]``, each a frozen dataclass whose fields carry their allowed values
and ranges (``setting(...)``); command-line ``choices`` come from the same
fields (``config.choices(ModelSettings, "architecture")``).  Unknown keys, wrong
types and values out of range fail with the key's full name::

    >>> load_train_config("run.toml", overrides={"train.epochs": "many"})
    Traceback (most recent call last):
    config.schema.ConfigError: train.epochs: expected an integer, got 'many'

Nothing here imports TensorFlow: every check runs before a network is built.
Checkpoints carry the config they were trained with (:meth:`TrainConfig.to_dict`
/ :meth:`TrainConfig.from_dict`), so resuming, evaluating and exporting never
guess a setting.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from config.schema import ConfigError, apply_overrides, build, read_toml, setting
from model.architectures import ARCHITECTURES

__all__ = [
    "DATA_FORMATS",
    "FREEZE_CHOICES",
    "INIT_CHOICES",
    "LR_SCHEDULES",
    "ConfigError",
    "DataConfig",
    "ModelSettings",
    "OptimConfig",
    "TrainConfig",
    "load_train_config",
]

DATA_FORMATS = ("msd", "manifest", "distill")
FREEZE_CHOICES = ("none", "frontend", "frontend+midend")
LR_SCHEDULES = ("cosine", "plateau")
INIT_CHOICES = ("", "MSD_musicnn")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the examples come from.  Relative paths are relative to the config file."""

    format: str = setting("manifest", choices=DATA_FORMATS)
    #: Feature cache folder (log-mel float16 .npy files, see training.pipeline).
    cache_dir: str = "~/.cache/tagstream/features"
    #: Restrict / order the tag vocabulary; empty = the dataset's own (MSD: MSD_TAGS).
    tags: tuple[str, ...] = ()
    # --- format = "manifest"
    manifest: str = ""
    valid_manifest: str = ""
    test_manifest: str = ""
    # --- format = "msd"
    audio_dir: str = ""
    split_dir: str = ""
    tags_db: str = ""
    tags_json_dir: str = ""
    # --- format = "distill"
    teacher: str = "MSD_musicnn"
    teacher_cache_dir: str = "~/.cache/tagstream"
    teacher_hop_frames: int = setting(187, above=0, max=100_000)
    teacher_top_k: int = setting(3, above=0, max=10_000)
    max_seconds_per_file: float = setting(0.0, min=0, max=86_400)
    # --- manifest and distill: fraction of files held out when no explicit split is given
    valid_fraction: float = setting(0.15, min=0, max=1)
    test_fraction: float = setting(0.0, min=0, max=1)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Which network, its input length and where its weights start."""

    #: A key of the one registry, model.architectures.ARCHITECTURES.
    architecture: str = setting("fcn4", choices=tuple(ARCHITECTURES))
    window_frames: int = setting(187, above=0, max=100_000)
    #: Channel width multiplier of the architecture (1.0 = the paper's widths).
    width: float = setting(1.0, above=0, max=64)
    dropout: float = setting(0.3, min=0, max=0.99)
    #: "" (random) or a pretrained name whose weights start the network (musicnn only).
    init: str = setting("", choices=INIT_CHOICES)
    freeze: str = setting("none", choices=FREEZE_CHOICES)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam, the learning-rate schedule, early stopping and the epoch size."""

    epochs: int = setting(30, above=0, max=1_000_000)
    batch_size: int = setting(32, above=0, max=65_536)
    learning_rate: float = setting(1e-3, above=0, max=10)
    lr_schedule: str = setting("cosine", choices=LR_SCHEDULES)
    #: Cosine: final learning rate as a fraction of the first one.
    min_lr_fraction: float = setting(0.01, min=0, max=1)
    #: Plateau: factor and patience (epochs) of the reduction.
    plateau_factor: float = setting(0.2, above=0, max=1)
    plateau_patience: int = setting(2, above=0, max=1_000_000)
    early_stopping_patience: int = setting(5, above=0, max=1_000_000)
    #: Random crops drawn per labelled training file per epoch.
    crops_per_file: int = setting(1, above=0, max=10_000)
    #: Validation windows per file (evenly spaced; song-level mean).  0 = all.
    valid_windows_per_file: int = setting(4, min=0, max=1_000_000)
    seed: int = 0
    #: Example mel inputs written to TensorBoard as images at each epoch end.
    tensorboard_images: int = setting(3, min=0, max=100)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every training setting; carried by checkpoints."""

    data: DataConfig = DataConfig()
    model: ModelSettings = ModelSettings()
    train: OptimConfig = OptimConfig()
    #: Folder the relative paths of ``data`` are relative to (the config file's folder).
    base_dir: str = "."

    def resolve(self, value: str) -> Path:
        """``value`` as a path: ``~`` expanded, relative to :attr:`base_dir`."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["data"]["tags"] = list(self.data.tags)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        raw = {k: v for k, v in data.items() if k != "base_dir"}
        return _build(raw, base_dir=str(data.get("base_dir", ".")))

    def replace(self, section: str, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied to ``section`` (checked like the file)."""
        data = self.to_dict()
        data[section].update(changes)
        return TrainConfig.from_dict(data)


def _check_combination(config: TrainConfig) -> None:
    """Rules across fields, each reported under the key the user must change."""
    model = config.model
    if model.init and model.architecture != "musicnn":
        raise ConfigError(
            f"model.init: {model.init!r} weights fit architecture 'musicnn' only, "
            f"not {model.architecture!r}"
        )
    if model.freeze != "none" and not model.init:
        raise ConfigError(
            f"model.freeze: {model.freeze!r} needs pretrained weights; set model.init too"
        )
    if model.init and model.window_frames != 187:
        raise ConfigError(
            f"model.window_frames: pretrained {model.init} takes 187 frames, "
            f"got {model.window_frames}"
        )
    data = config.data
    if data.format == "manifest" and not data.manifest:
        raise ConfigError("data.manifest: required when data.format = 'manifest'")
    if data.format in ("msd", "distill") and not data.audio_dir:
        raise ConfigError(f"data.audio_dir: required when data.format = {data.format!r}")
    if data.format == "msd" and not data.split_dir:
        raise ConfigError("data.split_dir: required when data.format = 'msd'")
    if data.valid_fraction + data.test_fraction >= 1:
        raise ConfigError(
            f"data.test_fraction: valid_fraction + test_fraction must be below 1, "
            f"got {data.valid_fraction} + {data.test_fraction}"
        )


def _build(data: dict[str, Any], *, base_dir: str) -> TrainConfig:
    sections = ("data", "model", "train")  # base_dir is no setting of the file
    for unknown in sorted(set(data) - set(sections)):
        raise ConfigError(f"{unknown}: unknown section; the sections are {', '.join(sections)}")
    config = dataclasses.replace(build(TrainConfig, data, wrap_string=False), base_dir=base_dir)
    _check_combination(config)
    return config


def load_train_config(
    path: str | Path | None = None, *, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Read a training config.

    Parameters
    ----------
    path : path-like or None
        A TOML file with ``[data]``, ``[model]`` and ``[train]`` sections; ``None``
        gives the defaults (only useful with ``overrides``).
    overrides : dict {"section.key": value}
        Command-line values; ``None`` values are ignored.  They pass the same
        checks as the file's values.

    Raises
    ------
    ConfigError
        One line naming the offending key (a :class:`~tagstream.errors.UsageError`,
        exit status 2).
    """
    data: dict[str, Any] = {}
    base_dir = "."
    if path is not None:
        data = read_toml(path)
        base_dir = str(Path(path).resolve().parent)
    apply_overrides(data, overrides or {})
    return _build(data, base_dir=base_dir)
