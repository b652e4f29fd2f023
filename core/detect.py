"""Change detection with a fine-tuned model, streamed strip by strip over any raster size.

Tiles overlap by ``overlap`` pixels and their probabilities are blended with a taper
(:func:`~core.data.tiling.blend_weights`). Tiles are visited row of tiles by row of tiles; a
buffer one tile high holds the weighted sums, and rows no later tile can touch are written out
and dropped, so memory is about ``tile x width`` whatever the raster's height.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from itertools import groupby
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from .data.normalization import BandStats
from .data.tiling import blend_weights, tile_grid
from .data.writer import AtomicGeoTiff, check_writable
from .device import describe_device, resolve_device
from .finetune import load_change_model
from .infer import MASK_COLORS, MASK_NODATA, DetectResult, Progress, RasterPair, ShouldStop, Ticker
from .predict import predict_batch

logger = logging.getLogger(__name__)


def detect_with_model(pair: RasterPair, model_dir: str | Path, out: str | Path,
                      probability_out: str | Path | None = None, tile: int = 256, overlap: int = 32,
                      batch_size: int = 8, threshold: float | None = None, device_name: str = "auto",
                      progress: Progress | None = None, should_stop: ShouldStop | None = None) -> DetectResult:
    """Change mask (and probability) of a raster pair with a ``swimdiff finetune-change`` model.

    Args:
        pair: the two dates, opened with the model's bands (see :func:`~core.infer.open_pair`).
        model_dir: the change model folder.
        out: change mask GeoTIFF (uint8: 0 no change, 1 change, 255 nodata; with a colour table).
        probability_out: optional float32 GeoTIFF of the change probability (NaN nodata).
        tile, overlap, batch_size: tiling and batching of the model.
        threshold: probability threshold (default: the one chosen on validation, in config.json).
        device_name: auto, cpu, cuda or cuda:N.
        progress, should_stop: progress callback and cancel poll (a cancel leaves no output).

    Raises:
        CheckpointFormatError, OutputError, Cancelled: see their messages.
    """
    started = time.perf_counter()
    out = check_writable(out, "--out")
    prob_path = check_writable(probability_out, "--probability") if probability_out else None
    device = resolve_device(device_name)
    model, config = load_change_model(model_dir, device)
    stats = BandStats.from_dict(config["normalization"])
    chosen = float(config["threshold"] if threshold is None else threshold)
    grid = pair.grid
    tile = min(tile, grid.height, grid.width)  # every tile is then full size: one batch shape
    overlap = min(overlap, tile // 2)
    tiles = tile_grid(grid.height, grid.width, tile, overlap)
    logger.info("model %s on %s: %d tiles of %d px (overlap %d), threshold %.2f", model_dir,
                describe_device(device), len(tiles), tile, overlap, chosen)
    w = blend_weights(tile, tile, overlap)  # (tile, tile): every tile is full size
    tick = Ticker(progress, should_stop, len(tiles))("change probability")
    readers = pair.readers()
    changed = valid_count = 0
    with ExitStack() as outputs:  # both files appear together, or neither
        mask_tif = outputs.enter_context(AtomicGeoTiff(
            out, grid, 1, "uint8", MASK_NODATA, descriptions=["change"], colormap=MASK_COLORS,
            tags={"method": "model", "model": str(model_dir), "threshold": f"{chosen:.4g}"}))
        prob_tif = (outputs.enter_context(AtomicGeoTiff(prob_path, grid, 1, "float32", float("nan"),
                                                        descriptions=["change probability"]))
                    if prob_path else None)
        strip_top = 0
        total = np.zeros((tile, grid.width), dtype=np.float32)  # weighted sums of the current strip
        weight = np.zeros((tile, grid.width), dtype=np.float32)
        valid = np.zeros((tile, grid.width), dtype=bool)
        rows = [list(group) for _, group in groupby(tiles, key=lambda t: t.row)]
        for row_tiles in rows:
            top = row_tiles[0].row
            if top > strip_top:  # rows above `top` are final: write them, shift the buffers up
                changed, valid_count = _flush(mask_tif, prob_tif, total, weight, valid, strip_top, top - strip_top,
                                              chosen, changed, valid_count)
                shift = top - strip_top
                for buffer in (total, weight, valid):
                    buffer[:-shift] = buffer[shift:].copy()
                    buffer[-shift:] = 0
                strip_top = top
            for start in range(0, len(row_tiles), batch_size):
                group = row_tiles[start:start + batch_size]
                x1s, x2s, oks = [], [], []
                for t in group:
                    window = Window(t.col, t.row, t.width, t.height)
                    (x1, v1), (x2, v2) = readers[0].read(window), readers[1].read(window)
                    ok = v1 & v2
                    x1s.append(stats.apply(x1, ok))
                    x2s.append(stats.apply(x2, ok))
                    oks.append(ok)
                probs = predict_batch(model, np.stack(x1s), np.stack(x2s), device, amp=True)  # (n, tile, tile)
                for t, prob, ok in zip(group, probs, oks):
                    r, c = t.row - strip_top, t.col
                    total[r:r + t.height, c:c + t.width] += prob * w
                    weight[r:r + t.height, c:c + t.width] += w
                    valid[r:r + t.height, c:c + t.width] |= ok
                    tick()
        changed, valid_count = _flush(mask_tif, prob_tif, total, weight, valid, strip_top,
                                      grid.height - strip_top, chosen, changed, valid_count)  # the last strip
    seconds = time.perf_counter() - started
    return DetectResult(out, prob_path, chosen, changed / max(1, valid_count), pair.warped,
                        grid.width * grid.height / 1e6 / seconds)


def _flush(mask_tif: AtomicGeoTiff, prob_tif: AtomicGeoTiff | None, total: np.ndarray, weight: np.ndarray,
           valid: np.ndarray, top: int, height: int, threshold: float, changed: int,
           valid_count: int) -> tuple[int, int]:
    """Write ``height`` final rows of the strip buffers at raster row ``top``; returns updated counts."""
    prob = np.where(valid[:height], total[:height] / np.maximum(weight[:height], 1e-12), np.nan)  # (height, W)
    mask = np.where(valid[:height], prob > threshold, MASK_NODATA).astype(np.uint8)
    window = Window(0, top, total.shape[1], height)
    mask_tif.write(mask, window)
    if prob_tif is not None:
        prob_tif.write(prob.astype(np.float32), window)
    return changed + int(np.count_nonzero(mask == 1)), valid_count + int(np.count_nonzero(mask != MASK_NODATA))
