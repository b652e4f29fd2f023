"""Network outputs over a whole raster, streamed strip by strip and blended where tiles overlap.

Tiles overlap by ``overlap`` pixels and their outputs are blended with a taper
(:func:`~core.io.tiling.blend_weights`). Tiles are visited row of tiles by row of tiles; a
buffer one tile high holds the weighted sums, and rows no later tile can touch are handed on and
dropped, so memory is about ``channels x tile x width`` whatever the raster's height. Change
detection blends one score per pixel; land-cover mapping blends one probability per class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby

import numpy as np
from rasterio.windows import Window

from .tiling import Tile, blend_weights, tile_grid

#: tiles of one batch -> (outputs (n, K, t, t) or (n, K, 1, 1) broadcast over the tile, valid (n, t, t))
PredictTiles = Callable[[list[Tile]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Tiling:
    """How a raster is cut for a network: tile side, overlap, tiles per forward pass."""

    tile: int = 256
    overlap: int = 32
    batch_size: int = 8

    def fitted(self, height: int, width: int) -> tuple[int, int, list[Tile]]:
        """Tile side and overlap clamped to the raster (every tile full size: one batch shape), and the tiles."""
        tile = min(self.tile, height, width)
        overlap = min(self.overlap, tile // 2)
        return tile, overlap, tile_grid(height, width, tile, overlap)


def stream_blended(height: int, width: int, channels: int, tiling: Tiling, predict: PredictTiles,
                   tick: Callable[[], None]) -> Iterator[tuple[Window, np.ndarray]]:
    """Blended outputs of the whole raster, strip by strip: ``(window of full rows, (K, h, width))``.

    Args:
        height, width: the raster's size.
        channels: K, outputs per pixel.
        tiling: tile side, overlap and batch size.
        predict: reads and predicts a batch of tiles (of one row of tiles); pixels it marks invalid
            in every tile covering them are NaN in the output.
        tick: called after every tile (progress; may raise to cancel).
    """
    tile, overlap, tiles = tiling.fitted(height, width)
    w = blend_weights(tile, tile, overlap)  # (tile, tile)
    strip_top = 0
    total = np.zeros((channels, tile, width), dtype=np.float32)  # weighted sums of the current strip
    weight = np.zeros((tile, width), dtype=np.float32)
    valid = np.zeros((tile, width), dtype=bool)

    def final_rows(rows: int) -> tuple[Window, np.ndarray]:
        out = total[:, :rows] / np.maximum(weight[:rows], 1e-12)  # (K, rows, width)
        return Window(0, strip_top, width, rows), np.where(valid[:rows], out, np.nan).astype(np.float32)

    for _, group in groupby(tiles, key=lambda t: t.row):
        row_tiles = list(group)
        top = row_tiles[0].row
        if top > strip_top:  # rows above `top` are final: hand them on, shift the buffers up
            shift = top - strip_top
            yield final_rows(shift)
            for buffer in (total, weight, valid):
                buffer[..., :-shift, :] = buffer[..., shift:, :].copy()
                buffer[..., -shift:, :] = 0
            strip_top = top
        for start in range(0, len(row_tiles), tiling.batch_size):
            batch = row_tiles[start:start + tiling.batch_size]
            outputs, oks = predict(batch)
            for t, out, ok in zip(batch, outputs, oks):
                r, c = t.row - strip_top, t.col
                total[:, r:r + t.height, c:c + t.width] += out * w
                weight[r:r + t.height, c:c + t.width] += w
                valid[r:r + t.height, c:c + t.width] |= ok
                tick()
    yield final_rows(height - strip_top)  # the last strip
