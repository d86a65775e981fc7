"""Tagging metrics: ROC-AUC and PR-AUC per tag, macro and micro, song-level.

All computed with scikit-learn.  A tag whose ground truth has no positive or
no negative example has no AUC; it is left out of the macro mean and
reported as ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["binarise_top_k", "song_level", "spearman_per_track", "tagging_metrics"]


def song_level(track: np.ndarray, window_scores: np.ndarray, n_tracks: int) -> np.ndarray:
    """Mean over each track's windows: (rows, n_tags) -> (n_tracks, n_tags)."""
    sums = np.zeros((n_tracks, window_scores.shape[1]), dtype=np.float64)
    np.add.at(sums, track, window_scores)
    counts = np.bincount(track, minlength=n_tracks).astype(np.float64)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def binarise_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """1 for each row's ``k`` highest scores, else 0 (teacher probabilities -> labels)."""
    labels = np.zeros_like(scores, dtype=np.float32)
    if scores.size:
        top = np.argsort(-scores, axis=1)[:, :k]
        np.put_along_axis(labels, top, 1.0, axis=1)
    return labels


def tagging_metrics(y_true: np.ndarray, y_score: np.ndarray, tags: Sequence[str]) -> dict[str, Any]:
    """Per-tag, macro and micro ROC-AUC and PR-AUC (average precision).

    Parameters
    ----------
    y_true : np.ndarray [shape=(n, n_tags)], {0, 1}
    y_score : np.ndarray [shape=(n, n_tags)], in [0, 1]
    tags : sequence of str [len=n_tags]

    Returns
    -------
    dict
        ``roc_auc_macro``, ``pr_auc_macro``, ``roc_auc_micro``, ``pr_auc_micro``
        (floats, NaN when undefined), ``per_tag`` {tag: {"roc_auc", "pr_auc",
        "positives"}}, ``n_items``, ``n_tags_scored``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true = np.asarray(y_true) > 0.5
    y_score = np.asarray(y_score, dtype=np.float64)
    per_tag: dict[str, dict[str, float | int | None]] = {}
    roc: list[float] = []
    pr: list[float] = []
    for i, tag in enumerate(tags):
        positives = int(y_true[:, i].sum())
        entry: dict[str, float | int | None] = {
            "roc_auc": None,
            "pr_auc": None,
            "positives": positives,
        }
        if 0 < positives < len(y_true):
            roc.append(float(roc_auc_score(y_true[:, i], y_score[:, i])))
            pr.append(float(average_precision_score(y_true[:, i], y_score[:, i])))
            entry["roc_auc"], entry["pr_auc"] = roc[-1], pr[-1]
        per_tag[tag] = entry
    flat_true, flat_score = y_true.ravel(), y_score.ravel()
    defined = 0 < flat_true.sum() < flat_true.size
    return {
        "roc_auc_macro": float(np.mean(roc)) if roc else float("nan"),
        "pr_auc_macro": float(np.mean(pr)) if pr else float("nan"),
        "roc_auc_micro": float(roc_auc_score(flat_true, flat_score)) if defined else float("nan"),
        "pr_auc_micro": (
            float(average_precision_score(flat_true, flat_score)) if defined else float("nan")
        ),
        "per_tag": per_tag,
        "n_items": len(y_true),
        "n_tags_scored": len(roc),
    }


def spearman_per_track(reference: np.ndarray, scores: np.ndarray) -> float:
    """Mean over tracks of the Spearman rank correlation between two tag-probability vectors."""
    from scipy.stats import spearmanr

    values = [spearmanr(r, s).statistic for r, s in zip(reference, scores, strict=True)]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")
