"""Training settings: one frozen :class:`TrainConfig` read from a TOML file.

A training config is its own file (``training/configs/*.toml`` are commented
examples), separate from the runtime ``config.toml``.  It has three sections,
``[data]``, ``[model]`` and ``[train]``, each a frozen dataclass.  Unknown
keys, wrong types and values outside their allowed set fail at start-up with
the key's full name, in the style of :mod:`config`::

    >>> load_train_config("run.toml", overrides={"train.epochs": "many"})
    Traceback (most recent call last):
    config.ConfigError: train.epochs: expected an integer, got 'many'

Checkpoints carry the config they were trained with (:meth:`TrainConfig.to_dict`
/ :meth:`TrainConfig.from_dict`), so resuming, evaluating and exporting never
guess a setting.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

from config import ConfigError, coerce_setting

__all__ = [
    "DATA_FORMATS",
    "FREEZE_CHOICES",
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

    format: str = "manifest"
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
    teacher_hop_frames: int = 187
    teacher_top_k: int = 3
    max_seconds_per_file: float = 0.0
    # --- manifest and distill: fraction of files held out when no explicit split is given
    valid_fraction: float = 0.15
    test_fraction: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Which network, its input length and where its weights start."""

    architecture: str = "fcn4"
    window_frames: int = 187
    #: Channel width multiplier of the architecture (1.0 = the paper's widths).
    width: float = 1.0
    dropout: float = 0.3
    #: "" (random) or a pretrained name whose weights start the network (musicnn only).
    init: str = ""
    freeze: str = "none"


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam, the learning-rate schedule, early stopping and the epoch size."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    #: Cosine: final learning rate as a fraction of the first one.
    min_lr_fraction: float = 0.01
    #: Plateau: factor and patience (epochs) of the reduction.
    plateau_factor: float = 0.2
    plateau_patience: int = 2
    early_stopping_patience: int = 5
    #: Random crops drawn per labelled training file per epoch.
    crops_per_file: int = 1
    #: Validation windows per file (evenly spaced; song-level mean).  0 = all.
    valid_windows_per_file: int = 4
    seed: int = 0
    #: Example mel inputs written to TensorBoard as images at each epoch end.
    tensorboard_images: int = 3


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


_SECTIONS = {"data": DataConfig, "model": ModelSettings, "train": OptimConfig}
_ALLOWED: dict[str, tuple[str, ...]] = {
    "data.format": DATA_FORMATS,
    "model.freeze": FREEZE_CHOICES,
    "model.init": INIT_CHOICES,
    "train.lr_schedule": LR_SCHEDULES,
}
_POSITIVE = {
    "data.teacher_hop_frames",
    "data.teacher_top_k",
    "model.window_frames",
    "model.width",
    "train.epochs",
    "train.batch_size",
    "train.learning_rate",
    "train.plateau_factor",
    "train.plateau_patience",
    "train.early_stopping_patience",
    "train.crops_per_file",
}
_FRACTIONS = {"data.valid_fraction", "data.test_fraction", "model.dropout", "train.min_lr_fraction"}


def _check_value(key: str, value: Any) -> None:
    if key in _ALLOWED and value not in _ALLOWED[key]:
        choices = ", ".join(repr(c) for c in _ALLOWED[key])
        raise ConfigError(f"{key}: expected one of {choices}, got {value!r}")
    if key in _POSITIVE and not value > 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    if key in _FRACTIONS and not 0 <= value < 1:
        raise ConfigError(f"{key}: must be in [0, 1), got {value!r}")
    if key == "train.valid_windows_per_file" and value < 0:
        raise ConfigError(f"{key}: must be 0 or more, got {value!r}")


def _check_combination(config: TrainConfig) -> None:
    """Cross-field rules, each reported under the key the user must change."""
    from training.architectures import ARCHITECTURES

    model = config.model
    if model.architecture not in ARCHITECTURES:
        raise ConfigError(
            f"model.architecture: expected one of {', '.join(ARCHITECTURES)}, "
            f"got {model.architecture!r}"
        )
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
    for unknown in sorted(set(data) - set(_SECTIONS)):
        raise ConfigError(f"{unknown}: unknown section; the sections are " + ", ".join(_SECTIONS))
    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{section}: expected a [section], got {raw!r}")
        hints = typing.get_type_hints(cls)
        for key in sorted(set(raw) - set(hints)):
            raise ConfigError(
                f"{section}.{key}: unknown setting; {section} has " + ", ".join(sorted(hints))
            )
        values = {}
        for name, tp in hints.items():
            if name in raw:
                full = f"{section}.{name}"
                values[name] = coerce_setting(full, raw[name], tp, wrap_string=False)
                _check_value(full, values[name])
        sections[section] = cls(**values)
    config = TrainConfig(**sections, base_dir=base_dir)
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
        Command-line values; ``None`` values are ignored.

    Raises
    ------
    ConfigError
        One line naming the offending key.
    """
    data: dict[str, Any] = {}
    base_dir = "."
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: training config not found; pass --config PATH") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        base_dir = str(path.resolve().parent)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"{dotted}: an override must name section.key")
        data.setdefault(section, {})
        if isinstance(data[section], dict):
            data[section][key] = value
    return _build(data, base_dir=base_dir)
