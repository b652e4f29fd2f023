"""Tiling: full coverage, bounded overlap, seamless blending."""

from __future__ import annotations

import numpy as np
import pytest

from core.io.tiling import blend_weights, block_grid, tile_grid, tile_starts


@pytest.mark.parametrize("length,tile,overlap", [(1000, 256, 32), (256, 256, 32), (100, 256, 32), (257, 256, 0),
                                                 (8192, 512, 64), (513, 256, 128)])
def test_tiles_cover_every_pixel_without_leaving_the_raster(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, dtype=int)
    for s in starts:
        assert 0 <= s and s + min(tile, length) <= length
        covered[s:s + tile] += 1
    assert covered.min() >= 1
    assert starts == sorted(set(starts))
    if len(starts) > 1:
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_overlap_must_be_smaller_than_tile() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 32, 32)


def test_tile_grid_is_row_major_and_clipped() -> None:
    tiles = tile_grid(300, 100, 256, 32)
    assert [(t.row, t.col, t.height, t.width) for t in tiles] == [(0, 0, 256, 100), (44, 0, 256, 100)]


def test_blocks_partition_the_raster() -> None:
    count = np.zeros((300, 130), dtype=int)
    for b in block_grid(300, 130, 64):
        count[b.row:b.row + b.height, b.col:b.col + b.width] += 1
    assert (count == 1).all()


def test_blending_reconstructs_a_constant_field_exactly() -> None:
    height, width, tile, overlap = 300, 500, 128, 32
    total = np.zeros((height, width))
    weight = np.zeros((height, width))
    for t in tile_grid(height, width, tile, overlap):
        w = blend_weights(t.height, t.width, overlap)
        total[t.row:t.row + t.height, t.col:t.col + t.width] += 7.0 * w
        weight[t.row:t.row + t.height, t.col:t.col + t.width] += w
    assert weight.min() > 0
    np.testing.assert_allclose(total / weight, 7.0, rtol=1e-6)


def test_blend_weights_taper_towards_edges() -> None:
    w = blend_weights(64, 64, 16)
    assert w[32, 32] == 1.0 and w[0, 32] < w[8, 32] < w[20, 32] == 1.0
    assert w.min() > 0
    assert (blend_weights(10, 10, 0) == 1).all()
