"""Change-detection metrics: pooled confusion counts, precision, recall, F1 and IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChangeCounts:
    """Confusion counts of the change class over labelled pixels."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: ChangeCounts) -> ChangeCounts:
        return ChangeCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def iou(self) -> float:
        return self.tp / (self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else 0.0

    def scores(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "iou": self.iou,
                "changed_fraction": (self.tp + self.fn) / max(1, self.tp + self.fp + self.fn + self.tn)}


def count_changes(prediction: np.ndarray, label: np.ndarray) -> ChangeCounts:
    """Counts over pixels whose label is 0 (no change) or 1 (change); other label values are ignored.

    Args:
        prediction: bool or 0/1 array of predicted change.
        label: uint8 array, 0 no change, 1 change, anything else unlabelled.
    """
    known = label <= 1
    pred = prediction.astype(bool)[known]
    true = label[known] == 1
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred & ~true))
    fn = int(np.count_nonzero(~pred & true))
    return ChangeCounts(tp, fp, fn, int(true.size - tp - fp - fn))
