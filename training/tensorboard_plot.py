"""Render the scalars of a run's TensorBoard logs as one PNG (a "screenshot" without a browser)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

__all__ = ["read_scalars", "render_scalars"]


def read_scalars(log_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{run: {tag: [(step, value), ...]}}`` for every event file under ``log_dir``."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for run_dir in sorted({p.parent for p in Path(log_dir).rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
        accumulator.Reload()
        name = str(run_dir.relative_to(log_dir))
        for tag in accumulator.Tags().get("tensors", []):
            arrays = [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
            if arrays and all(a.ndim == 0 and a.dtype.kind == "f" for _, a in arrays):
                runs[name][tag] = sorted((step, float(a)) for step, a in arrays)
        for tag in accumulator.Tags().get("scalars", []):
            runs[name][tag] = sorted((e.step, e.value) for e in accumulator.Scalars(tag))
    return dict(runs)


def render_scalars(log_dir: Path, path: Path, *, title: str = "") -> None:
    """Loss, macro ROC-/PR-AUC, learning rate and the best per-tag AUCs, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = read_scalars(log_dir)
    panels = [
        ("loss", [("train", "epoch_loss"), ("validation", "epoch_loss")]),
        (
            "macro AUC (validation)",
            [
                ("validation", "epoch_roc_auc_macro"),
                ("validation", "epoch_pr_auc_macro"),
            ],
        ),
        ("learning rate", [("train", "epoch_learning_rate")]),
    ]
    per_tag = sorted(t for t in runs.get("tags", {}) if t.startswith("roc_auc_per_tag/"))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (label, series) in zip(axes, panels, strict=False):
        for run, tag in series:
            values = runs.get(run, {}).get(tag)
            if values:
                steps, ys = zip(*values, strict=True)
                ax.plot([s + 1 for s in steps], ys, marker="o", markersize=3, label=f"{run}/{tag}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    for tag in per_tag[:12]:
        steps, ys = zip(*runs["tags"][tag], strict=True)
        axes[3].plot([s + 1 for s in steps], ys, linewidth=1, label=tag.split("/", 1)[1])
    axes[3].set_title("per-tag ROC-AUC (validation)")
    axes[3].set_xlabel("epoch")
    axes[3].legend(fontsize=6, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
