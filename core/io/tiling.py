"""Where tiles go: pure integer functions over raster sizes, testable without files.

Streaming inference reads, predicts and writes one tile at a time. Tiles overlap by ``overlap``
pixels and their predictions are blended with :func:`blend_weights`, a taper that is 1 in the
tile's core and falls towards its edges, so seams vanish while memory stays one tile deep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A window of the raster: top-left corner and size, in pixels."""

    row: int
    col: int
    height: int
    width: int


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` that cover ``length`` with at least ``overlap`` overlap.

    The last tile is shifted back to end exactly at ``length`` (no padding past the raster) unless
    the raster is shorter than one tile.

    Raises:
        ValueError: ``overlap`` is negative or not smaller than ``tile``.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be in [0, tile={tile})")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Row-major tiles covering a ``height`` x ``width`` raster (edge tiles clipped to the raster)."""
    return [
        Tile(row, col, min(tile, height - row), min(tile, width - col))
        for row in tile_starts(height, tile, overlap)
        for col in tile_starts(width, tile, overlap)
    ]


def block_grid(height: int, width: int, block: int) -> list[Tile]:
    """Row-major non-overlapping blocks (edge blocks smaller): every pixel in exactly one block.

    For per-pixel work (statistics, thresholds, CVA) where overlap would count pixels twice.
    """
    return [
        Tile(row, col, min(block, height - row), min(block, width - col))
        for row in range(0, height, block)
        for col in range(0, width, block)
    ]


def blend_weights(height: int, width: int, overlap: int, floor: float = 1e-3) -> np.ndarray:
    """A (height, width) float32 taper: 1 inside, a linear ramp over ``overlap`` pixels at the edges.

    ``floor`` keeps edge pixels that no other tile covers (the raster's own border) from getting
    zero weight; the caller divides the weighted sum by the summed weights.
    """
    def ramp(n: int) -> np.ndarray:
        if overlap == 0:
            return np.ones(n, dtype=np.float32)
        i = np.arange(n, dtype=np.float32)
        edge = np.minimum(i + 0.5, n - i - 0.5) / overlap  # distance to the nearer edge, in overlaps
        return np.clip(edge, floor, 1.0).astype(np.float32)

    return np.outer(ramp(height), ramp(width))  # (height, width)
