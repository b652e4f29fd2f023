"""Stable land cover is not change: pixels green at both dates, or open water at both dates, get probability 0.

The change models here learn *urban* change (the OSCD labels: new buildings, roads, cleared building sites). On
cities they never saw, most of their false alarms are fields and woods changing colour with the seasons, and rivers
changing colour with their load of silt (docs/benchmarks.md). A pixel that is vegetated at both dates, or open water
at both dates, cannot be new construction, whatever its colour did in between. So a model may carry rules, one per
kind of cover: where the cover's index is above a cut at *both* dates, the change probability is set to 0. A cover
lost or gained (present at one date only: a field built on, a reclaimed shore) is untouched.

- vegetation: the NDVI, ``(B08 - B04) / (B08 + B04)``; config key ``"stable_vegetation_ndvi"``;
- water: the modified NDWI (Xu 2006), ``(B03 - B11) / (B03 + B11)``; config key ``"stable_water_mndwi"``. It uses
  the short-wave infrared, which water absorbs even when silt makes it bright in the visible and near infrared (where
  the plain NDWI of B03 and B08 takes a muddy river for land).

The cuts are chosen by leave-two-cities-out cross-validation (``bench/bench_cv.py``) together with the threshold;
``detect --keep-vegetation`` / ``--keep-water`` turn a rule off. The indices are band ratios, so they read the same
on digital numbers and on reflectance.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Cover:
    """A land cover marked by a normalised difference ``(a - b) / (a + b)`` of two bands above a cut."""

    name: str  # as in --keep-<name>
    index: str  # the index's usual name
    a: str
    b: str
    config_key: str
    cuts: tuple[float, ...]  # the cuts cross-validation chooses from (and None: no rule)
    where: str  # "green", "open water": what the log and the panel say


VEGETATION = Cover("vegetation", "NDVI", "B08", "B04", "stable_vegetation_ndvi", (0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
                   "green")
WATER = Cover("water", "MNDWI", "B03", "B11", "stable_water_mndwi", (0.3, 0.4, 0.5, 0.6, 0.7),
              "open water")
COVERS = (VEGETATION, WATER)


def normalised_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b), 0 where both are 0 or less (nodata, no light); float32."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    total = a + b
    return np.where(total > 0, (a - b) / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)


@dataclass(frozen=True)
class StableRule:
    """One cover's rule for one model: ``a`` and ``b`` are channel indices of its bands, ``cut`` the index's cut."""

    cover: Cover
    a: int
    b: int
    cut: float

    def index(self, x: np.ndarray) -> np.ndarray:
        """The cover's index of raw values (..., C, h, w) -> (..., h, w)."""
        return normalised_difference(x[..., self.a, :, :], x[..., self.b, :, :])

    def mask(self, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        """True where the cover is there at both dates: (..., C, h, w) raw values twice -> (..., h, w) bool."""
        return (self.index(x1) > self.cut) & (self.index(x2) > self.cut)


@dataclass(frozen=True)
class StableCover:
    """The rules of one model (at least one): probability 0 where any of them holds."""

    rules: tuple[StableRule, ...]

    def mask(self, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        """True where some cover is there at both dates: (..., C, h, w) raw values twice -> (..., h, w) bool."""
        masks = [rule.mask(x1, x2) for rule in self.rules]
        return np.logical_or.reduce(masks) if len(masks) > 1 else masks[0]

    def apply(self, probability: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        """``probability`` (..., h, w) with 0 where the mask holds (NaN stays NaN)."""
        return np.where(self.mask(x1, x2) & ~np.isnan(probability), 0.0, probability).astype(np.float32)

    def tags(self) -> dict[str, str]:
        """The rules as GeoTIFF metadata: config key -> cut."""
        return {rule.cover.config_key: f"{rule.cut:g}" for rule in self.rules}

    def describe(self) -> str:
        """E.g. "green at both dates (NDVI > 0.15) or open water at both dates (MNDWI > 0.6)"."""
        return " or ".join(f"{r.cover.where} at both dates ({r.cover.index} > {r.cut:g})" for r in self.rules)


def cover_rule(cover: Cover, bands: Sequence[str], cut: float) -> StableRule | None:
    """``cover``'s rule at ``cut`` for inputs with ``bands`` in this order; None when they lack one of its bands."""
    if cover.a not in bands or cover.b not in bands:
        return None
    return StableRule(cover, list(bands).index(cover.a), list(bands).index(cover.b), float(cut))


def stable_cover(config: dict[str, Any], bands: Sequence[str], keep: Collection[str] = ()) -> StableCover | None:
    """The rules a change model's ``config`` carries, for inputs with ``bands`` in this order, less the covers
    named in ``keep`` (scored like any pixel); None when none is left (or the bands lack the rules' bands)."""
    rules = [cover_rule(c, bands, config[c.config_key]) for c in COVERS
             if c.name not in keep and config.get(c.config_key) is not None]
    kept = tuple(r for r in rules if r is not None)
    return StableCover(kept) if kept else None
