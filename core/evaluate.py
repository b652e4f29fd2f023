"""Change-detection metrics: pooled confusion counts, precision, recall, F1 and IoU."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write_text


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


@dataclass(frozen=True)
class EvaluationResult:
    """Pooled and per-city scores of one evaluation, and where its report went."""

    total: ChangeCounts
    cities: dict[str, ChangeCounts]
    report: Path | None


def evaluate_oscd(root: str | Path, cities: list[str] | None, model_dir: str | Path | None = None,
                  method: str = "model", report_dir: str | Path | None = None, device_name: str = "auto",
                  progress: Callable[[float, str], None] | None = None) -> EvaluationResult:
    """Score change detection on labelled OSCD cities, pooled over all their labelled pixels.

    Args:
        root: OSCD root.
        cities: labelled cities to score (default: all labelled ones).
        model_dir: a ``swimdiff finetune-change`` model (for ``method="model"``).
        method: "model" or "cva" (the classic baseline, Otsu threshold per city).
        report_dir: where to write ``report.md``, ``scores.json`` and one PNG preview per city.
        device_name: auto, cpu, cuda or cuda:N.
        progress: called with (fraction, message).
    """
    from .data.change_patches import read_city_pair
    from .data.normalization import BandStats
    from .data.oscd import oscd_cities, read_change_mask
    from .data.scenes import shared_bands
    from .device import resolve_device
    from .errors import ConfigError
    from .finetune import load_change_model
    from .predict import predict_probability
    from .report import markdown_report, rgb_preview, save_comparison
    from .unsupervised import cva_change

    if method not in ("model", "cva"):
        raise ConfigError(f"--method {method!r} is unknown; use model or cva")
    if method == "model" and model_dir is None:
        raise ConfigError("evaluate needs --model DIR (a 'swimdiff finetune-change' folder) or --method cva")
    device = resolve_device(device_name)
    model, config = load_change_model(model_dir, device) if method == "model" else (None, {})  # type: ignore[arg-type]
    chosen = oscd_cities(root, cities)
    per_city: dict[str, ChangeCounts] = {}
    out = Path(report_dir) if report_dir else None
    for i, city in enumerate(chosen):
        bands = list(config["bands"]) if model is not None else shared_bands(city.dates())
        x1, x2, valid = read_city_pair(city, bands)
        label = read_change_mask(city, *valid.shape)
        label[~valid] = 255
        if model is not None:
            stats = BandStats.from_dict(config["normalization"])
            prob = predict_probability(model, stats.apply(x1, valid), stats.apply(x2, valid), device=device)
            prediction = prob > config["threshold"]
        else:
            magnitude, threshold = cva_change(x1, x2, valid)
            prediction = magnitude > threshold
        per_city[city.name] = count_changes(prediction, label)
        if out is not None:
            shown = np.where(valid, prediction, 255).astype(np.uint8)
            save_comparison(out / f"{city.name}.png", f"{city.name}: F1 {per_city[city.name].f1:.3f}",
                            rgb_preview(x1, bands), rgb_preview(x2, bands), label, shown)
        if progress:
            progress((i + 1) / len(chosen), f"scored {city.name}")
    total = sum(per_city.values(), ChangeCounts())
    report = None
    if out is not None:
        what = f"model `{model_dir}` (threshold {config['threshold']})" if model is not None else "CVA + Otsu"
        report = out / "report.md"
        atomic_write_text(report, markdown_report("Change detection on OSCD", list(per_city.items()), total,
                                                  [f"Method: {what}. Pooled over all labelled pixels."]))
        atomic_write_text(out / "scores.json", json.dumps(
            {"pooled": total.scores(), "cities": {k: v.scores() for k, v in per_city.items()}}, indent=2))
    return EvaluationResult(total, per_city, report)
