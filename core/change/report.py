"""Pictures and Markdown for change-detection results: people look at change maps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..checkpoint import save_png
from .metrics import ChangeCounts

RGB = ("B04", "B03", "B02")


def rgb_preview(x: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1], 2-98 % stretch of B04/B03/B02 (else the first three bands)."""
    index = [list(bands).index(b) for b in RGB] if all(b in bands for b in RGB) else [0, 1, 2][: x.shape[0]]
    rgb = np.stack([x[i] for i in index] + [x[index[-1]]] * (3 - len(index)), axis=-1).astype(np.float32)
    low, high = np.percentile(rgb, 2), np.percentile(rgb, 98)
    return np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)


def save_comparison(path: Path, title: str, t1: np.ndarray, t2: np.ndarray, label: np.ndarray | None,
                    prediction: np.ndarray) -> None:
    """t1 | t2 | label | prediction side by side (label/prediction: 1 change, 0 none, 255 ignore)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("t1", t1), ("t2", t2)]
    if label is not None:
        panels.append(("label", _mask_rgb(label)))
    panels.append(("prediction", _mask_rgb(prediction)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), dpi=110)
    for ax, (name, image) in zip(axes, panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    save_png(path, fig)


def _mask_rgb(mask: np.ndarray) -> np.ndarray:
    rgb = np.zeros((*mask.shape, 3), dtype=np.float32)
    rgb[mask == 1] = (0.9, 0.12, 0.12)
    rgb[mask == 255] = (0.5, 0.5, 0.5)
    return rgb


def markdown_report(title: str, rows: Sequence[tuple[str, ChangeCounts]], total: ChangeCounts,
                    notes: Sequence[str] = ()) -> str:
    """A Markdown table of per-city and pooled precision, recall, F1 and IoU."""
    lines = [f"# {title}", "", *notes, "", "| city | precision | recall | F1 | IoU | changed pixels |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, c in [*rows, ("**pooled**", total)]:
        s = c.scores()
        lines.append(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['iou']:.3f} | "
                     f"{s['changed_fraction']:.2%} |")
    return "\n".join(lines) + "\n"
