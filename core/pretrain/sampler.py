"""Co-located multi-date patches for contrastive pre-training (SeCo-style positives).

Sample ``i`` is a pure function of ``(seed, rank, i)``: a scene (chosen in proportion to its
area), two of its dates, one random window, and independent augmentations of the two views.
Resuming at step ``s`` therefore replays exactly the patches an uninterrupted run would see. Its
scene id is the place on the ground the window's centre lies in (:mod:`core.pretrain.places`), so
one large raster holds many scenes and every date of a place shares its id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from torch.utils.data import Dataset

from ..errors import PatchSizeError
from ..io.normalization import BandStats
from ..io.raster import StackReader
from .places import DEFAULT_CELL_M, place_id
from .scenes import Scene

logger = logging.getLogger(__name__)

MAX_WINDOW_TRIES = 10


class DateSource:
    """Windows of one date on its scene's grid, from memory when cached, else streamed."""

    def __init__(self, reader: StackReader, cache: bool) -> None:
        self.reader = reader
        self.height, self.width = reader.grid.height, reader.grid.width
        self._cached = reader.read_all() if cache else None

    def read(self, top: int, left: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is not None:
            x, valid = self._cached
            return x[:, top:top + size, left:left + size], valid[top:top + size, left:left + size]
        return self.reader.read(Window(left, top, size, size))


def build_sources(scenes: Sequence[Scene], bands: Sequence[str], patch_size: int,
                  cache_mb: int) -> list[list[DateSource]]:
    """Open every date of every scene, caching dates in memory while they fit in ``cache_mb``.

    Raises:
        PatchSizeError: a scene is smaller than the patch.
    """
    budget = cache_mb * 2**20
    sources = []
    for scene in scenes:
        grid = scene.grid
        if min(grid.width, grid.height) < patch_size:
            raise PatchSizeError(
                f"--patch-size {patch_size} is larger than scene '{scene.name}' ({grid.width}x{grid.height} px, "
                f"'{scene.dates[0].source}'); use --patch-size {max(16, min(grid.width, grid.height) // 16 * 16)} "
                "or leave that scene out"
            )
        row = []
        for date in scene.dates:
            nbytes = len(bands) * grid.width * grid.height * 4
            cache = nbytes <= budget
            budget -= nbytes if cache else 0
            row.append(DateSource(StackReader(date, grid, bands), cache))
        sources.append(row)
    return sources


def random_windows(sources: Sequence[Sequence[DateSource]], patch_size: int, count: int,
                   seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``count`` random windows per date (for statistics); yields (x (C, P, P), valid (P, P))."""
    rng = np.random.default_rng(seed)
    for row in sources:
        for source in row:
            for _ in range(count):
                top = int(rng.integers(0, source.height - patch_size + 1))
                left = int(rng.integers(0, source.width - patch_size + 1))
                yield source.read(top, left, patch_size)


def augment(x: np.ndarray, rng: np.random.Generator, min_scale: float = 0.5) -> torch.Tensor:
    """Random resized crop, flips, 90-degree rotations and radiometric jitter of a normalised patch.

    Args:
        x: normalised patch, (C, P, P).
        rng: the sample's generator.
        min_scale: smallest area fraction kept by the random crop.

    Returns:
        The augmented view, float32 (C, P, P).
    """
    c, size, _ = x.shape
    area = rng.uniform(min_scale, 1.0) * size * size
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    h = min(size, max(8, int(round(math.sqrt(area / aspect)))))
    w = min(size, max(8, int(round(math.sqrt(area * aspect)))))
    top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    view = torch.from_numpy(np.ascontiguousarray(x[:, top:top + h, left:left + w]))  # (C, h, w)
    view = F.interpolate(view[None], size=(size, size), mode="bilinear", align_corners=False)[0]  # (C, P, P)
    if rng.random() < 0.5:
        view = view.flip(-1)
    view = torch.rot90(view, k=int(rng.integers(0, 4)), dims=(-2, -1))
    # Radiometric jitter in normalised units: global contrast, per-band gain and offset
    # (sun angle, atmosphere and sensor differences between dates), small sensor noise.
    contrast = rng.uniform(0.8, 1.2)
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, size=(c, 1, 1)).astype(np.float32))  # (C, 1, 1)
    offset = torch.from_numpy(rng.normal(0.0, 0.1, size=(c, 1, 1)).astype(np.float32))  # (C, 1, 1)
    noise = torch.from_numpy(rng.normal(0.0, 0.02, size=view.shape).astype(np.float32))  # (C, P, P)
    return (view * contrast * gain + offset + noise).contiguous()


class ScenePairDataset(Dataset):
    """Map-style dataset of ``{"x_q", "x_k", "scene_id"}`` samples; index = global sample number."""

    def __init__(self, scenes: Sequence[Scene], sources: list[list[DateSource]], stats: BandStats,
                 patch_size: int, length: int, seed: int, rank: int = 0,
                 max_nodata_fraction: float = 0.5, cell_m: float = DEFAULT_CELL_M) -> None:
        self.scenes = list(scenes)
        self.sources = sources
        self.stats = stats
        self.patch_size = patch_size
        self.length = length
        self.seed = seed
        self.rank = rank
        self.max_nodata_fraction = max_nodata_fraction
        self.cell_m = cell_m
        areas = np.array([s.grid.width * s.grid.height for s in self.scenes], dtype=np.float64)
        self.scene_weights = areas / areas.sum()

    def __len__(self) -> int:
        return self.length

    def _window(self, rng: np.random.Generator,
                dates: Sequence[DateSource]) -> tuple[int, int, list[tuple[np.ndarray, np.ndarray]]]:
        """``(top, left, reads)`` of a window with little enough nodata in every date (else the last tried)."""
        size = self.patch_size
        top = left = 0
        reads: list[tuple[np.ndarray, np.ndarray]] = []
        for _ in range(MAX_WINDOW_TRIES):
            top = int(rng.integers(0, dates[0].height - size + 1))
            left = int(rng.integers(0, dates[0].width - size + 1))
            reads = [d.read(top, left, size) for d in dates]
            if all(1.0 - valid.mean() <= self.max_nodata_fraction for _, valid in reads):
                break
        return top, left, reads

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        rng = np.random.default_rng([self.seed, self.rank, index])
        scene_idx = int(rng.choice(len(self.scenes), p=self.scene_weights))
        row = self.sources[scene_idx]
        if len(row) >= 2:
            i, j = rng.choice(len(row), size=2, replace=False)
        else:
            i = j = 0
        top, left, ((x1, v1), (x2, v2)) = self._window(rng, [row[int(i)], row[int(j)]])
        x_q = augment(self.stats.apply(x1, v1), rng)  # (C, P, P)
        x_k = augment(self.stats.apply(x2, v2), rng)  # (C, P, P)
        centre = (top + self.patch_size / 2, left + self.patch_size / 2)
        return {"x_q": x_q, "x_k": x_k, "scene_id": place_id(self.scenes[scene_idx].grid, *centre, self.cell_m)}
