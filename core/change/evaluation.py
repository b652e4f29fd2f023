"""Scoring change detection on labelled OSCD cities: pooled metrics, a report and previews.

A model's own training cities are never pooled into its score by default: without ``--cities`` a
model is scored on the test cities its config records, else on the labelled cities it was neither
trained nor validated on; naming a training city needs ``include_training``, and every score says
which cities the model was trained on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_write_text
from ..device import resolve_device
from ..errors import ConfigError, RasterReadError
from ..io.normalization import BandStats
from ..io.output_paths import check_writable
from ..pretrain.scenes import shared_bands
from .cva import cva_change, otsu_threshold
from .default_model import change_model_dir
from .detection import load_feature_distance
from .matching import match_dates, uses_matching
from .metrics import ChangeCounts, count_changes
from .oscd import OscdCity, oscd_cities, read_change_mask
from .patches import read_city_pair
from .predict import predict_probability
from .report import markdown_report, rgb_preview, save_comparison
from .stable_cover import stable_cover
from .training import load_change_model

logger = logging.getLogger(__name__)

HELD_OUT, TRAINING, VALIDATION, PRETRAINING = "held-out", "training", "validation", "pre-training (no labels)"


@dataclass(frozen=True)
class SeenCities:
    """What a model's config records about the cities it saw.

    Attributes:
        training: cities whose labels trained the weights.
        validation: cities whose labels chose the kept step and threshold.
        pretraining: scenes whose images (never labels) the self-supervised encoder was pre-trained on.
        test: the cities its recorded test score was measured on.
    """

    training: tuple[str, ...] = ()
    validation: tuple[str, ...] = ()
    pretraining: tuple[str, ...] = ()
    test: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SeenCities:
        provenance = config.get("provenance") or {}
        pretrain = provenance.get("encoder_provenance") or (provenance if "scenes" in provenance else {})
        return cls(tuple(provenance.get("train_cities") or ()), tuple(provenance.get("val_cities") or ()),
                   tuple(s.get("name", "") for s in pretrain.get("scenes") or ()),
                   tuple((config.get("metrics") or {}).get("test_cities") or ()))

    def role(self, city: str) -> str:
        """held-out, training, validation or pre-training (no labels)."""
        for role, names in ((TRAINING, self.training), (VALIDATION, self.validation),
                            (PRETRAINING, self.pretraining)):
            if city in names:
                return role
        return HELD_OUT


@dataclass(frozen=True)
class EvaluationResult:
    """Pooled and per-city scores of one evaluation, which cities the model saw, and where its report went."""

    total: ChangeCounts
    cities: dict[str, ChangeCounts]
    report: Path | None
    seen: SeenCities = SeenCities()

    def roles(self) -> dict[str, str]:
        """Each scored city's role for the model (held-out, training, validation, pre-training)."""
        return {name: self.seen.role(name) for name in self.cities}

    @property
    def held_out(self) -> bool:
        """True when no scored city trained or validated the model."""
        return all(role in (HELD_OUT, PRETRAINING) for role in self.roles().values())

    def held_out_total(self) -> ChangeCounts | None:
        """Pooled counts over the held-out cities only (None when there is none)."""
        kept = [c for name, c in self.cities.items() if self.seen.role(name) in (HELD_OUT, PRETRAINING)]
        return sum(kept, ChangeCounts()) if kept else None

    def summary(self) -> str:
        """One line saying which cities the pooled score covers and whether it is held out."""
        roles = self.roles()
        trained = [n for n, r in roles.items() if r == TRAINING]
        validated = [n for n, r in roles.items() if r == VALIDATION]
        text = f"pooled over {len(roles)} cit{'y' if len(roles) == 1 else 'ies'} ({', '.join(roles)})"
        if trained:
            text += f", {len(trained)} of them training cities of the model ({', '.join(trained)}): NOT held out"
        if validated:
            text += f"; {', '.join(validated)} chose the model's step and threshold (validation)"
        if not trained and not validated:
            text += ", none used to train the model (held out)"
        return text

    def to_dict(self) -> dict[str, Any]:
        roles = self.roles()
        out: dict[str, Any] = {
            "pooled": self.total.scores(),
            "held_out": self.held_out,
            "pooled_over": list(self.cities),
            "training_cities": list(self.seen.training),
            "validation_cities": list(self.seen.validation),
            "cities": {k: {**v.scores(), "role": roles[k]} for k, v in self.cities.items()},
        }
        held = self.held_out_total()
        if not self.held_out and held is not None:
            out["pooled_held_out"] = held.scores()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def choose_cities(root: str | Path, cities: list[str] | None, seen: SeenCities, model_text: str,
                  include_training: bool = False) -> list[OscdCity]:
    """The labelled cities to score: never a training city of the model unless ``include_training``.

    Without ``cities``: everything labelled when ``include_training``, else the recorded test cities when
    ``root`` has them all, else the labelled cities the model was neither trained nor validated on.

    Raises:
        ConfigError: a named city trained the model, or no held-out labelled city is left.
        RasterReadError: ``root`` is not an OSCD root or a named city is missing.
    """
    if cities:
        trained = [c for c in cities if c in seen.training]
        if trained and not include_training:
            raise ConfigError(
                f"--cities: {', '.join(trained)} trained {model_text} (its training cities: "
                f"{', '.join(seen.training)}), so scores there are not held out; leave --cities empty to score "
                "its held-out cities, or pass --include-training-cities to score them anyway (labelled as such)")
        return oscd_cities(root, cities)
    labelled = oscd_cities(root, None)
    if include_training:
        return labelled
    names = [c.name for c in labelled]
    if seen.test and all(c in names for c in seen.test):
        logger.info("scoring the test cities recorded in the model's config: %s", ", ".join(seen.test))
        return oscd_cities(root, list(seen.test))
    held = [c for c in labelled if c.name not in seen.training and c.name not in seen.validation]
    if not held:
        raise RasterReadError(
            f"every labelled city in '{root}' ({', '.join(names)}) trained or validated {model_text}; add "
            "labelled cities it has not seen, or pass --include-training-cities to score them anyway")
    skipped = [n for n in names if n in seen.training or n in seen.validation]
    if skipped:
        logger.info("not scoring %s: they trained or validated the model (--include-training-cities scores them)",
                    ", ".join(skipped))
    return held


def evaluate_oscd(root: str | Path, cities: list[str] | None, model_dir: str | Path | None = None,
                  method: str = "model", report_dir: str | Path | None = None, device_name: str = "auto",
                  progress: Callable[[float, str], None] | None = None,
                  include_training: bool = False) -> EvaluationResult:
    """Score change detection on labelled OSCD cities, pooled over all their labelled pixels.

    Args:
        root: OSCD root.
        cities: labelled cities to score (default: the model's held-out cities, see :func:`choose_cities`;
            for ``cva``, all labelled ones).
        model_dir: a ``swimdiff finetune-change`` model (default: the shipped one); for ``features`` also a
            ``swimdiff pretrain`` folder.
        method: "model", "features" (encoder feature distance, Otsu threshold per city) or "cva" (the
            classic baseline, Otsu threshold per city).
        report_dir: where to write ``report.md``, ``scores.json`` and one PNG preview per city.
        device_name: auto, cpu, cuda or cuda:N.
        progress: called with (fraction, message).
        include_training: allow (and, without ``cities``, add) the model's training cities.

    Raises:
        SwimDiffError: unknown method, device or city, a training city without ``include_training``,
            an unusable model folder or report folder.
    """
    if method not in ("model", "features", "cva"):
        raise ConfigError(f"--method {method!r} is unknown; use model, features or cva")
    out = check_writable(report_dir, "--report", folder=True) if report_dir else None
    device = resolve_device(device_name)
    model: torch.nn.Module | None = None
    config: dict = {}
    if method == "model":
        model_dir = change_model_dir(model_dir)
        model, config = load_change_model(model_dir, device)
    elif method == "features":
        model_dir = change_model_dir(model_dir)
        model, config = load_feature_distance(model_dir, device)
    seen = SeenCities.from_config(config)
    chosen = choose_cities(root, cities, seen, f"model '{model_dir}'", include_training)
    per_city: dict[str, ChangeCounts] = {}
    for i, city in enumerate(chosen):
        bands = list(config["bands"]) if model is not None else shared_bands(city.dates())
        x1, x2, valid = read_city_pair(city, bands)
        label = read_change_mask(city, *valid.shape)
        label[~valid] = 255
        if model is not None:
            stats = BandStats.from_dict(config["normalization"])
            seen_x2 = match_dates(x1, x2, valid).apply(x2) if uses_matching(config) else x2
            prob = predict_probability(model, stats.apply(x1, valid), stats.apply(seen_x2, valid), device=device)
            stable = stable_cover(config, bands) if method == "model" else None
            if stable is not None:  # as detect does
                prob = stable.apply(prob, x1, x2)
            prediction = prob > (config["threshold"] if method == "model" else otsu_threshold(prob[valid]))
        else:
            magnitude, threshold = cva_change(x1, x2, valid)
            prediction = magnitude > threshold
        per_city[city.name] = count_changes(prediction, label)
        if out is not None:
            shown = np.where(valid, prediction, 255).astype(np.uint8)
            role = seen.role(city.name)
            save_comparison(out / f"{city.name}.png", f"{city.name} ({role}): F1 {per_city[city.name].f1:.3f}",
                            rgb_preview(x1, bands), rgb_preview(x2, bands), label, shown)
        if progress:
            progress((i + 1) / len(chosen), f"scored {city.name}")
    result = EvaluationResult(sum(per_city.values(), ChangeCounts()), per_city, None, seen)
    if out is not None:
        result = EvaluationResult(result.total, per_city, _write_report(out, result, method, model_dir, config),
                                  seen)
    return result


def _write_report(out: Path, result: EvaluationResult, method: str, model_dir: str | Path | None,
                  config: dict[str, Any]) -> Path:
    what = {"model": f"model `{model_dir}` (threshold {config.get('threshold')})",
            "features": f"feature distance of `{model_dir}` + Otsu", "cva": "CVA + Otsu"}[method]
    notes = [f"Method: {what}. Scores are pooled over all labelled pixels, {result.summary()}."]
    if result.seen.training:
        notes.append(f"Training cities of the model: {', '.join(result.seen.training)}.")
    held = result.held_out_total()
    if not result.held_out and held is not None:
        notes.append(f"Held-out cities only: F1 {held.f1:.3f}, IoU {held.iou:.3f}.")
    roles = result.roles()
    rows = [(name if roles[name] != TRAINING else f"{name} (training city)", c) for name, c in result.cities.items()]
    report = out / "report.md"
    atomic_write_text(report, markdown_report("Change detection on OSCD", rows, result.total, notes))
    atomic_write_text(out / "scores.json", result.to_json())
    return report
