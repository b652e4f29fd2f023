"""Relative radiometric normalisation of a pair: t2's bands mapped linearly onto t1's distribution.

Two dates of one place differ everywhere by illumination, haze, season and processing; a change model
trained on a few cities reads such a global difference as change (pisa's bluish t2, saclay_e's hazy t1
were mapped as changed almost everywhere). Matching the dates first removes it. Per band, over the pixels
valid in both dates::

    t2' = (t2 - centre(t2)) * spread(t1) / spread(t2) + centre(t1)

with the median as centre and half the 16-84 percentile range as spread, so the few per cent of pixels that
really changed (or hold a cloud) barely move the mapping. It is estimated once per pair — from the whole
city in training, from a lattice of windows over the raster in detection — so every tile gets the same one.
A model trained with matching records ``"match_dates": true`` in its config, and every path that feeds it
(detect, evaluate, adapt) matches the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.windows import Window

from .pair import RasterPair

LOW, HIGH = 16.0, 84.0  # percentiles whose half-range is the spread (one standard deviation for a normal band)
LATTICE, WINDOW = 8, 64  # detection: LATTICE x LATTICE windows of WINDOW px
MIN_SPREAD = 1e-6


@dataclass(frozen=True)
class DateMatch:
    """Per-band gain and offset that bring t2 onto t1's distribution (identity: gain 1, offset 0)."""

    gain: np.ndarray  # (C,)
    offset: np.ndarray  # (C,)

    def apply(self, x2: np.ndarray) -> np.ndarray:
        """t2 (C, h, w) or (n, C, h, w), matched; float32."""
        shape = (-1, 1, 1)
        return (x2 * self.gain.reshape(shape) + self.offset.reshape(shape)).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"gain": [round(float(g), 5) for g in self.gain], "offset": [round(float(o), 3) for o in self.offset]}


def _centre_spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and half the 16-84 percentile range of every row of (C, n) values."""
    low, centre, high = np.percentile(values, [LOW, 50.0, HIGH], axis=1)
    return centre, np.maximum((high - low) / 2.0, MIN_SPREAD)


def match_dates(x1: np.ndarray, x2: np.ndarray, valid: np.ndarray) -> DateMatch:
    """The mapping of t2 onto t1 from (C, h, w) or (n, C, h, w) arrays and the pixels valid in both.

    Without a shared valid pixel it is the identity (there is nothing to detect anyway).
    """
    v1, v2 = (np.moveaxis(x, -3, 0)[:, valid] for x in (x1, x2))  # (C, n) each
    if v1.shape[1] == 0:
        return DateMatch(np.ones(len(v1)), np.zeros(len(v1)))
    (c1, s1), (c2, s2) = _centre_spread(v1.astype(np.float64)), _centre_spread(v2.astype(np.float64))
    gain = s1 / s2
    return DateMatch(gain, c1 - c2 * gain)


def match_pair(pair: RasterPair) -> DateMatch:
    """The mapping of a raster pair, from a lattice of windows read as detection reads them (same value scale,
    same cloud mask); the cost is bounded whatever the raster's size."""
    grid = pair.grid
    h, w = min(WINDOW, grid.height), min(WINDOW, grid.width)
    rows = dict.fromkeys(np.linspace(0, grid.height - h, LATTICE).round().astype(int).tolist())
    cols = dict.fromkeys(np.linspace(0, grid.width - w, LATTICE).round().astype(int).tolist())
    readers = pair.readers()
    x1s, x2s, oks = [], [], []
    try:
        for top in rows:
            for left in cols:
                (x1, v1), (x2, v2) = (reader.read(Window(left, top, w, h)) for reader in readers)
                x1s.append(x1)
                x2s.append(x2)
                oks.append(v1 & v2)
    finally:
        for reader in readers:
            reader.close()
    return match_dates(np.stack(x1s), np.stack(x2s), np.stack(oks))


def uses_matching(config: dict[str, Any]) -> bool:
    """Whether a change model was trained on matched dates."""
    return bool(config.get("match_dates"))
