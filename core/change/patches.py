"""Labelled change patches from OSCD cities for fine-tuning change detection.

Cities are small (a few hundred pixels a side), so each is read once onto its B02 grid,
normalised with the model's band statistics and kept in memory. Sample ``i`` is a pure function of
``(seed, i)``: a city (in proportion to its area), a window that is centred on a changed pixel
with probability ``change_share`` (changes cover only 0.3-4 % of the pixels), and the same random
flip and rotation applied to t1, t2 and the mask; optionally a random gain and offset per band and
date (``jitter``), so that radiometric differences alone do not look like change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import PatchSizeError
from ..io.normalization import BandStats
from ..io.raster import StackReader
from .matching import match_dates
from .oscd import OscdCity, read_change_mask

IGNORE = 255


@dataclass
class CityStack:
    """One city in memory: normalised dates (C, H, W) and the mask (H, W; 0, 1 or 255 = ignore); ``stable``: the
    pixels a model's stable-cover rules give probability 0 (:mod:`~core.change.stable_cover`), if it has any."""

    name: str
    x1: np.ndarray
    x2: np.ndarray
    label: np.ndarray
    stable: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.label.shape[0], self.label.shape[1]


def read_city_pair(city: OscdCity, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw (x1, x2, valid) of a city on the B02 grid of ``imgs_1`` (t2 warped when needed)."""
    t1, t2 = city.dates()
    x1, v1 = StackReader(t1, t1.grid, bands).read_all()
    x2, v2 = StackReader(t2, t1.grid, bands).read_all()
    return x1, x2, v1 & v2


def normalised_pair(city: OscdCity, bands: Sequence[str], stats: BandStats,
                    match: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x1, x2, valid) of a city as a change model sees them: ``match``: t2 mapped onto t1's distribution
    (:mod:`~core.change.matching`), then both normalised (invalid pixels 0)."""
    x1, x2, valid = read_city_pair(city, bands)
    if match:
        x2 = match_dates(x1, x2, valid).apply(x2)
    return stats.apply(x1, valid), stats.apply(x2, valid), valid


def load_city(city: OscdCity, bands: Sequence[str], stats: BandStats, match: bool = False) -> CityStack:
    """Read, normalise (see :func:`normalised_pair`) and label one city; pixels invalid in either date are
    ignored."""
    x1, x2, valid = normalised_pair(city, bands, stats, match)
    label = read_change_mask(city, *valid.shape)
    label[~valid] = IGNORE
    return CityStack(city.name, x1, x2, label)


def split_rows(city: CityStack, val_fraction: float) -> tuple[CityStack, CityStack]:
    """The top rows of a city for training, the bottom ``val_fraction`` of its rows for validation.

    A spatial hold-out: validation pixels never appear in a training patch, so the step and
    threshold are chosen on unseen ground from the same cities as the training data.
    """
    cut = int(round(city.shape[0] * (1.0 - val_fraction)))
    top, bottom = (slice(None), slice(0, cut)), (slice(None), slice(cut, None))
    return (CityStack(city.name, city.x1[top], city.x2[top], city.label[:cut]),
            CityStack(f"{city.name} (bottom {val_fraction:.0%})", city.x1[bottom], city.x2[bottom], city.label[cut:]))


def _augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    k, flip = int(rng.integers(0, 4)), rng.random() < 0.5
    out = []
    for a in arrays:
        a = np.rot90(a, k=k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def _jitter(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A random gain and offset per band of one normalised date (C, h, w): the radiometric differences
    between dates, sensors and cities that are not change."""
    gain = 1.0 + strength * rng.standard_normal((x.shape[0], 1, 1))
    offset = strength * rng.standard_normal((x.shape[0], 1, 1))
    return (x * gain + offset).astype(np.float32)


class ChangePatchDataset(Dataset):
    """Map-style dataset of ``{"x1", "x2", "label"}`` patches (label float: 0, 1, or 255 = ignore)."""

    def __init__(self, cities: Sequence[CityStack], patch_size: int, length: int, seed: int = 0,
                 change_share: float = 0.5, jitter: float = 0.0) -> None:
        for city in cities:
            if min(city.shape) < patch_size:
                raise PatchSizeError(f"--patch-size {patch_size} is larger than city '{city.name}' "
                                     f"({city.shape[1]}x{city.shape[0]} px); use a smaller --patch-size")
        self.cities = list(cities)
        self.patch_size = patch_size
        self.length = length
        self.seed = seed
        self.change_share = change_share
        self.jitter = jitter
        areas = np.array([c.shape[0] * c.shape[1] for c in self.cities], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.changed = [np.argwhere(c.label == 1) for c in self.cities]  # (n_changed, 2) each

    def __len__(self) -> int:
        return self.length

    def _corner(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        h, w = self.cities[index].shape
        size = self.patch_size
        changed = self.changed[index]
        if len(changed) and rng.random() < self.change_share:
            row, col = changed[int(rng.integers(0, len(changed)))]
            top = int(np.clip(row - rng.integers(0, size), 0, h - size))
            left = int(np.clip(col - rng.integers(0, size), 0, w - size))
            return top, left
        return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        index = int(rng.choice(len(self.cities), p=self.weights))
        city = self.cities[index]
        top, left = self._corner(index, rng)
        window = (slice(top, top + self.patch_size), slice(left, left + self.patch_size))
        x1, x2, label = _augment([city.x1[(slice(None), *window)], city.x2[(slice(None), *window)],
                                  city.label[window]], rng)
        if self.jitter > 0:
            x1, x2 = _jitter(x1, self.jitter, rng), _jitter(x2, self.jitter, rng)
        return {"x1": torch.from_numpy(x1), "x2": torch.from_numpy(x2),
                "label": torch.from_numpy(label.astype(np.float32))}
