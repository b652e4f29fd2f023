"""Scores of land-cover classifiers: accuracy and a confusion matrix (single-label), average
precision and micro mAP (multi-label), per-class scores. Pure numpy, checked against loop-based
references in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the precision-recall step curve, ``sum_n (R_n - R_{n-1}) P_n``.

    Thresholds are the distinct scores, from the highest down, so tied scores enter together (the
    definition scikit-learn uses).

    Args:
        scores: any shape; higher means more likely positive.
        targets: same shape, 1/True for positives.

    Returns:
        The average precision in [0, 1], or NaN when there is no positive.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()  # (M,)
    t = np.asarray(targets).ravel().astype(bool)  # (M,)
    positives = int(t.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of every distinct score  (T,)
    tp = np.cumsum(t)[last].astype(np.float64)  # (T,)
    precision = tp / (last + 1)  # (T,)
    recall = tp / positives  # (T,)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def micro_map(scores: np.ndarray, targets: np.ndarray) -> float:
    """Micro-averaged AP: one precision-recall curve over every (patch, class) pair of (N, K) arrays."""
    return average_precision(scores, targets)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class."""
    flat = np.asarray(true, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)  # (N,)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def single_label_scores(logits: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        logits: (N, K) class scores.
        y: (N,) true class indices.
        classes: the K class names.

    Returns:
        ``{"accuracy", "per_class": {name: {...}}, "confusion": K x K list}``; a per-class ratio
        without a denominator (no patch of that class, or none predicted) is None.
    """
    predicted = np.asarray(logits).argmax(axis=1)  # (N,)
    confusion = confusion_matrix(y, predicted, len(classes))  # (K, K)
    per_class: dict[str, dict[str, float | int | None]] = {}
    for k, name in enumerate(classes):
        tp, support, called = confusion[k, k], confusion[k].sum(), confusion[:, k].sum()
        precision, recall = _ratio(tp, called), _ratio(tp, support)
        f1 = _ratio(2 * tp, support + called)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
    accuracy = float(np.trace(confusion) / max(1, confusion.sum()))
    return {"accuracy": accuracy, "per_class": per_class, "confusion": confusion.tolist()}


def multi_label_scores(logits: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Micro mAP, macro mAP over classes with a positive, and per-class AP/F1 (at probability 0.5).

    Args:
        logits: (N, K) class logits (sigmoid gives probabilities).
        y: (N, K) multi-hot targets.
        classes: the K class names.

    Returns:
        ``{"micro_map", "macro_map", "per_class": {name: {...}}}``; AP is None for a class without
        a positive patch.
    """
    probability = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))  # (N, K)
    targets = np.asarray(y) > 0.5  # (N, K)
    called = probability > 0.5  # (N, K)
    per_class: dict[str, dict[str, float | int | None]] = {}
    aps = []
    for k, name in enumerate(classes):
        ap = average_precision(probability[:, k], targets[:, k])
        if not np.isnan(ap):
            aps.append(ap)
        tp = int((called[:, k] & targets[:, k]).sum())
        per_class[name] = {"ap": None if np.isnan(ap) else ap,
                           "f1": _ratio(2 * tp, int(targets[:, k].sum() + called[:, k].sum())),
                           "support": int(targets[:, k].sum())}
    micro = micro_map(probability, targets)
    return {"micro_map": None if np.isnan(micro) else micro,
            "macro_map": float(np.mean(aps)) if aps else None, "per_class": per_class}


def save_confusion_png(path: Path, confusion: np.ndarray, classes: Sequence[str], title: str) -> None:
    """A confusion matrix (rows true, columns predicted) with counts in the cells, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import save_png

    confusion = np.asarray(confusion)
    k = len(classes)
    side = min(14.0, 2.5 + 0.55 * k)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    rows = confusion.sum(axis=1, keepdims=True)
    shown = ax.imshow(confusion / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if confusion[i, j]:
                dark = confusion[i, j] / max(1, rows[i, 0]) > 0.5
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    ax.set_xticks(range(k), list(classes), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), list(classes), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    save_png(path, fig)
