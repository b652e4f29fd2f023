"""Stable vegetation is not change: pixels green at both dates get change probability 0.

The change models here learn *urban* change (the OSCD labels: new buildings, roads, cleared building
sites). On cities they never saw, most of their false alarms are fields and woods changing colour with the
seasons (docs/benchmarks.md), and a pixel that is vegetated at both dates cannot be new construction. So a
model may carry a rule: where the NDVI, ``(B08 - B04) / (B08 + B04)``, is above a cut at *both* dates, the
change probability is set to 0. Vegetation lost or gained (green at one date only) is untouched.

The cut is chosen by leave-two-cities-out cross-validation (``bench/bench_cv.py``) together with the
threshold and stored in the model's config as ``"stable_vegetation_ndvi"``; ``detect --keep-vegetation``
turns the rule off. NDVI is a band ratio, so it reads the same on digital numbers and on reflectance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIG_KEY = "stable_vegetation_ndvi"
RED, NIR = "B04", "B08"
CUTS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)  # the cuts cross-validation chooses from (and None: no rule)


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """(nir - red) / (nir + red), 0 where both are 0 or less (nodata, no light); float32."""
    red, nir = red.astype(np.float32), nir.astype(np.float32)
    total = nir + red
    return np.where(total > 0, (nir - red) / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)


@dataclass(frozen=True)
class StableVegetation:
    """The rule of one model: ``red`` and ``nir`` are channel indices of its bands, ``cut`` the NDVI cut."""

    red: int
    nir: int
    cut: float

    def mask(self, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        """True where both dates are green: (..., C, h, w) raw values twice -> (..., h, w) bool."""
        green1 = ndvi(x1[..., self.red, :, :], x1[..., self.nir, :, :]) > self.cut
        return green1 & (ndvi(x2[..., self.red, :, :], x2[..., self.nir, :, :]) > self.cut)

    def apply(self, probability: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        """``probability`` (..., h, w) with 0 where both dates are green (NaN stays NaN)."""
        return np.where(self.mask(x1, x2) & ~np.isnan(probability), 0.0, probability).astype(np.float32)


def stable_vegetation(config: dict[str, Any], bands: Sequence[str]) -> StableVegetation | None:
    """The rule a change model's ``config`` carries, for inputs with ``bands`` in this order; None when it
    carries none (or its bands lack B04 or B08, which a model with the rule always has)."""
    cut = config.get(CONFIG_KEY)
    if cut is None or RED not in bands or NIR not in bands:
        return None
    return StableVegetation(list(bands).index(RED), list(bands).index(NIR), float(cut))
