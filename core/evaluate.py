"""Scoring change detection on labelled OSCD cities: pooled metrics, a report and previews."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write_text
from .data.change_patches import read_city_pair
from .data.normalization import BandStats
from .data.oscd import oscd_cities, read_change_mask
from .data.scenes import shared_bands
from .default_model import change_model_dir
from .detect import load_feature_distance
from .device import resolve_device
from .errors import ConfigError
from .finetune import load_change_model
from .metrics import ChangeCounts, count_changes
from .predict import predict_probability
from .report import markdown_report, rgb_preview, save_comparison
from .unsupervised import cva_change, otsu_threshold


@dataclass(frozen=True)
class EvaluationResult:
    """Pooled and per-city scores of one evaluation, and where its report went."""

    total: ChangeCounts
    cities: dict[str, ChangeCounts]
    report: Path | None

    def to_json(self) -> str:
        return json.dumps({"pooled": self.total.scores(), "cities": {k: v.scores() for k, v in self.cities.items()}},
                          indent=2)


def evaluate_oscd(root: str | Path, cities: list[str] | None, model_dir: str | Path | None = None,
                  method: str = "model", report_dir: str | Path | None = None, device_name: str = "auto",
                  progress: Callable[[float, str], None] | None = None) -> EvaluationResult:
    """Score change detection on labelled OSCD cities, pooled over all their labelled pixels.

    Args:
        root: OSCD root.
        cities: labelled cities to score (default: all labelled ones).
        model_dir: a ``swimdiff finetune-change`` model (default: the shipped one); for ``features`` also a
            ``swimdiff pretrain`` folder.
        method: "model", "features" (encoder feature distance, Otsu threshold per city) or "cva" (the
            classic baseline, Otsu threshold per city).
        report_dir: where to write ``report.md``, ``scores.json`` and one PNG preview per city.
        device_name: auto, cpu, cuda or cuda:N.
        progress: called with (fraction, message).
    """
    if method not in ("model", "features", "cva"):
        raise ConfigError(f"--method {method!r} is unknown; use model, features or cva")
    device = resolve_device(device_name)
    model: torch.nn.Module | None = None
    config: dict = {}
    if method == "model":
        model_dir = change_model_dir(model_dir)
        model, config = load_change_model(model_dir, device)
    elif method == "features":
        model_dir = change_model_dir(model_dir)
        model, config = load_feature_distance(model_dir, device)
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
            prediction = prob > (config["threshold"] if method == "model" else otsu_threshold(prob[valid]))
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
    result = EvaluationResult(sum(per_city.values(), ChangeCounts()), per_city, None)
    if out is not None:
        what = {"model": f"model `{model_dir}` (threshold {config.get('threshold')})",
                "features": f"feature distance of `{model_dir}` + Otsu", "cva": "CVA + Otsu"}[method]
        report = out / "report.md"
        atomic_write_text(report, markdown_report("Change detection on OSCD", list(per_city.items()), result.total,
                                                  [f"Method: {what}. Pooled over all labelled pixels."]))
        atomic_write_text(out / "scores.json", result.to_json())
        result = EvaluationResult(result.total, per_city, report)
    return result
