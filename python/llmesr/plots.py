"""The figures (matplotlib, optional): a run folder's metrics.png and llmesr-report's report.png share
their panels: test NDCG@10 by long-tail group, one bar per model with its value written on it, and the
learning curves (training loss and validation NDCG@10 by epoch)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmesr.io import atomic_write
from llmesr.metrics import GROUPS

PROTOCOLS = ("full", "sampled")


def pyplot() -> Any | None:
    """matplotlib's pyplot on the file-only backend, or None (and a note) where it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib)", file=sys.stderr)
        return None
    return plt


def group_bars(ax: Any, columns: Mapping[str, Mapping[str, float]], title: str) -> None:
    """One bar per model in each group (`columns`: model name -> group -> value), values on the bars."""
    x = np.arange(len(GROUPS))
    width = 0.8 / max(1, len(columns))
    for i, (name, values) in enumerate(columns.items()):
        bars = ax.bar(x + (i - (len(columns) - 1) / 2) * width, [values.get(g, 0.0) for g in GROUPS], width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    ax.set_xticks(x, GROUPS, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.margins(y=0.3)
    ax.legend(fontsize=7, loc="upper right")  # in the headroom of margins(y=0.3); "best" is slow to place


def learning_curves(ax: Any, histories: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> None:
    """Validation NDCG@10 by epoch (solid, left axis) and the training loss (dotted, right axis)."""
    loss_ax = ax.twinx()
    for i, (name, history) in enumerate(histories.items()):
        epochs = [h["epoch"] for h in history]
        colour = f"C{i % 10}"
        ax.plot(epochs, [h["valid_NDCG@10"] for h in history], color=colour, label=f"{name}: valid NDCG@10")
        loss_ax.plot(epochs, [h["loss"] for h in history], color=colour, linestyle=":", label=f"{name}: loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10 (selects the epoch)", fontsize=8)
    loss_ax.set_ylabel("training loss (dotted)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower right")


def time_to_quality(
    ax: Any, histories: Mapping[str, Sequence[Mapping[str, Any]]], minutes: Mapping[str, np.ndarray], title: str
) -> None:
    """Validation NDCG@10 against the training minutes elapsed at the end of each epoch."""
    for i, (name, history) in enumerate(histories.items()):
        ax.plot(minutes[name], [h["valid_NDCG@10"] for h in history], color=f"C{i % 10}", label=name)
    ax.set_xlabel("training minutes (steps, teachers, validation)")
    ax.set_ylabel("validation NDCG@10", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower right")


def ndcg_by_group(test: Mapping[str, Any], protocol: str) -> dict[str, float]:
    """metrics.json's test NDCG@10 by group for one protocol (an empty group: 0)."""
    return {g: test[protocol][g]["NDCG@10"] or 0.0 for g in GROUPS if g in test[protocol]}


def run_figure(
    tests: Mapping[str, Mapping[str, Any]],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    title: str = "",
) -> bool:
    """metrics.png: test NDCG@10 by group under both protocols for the run and its references (`tests`:
    name -> metrics.json's "test", e.g. the run, the backbone alone, popularity), and the learning
    curves of the trained ones (`histories`: name -> metrics.json's "history"). False: no matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.2))
    for ax, protocol in zip(axes[:2], PROTOCOLS, strict=True):
        columns = {name: ndcg_by_group(test, protocol) for name, test in tests.items()}
        group_bars(ax, columns, f"test NDCG@10, {protocol} ranking")
    learning_curves(axes[2], histories, "learning curves")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return True
