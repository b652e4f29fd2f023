"""The loss history of a training run: CSV rows and a PNG plot."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import atomic_write_text, save_png

COLUMNS = ("step", "loss", "loss_contrastive", "loss_diffusion", "accuracy", "negatives", "lr", "seconds")


def write_csv(path: Path, rows: Sequence[dict[str, float]], columns: Sequence[str] = COLUMNS) -> None:
    """Write rows (dicts with ``columns``; pre-training's :data:`COLUMNS` by default) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def plot_losses(path: Path, rows: Sequence[dict[str, float]], title: str) -> None:
    """Plot total, contrastive and diffusion losses (and positive-pair accuracy) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for key, label in (("loss", "total"), ("loss_contrastive", "contrastive (SwM)"),
                       ("loss_diffusion", "diffusion")):
        values = [r[key] for r in rows]
        if any(values):
            ax_loss.plot(steps, values, label=label)
    if any(r.get("negatives", 0) for r in rows):  # a uniform guess over the positive and the queue
        chance = [float(np.log1p(r.get("negatives", 0))) for r in rows]
        ax_loss.plot(steps, chance, "--", color="grey", label="contrastive at chance")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(steps, [r["accuracy"] for r in rows], color="tab:green")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("own key ranked first in batch")
    ax_acc.set_ylim(0, 1)
    ax_acc.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_png(path, fig)
