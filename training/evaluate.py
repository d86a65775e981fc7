"""Evaluation: per-tag ROC-AUC and PR-AUC, macro and micro, song-level.

Every file is cut into whole windows (hop = window length, as
:meth:`model.Tagger.tag_audio` does; a file shorter than a window gives one
zero-padded window), the model's window probabilities are averaged per file
and scored against the file's labels.  For a distillation config the labels
are the teacher's top ``data.teacher_top_k`` tags of the file (its window
probabilities averaged the same way), and the mean Spearman rank correlation
between the two song-level tag vectors is reported too.

Outputs: a text table, ``evaluation.json`` and ``evaluation.png``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from config.schema import ConfigError
from training.checkpoint import STATE_FILE, model_to_load
from training.config import TrainConfig
from training.datasets import DatasetError, Track, load_dataset, read_manifest
from training.metrics import song_level, spearman_per_track, tagging_metrics
from training.pipeline import FeatureCache, WindowTable, fixed_windows, read_windows
from training.train import _cache_for, song_targets, split_table

__all__ = [
    "LoadedModel",
    "evaluate",
    "evaluate_table",
    "format_table",
    "load_for_evaluation",
    "plot_metrics",
]

logger = logging.getLogger(__name__)

JSON_FILE = "evaluation.json"
PLOT_FILE = "evaluation.png"


@dataclass
class LoadedModel:
    """A model to evaluate: a predict function with its tags and window length."""

    name: str
    tags: tuple[str, ...]
    window_frames: int
    predict: Callable[[np.ndarray], np.ndarray]


def load_for_evaluation(path: str | os.PathLike[str]) -> LoadedModel:
    """A model folder (exported, or a checkpoint), a run folder or a pretrained name.

    Every one of them loads through :func:`model.load_tagger`; a checkpoint (or
    a run folder's best one) is named by its folder, any other model by its
    contract.
    """
    from model.tagger import load_tagger

    target = model_to_load(path)
    tagger = load_tagger(target, device="cpu")
    is_checkpoint = (Path(target) / STATE_FILE).is_file()
    return LoadedModel(
        target if is_checkpoint else tagger.name,
        tagger.tags,
        tagger.contract.window_frames,
        lambda x: _batched(tagger.predict, x),
    )


def _batched(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    parts = [predict(x[i : i + 64]) for i in range(0, len(x), 64)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def evaluate_table(model: LoadedModel, table: WindowTable, *, top_k: int = 3) -> dict[str, Any]:
    """Song-level metrics of ``model`` on a fixed-window table (labels or teacher targets)."""
    windows = read_windows(table, window_frames=model.window_frames)
    probs = model.predict(windows)
    n_tracks = len(table.feature_files)
    scores = song_level(table.track, probs, n_tracks)
    result = tagging_metrics(song_targets(table, top_k), scores, model.tags)
    result["n_windows"] = len(table)
    if table.soft:
        result["spearman_mean"] = spearman_per_track(table.track_targets, scores)
        result["targets"] = f"teacher top-{top_k} tags per file"
    else:
        result["targets"] = "labels"
    return result


def _relabel(
    tracks: list[Track], source_tags: tuple[str, ...], tags: tuple[str, ...]
) -> list[Track]:
    """Labels reordered to the model's vocabulary (tags the dataset lacks are all 0)."""
    index = {t: i for i, t in enumerate(source_tags)}
    out = []
    for track in tracks:
        labels = np.zeros(len(tags), dtype=np.float32)
        if track.labels is not None:
            for j, tag in enumerate(tags):
                if tag in index:
                    labels[j] = track.labels[index[tag]]
        out.append(Track(track.path, labels, track.track_id))
    return out


def evaluate(
    model_path: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    manifest: Path | None = None,
    split: str = "test",
    cache_dir: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a model on a config's split or on a manifest; write JSON and PNG to ``out_dir``.

    Parameters
    ----------
    model_path : path-like
        Exported model folder, pretrained name, checkpoint or run folder.
    config : TrainConfig or None
        Evaluate on its ``split`` (``test``; the validation split when the
        config has no test split).
    manifest : Path or None
        A ``path,tags`` CSV: every row is evaluated (instead of ``config``).
    cache_dir : str or None
        Feature cache for ``manifest`` (default ``~/.cache/tagstream/features``).
    """
    if (config is None) == (manifest is None):
        raise ConfigError("evaluate needs exactly one of --config or --manifest")
    if manifest is not None and not Path(manifest).is_file():
        raise DatasetError(f"{manifest}: manifest not found; check the path")
    model = load_for_evaluation(model_path)
    top_k = 3
    if config is not None:
        dataset = load_dataset(config)
        if split == "test" and not dataset.test:
            logger.warning("config has no test split; evaluating on the validation split")
            split = "valid"
        cache = _cache_for(config)
        top_k = config.data.teacher_top_k
        table: WindowTable | None = None
        if dataset.teacher:
            table = split_table(
                config.replace("model", window_frames=model.window_frames),
                dataset,
                split,
                cache,
                progress=progress,
            )
        else:
            tracks = _relabel(dataset.split(split), dataset.tags, model.tags)
        source = f"config split={split}"
    else:
        assert manifest is not None
        rows, _ = read_manifest(manifest, tags=model.tags)
        from training.datasets import _multi_hot

        tracks = [Track(p, _multi_hot(ts, model.tags), p.stem) for p, ts in rows]
        cache = FeatureCache(cache_dir or "~/.cache/tagstream/features")
        table = None
        source = f"manifest {manifest}"
    if table is None:  # labelled tracks: whole windows, hop = window
        table = fixed_windows(
            tracks,
            cache,
            n_tags=len(model.tags),
            window_frames=model.window_frames,
            progress=progress,
        )
    if len(table.feature_files) == 0:
        raise DatasetError(f"nothing to evaluate in the {source}")
    result = evaluate_table(model, table, top_k=top_k)
    result.update({"model": model.name, "data": source, "n_tracks": len(table.feature_files)})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / JSON_FILE).write_text(json.dumps(_json_safe(result), indent=2) + "\n")
        plot_metrics(result, out / PLOT_FILE)
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: float | None) -> str:
    return "   -  " if value is None or not math.isfinite(value) else f"{value:6.3f}"


def format_table(result: dict[str, Any]) -> str:
    """Per-tag ROC-AUC / PR-AUC / positives, then macro and micro rows."""
    width = max([len(t) for t in result["per_tag"]] + [12])
    lines = [f"{'tag':<{width}}  ROC-AUC  PR-AUC  positives"]
    for tag, entry in result["per_tag"].items():
        lines.append(
            f"{tag:<{width}}  {_fmt(entry['roc_auc'])}  {_fmt(entry['pr_auc'])}  "
            f"{entry['positives']:>9}"
        )
    lines.append("-" * len(lines[0]))
    lines.append(
        f"{'macro':<{width}}  {_fmt(result['roc_auc_macro'])}  {_fmt(result['pr_auc_macro'])}  "
        f"{result['n_tags_scored']:>5} tags"
    )
    lines.append(
        f"{'micro':<{width}}  {_fmt(result['roc_auc_micro'])}  {_fmt(result['pr_auc_micro'])}  "
        f"{result['n_items']:>5} files"
    )
    if "spearman_mean" in result:
        lines.append(f"{'spearman':<{width}}  {_fmt(result['spearman_mean'])}")
    return "\n".join(lines)


def plot_metrics(result: dict[str, Any], path: Path) -> None:
    """Horizontal bars of per-tag ROC-AUC and PR-AUC, macro values in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [(t, e) for t, e in result["per_tag"].items() if e["roc_auc"] is not None]
    scored.sort(key=lambda item: item[1]["roc_auc"])
    names = [t for t, _ in scored]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(names) + 1.2)))
    ax.barh(y - 0.2, [e["roc_auc"] for _, e in scored], height=0.4, label="ROC-AUC")
    ax.barh(y + 0.2, [e["pr_auc"] for _, e in scored], height=0.4, label="PR-AUC")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="grey", linewidth=0.5, linestyle=":")
    ax.set_title(
        f"{result.get('model', '')}\nmacro ROC-AUC {_fmt(result['roc_auc_macro']).strip()}, "
        f"PR-AUC {_fmt(result['pr_auc_macro']).strip()} ({result['n_items']} files)",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_result(result: dict[str, Any], stream: TextIO) -> None:
    stream.write(format_table(result) + "\n")
