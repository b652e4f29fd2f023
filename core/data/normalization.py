"""Per-band normalisation statistics, estimated from the training data and saved with the model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import NoDataError


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation of every band, in model band order."""

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"bands": list(self.bands), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> BandStats:
        return cls(tuple(data["bands"]), tuple(map(float, data["mean"])), tuple(map(float, data["std"])))

    def apply(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Normalise a (C, h, w) array; invalid pixels become 0 (the band mean)."""
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]  # (C, 1, 1)
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]  # (C, 1, 1)
        return np.where(valid[None], (x - mean) / std, 0.0).astype(np.float32)  # (C, h, w)


def estimate_band_stats(bands: Iterable[str], samples: Iterable[tuple[np.ndarray, np.ndarray]]) -> BandStats:
    """Mean and std per band over the valid pixels of (x (C, h, w), valid (h, w)) samples.

    Raises:
        NoDataError: no sample holds a valid pixel.
    """
    bands = tuple(bands)
    total = np.zeros(len(bands), dtype=np.float64)
    total_sq = np.zeros(len(bands), dtype=np.float64)
    count = 0
    for x, valid in samples:
        values = x[:, valid].astype(np.float64)  # (C, n_valid)
        total += values.sum(axis=1)
        total_sq += (values**2).sum(axis=1)
        count += values.shape[1]
    if count == 0:
        raise NoDataError("no valid pixel found while estimating band statistics; check the rasters' nodata")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant band is centred, not blown up
    return BandStats(bands, tuple(mean.tolist()), tuple(std.tolist()))
