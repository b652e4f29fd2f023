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


class BandMoments:
    """Running per-band sums over valid pixels, for exact mean and std of data seen in pieces."""

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels, dtype=np.float64)
        self.total_sq = np.zeros(channels, dtype=np.float64)
        self.count = 0

    def add(self, x: np.ndarray, valid: np.ndarray) -> None:
        """Accumulate the valid pixels of x (C, h, w); valid is (h, w)."""
        values = x[:, valid].astype(np.float64)  # (C, n_valid)
        self.total += values.sum(axis=1)
        self.total_sq += (values**2).sum(axis=1)
        self.count += values.shape[1]

    def mean_std(self, what: str = "the rasters") -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), each (C,); a constant band gets std 1 (centred, not blown up).

        Raises:
            NoDataError: no valid pixel was seen.
        """
        if self.count == 0:
            raise NoDataError(f"no valid pixel found in {what}; check that they overlap and their nodata values")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - mean**2, 0.0))
        return mean, np.where(std > 1e-6, std, 1.0)


def estimate_band_stats(bands: Iterable[str], samples: Iterable[tuple[np.ndarray, np.ndarray]]) -> BandStats:
    """Mean and std per band over the valid pixels of (x (C, h, w), valid (h, w)) samples.

    Raises:
        NoDataError: no sample holds a valid pixel.
    """
    bands = tuple(bands)
    moments = BandMoments(len(bands))
    for x, valid in samples:
        moments.add(x, valid)
    mean, std = moments.mean_std("the training windows")
    return BandStats(bands, tuple(mean.tolist()), tuple(std.tolist()))
