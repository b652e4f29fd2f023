"""Change without labels: change vector analysis (CVA) and Otsu's automatic threshold.

The array functions are the method (:func:`cva_magnitude`, :func:`otsu_threshold`); :func:`detect_cva`
streams it over a raster pair tile by tile into GeoTIFFs, on bands standardised per date with the exact
moments of the pixels both dates share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from ..io.normalization import BandMoments
from ..io.raster import StackReader
from ..io.tiling import Tile, block_grid
from ..io.writer import AtomicGeoTiff, OutputGroup
from .pair import (
    MASK_NODATA,
    OTSU_SAMPLES,
    DetectResult,
    Progress,
    RasterPair,
    ShouldStop,
    Ticker,
    change_mask,
    check_pair_outputs,
    mask_geotiff,
)

logger = logging.getLogger(__name__)


def standardise(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Z-score every band of (C, H, W) over its valid pixels (each date on its own scale)."""
    values = x[:, valid]  # (C, n_valid)
    mean = values.mean(axis=1)[:, None, None]
    std = values.std(axis=1)[:, None, None]
    return (x - mean) / np.where(std > 1e-6, std, 1.0)


def cva_magnitude(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Length of the change vector between two standardised (C, H, W) stacks -> (H, W)."""
    return np.sqrt(((x2 - x1) ** 2).sum(axis=0))


def cva_change(x1: np.ndarray, x2: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float]:
    """Classic CVA of two (C, H, W) stacks: the (H, W) magnitude and its Otsu threshold over valid pixels."""
    magnitude = cva_magnitude(standardise(x1, valid), standardise(x2, valid))  # (H, W)
    return magnitude, otsu_threshold(magnitude[valid])


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` (Otsu, 1979)."""
    values = values[np.isfinite(values)]
    hist, edges = np.histogram(values, bins=bins)
    return otsu_from_histogram(hist, edges)


def otsu_from_histogram(hist: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's threshold from a histogram (so it can be accumulated tile by tile)."""
    centres = (edges[:-1] + edges[1:]) / 2
    weight = hist.astype(np.float64)
    w0 = np.cumsum(weight)  # pixels at or below each bin
    w1 = w0[-1] - w0
    m0 = np.cumsum(weight * centres) / np.maximum(w0, 1e-12)
    m1 = (np.sum(weight * centres) - np.cumsum(weight * centres)) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _tiles(pair: RasterPair, tile: int) -> Iterator[tuple[Tile, Window]]:
    for t in block_grid(pair.grid.height, pair.grid.width, tile):
        yield t, Window(t.col, t.row, t.width, t.height)


def joint_band_moments(readers: tuple[StackReader, StackReader], tiles: list[tuple[Tile, Window]],
                       tick: Callable[[], None]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Exact per-band mean and std of each date over the pixels valid in both, streamed tile by tile.

    Returns:
        ``((mean_1, std_1), (mean_2, std_2))``, each (C, 1, 1).
    """
    moments = (BandMoments(len(readers[0].refs)), BandMoments(len(readers[1].refs)))
    for _, window in tiles:
        (x1, v1), (x2, v2) = readers[0].read(window), readers[1].read(window)
        moments[0].add(x1, v1 & v2)
        moments[1].add(x2, v1 & v2)
        tick()
    what = f"the overlap of '{readers[0].date.source}' and '{readers[1].date.source}'"
    return tuple((mean[:, None, None], std[:, None, None]) for mean, std in (m.mean_std(what) for m in moments))


def _magnitude(readers: tuple[StackReader, StackReader], window: Window,
               moments: tuple[tuple[np.ndarray, np.ndarray], ...]) -> np.ndarray:
    """CVA magnitude of one window on bands standardised per date, NaN where either date is invalid."""
    (x1, v1), (x2, v2) = readers[0].read(window), readers[1].read(window)
    (m1, s1), (m2, s2) = moments
    magnitude = cva_magnitude((x1 - m1) / s1, (x2 - m2) / s2)  # (h, w)
    return np.where(v1 & v2, magnitude, np.nan).astype(np.float32)


def detect_cva(pair: RasterPair, out: str | Path, score_out: str | Path | None = None, tile: int = 512,
               threshold: float | None = None, progress: Progress | None = None,
               should_stop: ShouldStop | None = None) -> DetectResult:
    """Change vector analysis, streamed in up to three passes: joint band moments, magnitudes (and a
    sample for Otsu's threshold; skipped when a threshold is given and no score asked for), the mask.

    Args:
        pair: the two dates (see :func:`open_pair`).
        out: change mask GeoTIFF (uint8: 0 no change, 1 change, 255 nodata; with a colour table).
        score_out: optional float32 GeoTIFF of the change magnitude (NaN nodata).
        tile: tile side in pixels.
        threshold: magnitude threshold; None chooses Otsu's over (a sample of) the valid pixels.
        progress: called with (fraction, message).
        should_stop: polled every tile; True raises :class:`Cancelled` and leaves no output.

    Returns:
        Paths, the threshold used, the changed share of valid pixels, whether t2 was warped, speed.

    Raises:
        OutputError: an output cannot be written. NoDataError: the dates share no valid pixel.
        Cancelled: ``should_stop`` said so; no output exists.
    """
    started = time.perf_counter()
    out, score_path = check_pair_outputs(pair, out, score_out)
    tiles = list(_tiles(pair, tile))
    second_pass = threshold is None or score_path is not None
    ticker = Ticker(progress, should_stop, (2 + second_pass) * len(tiles))
    readers = pair.readers()
    moments = joint_band_moments(readers, tiles, ticker("band statistics"))
    grid = pair.grid
    with OutputGroup() as outputs:  # both files appear together, or neither
        if second_pass:
            score = (outputs.add(AtomicGeoTiff(score_path, grid, 1, "float32", float("nan"),
                                               descriptions=["CVA change magnitude"], tags=pair.tags()))
                     if score_path else None)
            keep = min(1.0, OTSU_SAMPLES / (grid.width * grid.height))
            rng = np.random.default_rng(0)
            samples: list[np.ndarray] = []
            tick = ticker("change magnitude")
            for _, window in tiles:
                magnitude = _magnitude(readers, window, moments)
                if score is not None:
                    score.write(magnitude, window)
                values = magnitude[np.isfinite(magnitude)]
                samples.append(values[rng.random(values.size) < keep])
                tick()
            if threshold is None:
                threshold = otsu_threshold(np.concatenate(samples))
        assert threshold is not None
        mask_tif = outputs.add(mask_geotiff(out, grid, {"method": "cva", "threshold": f"{threshold:.6g}",
                                                          **pair.tags()}))
        changed = valid = 0
        tick = ticker("change mask")
        for _, window in tiles:
            magnitude = _magnitude(readers, window, moments)
            mask = change_mask(magnitude, threshold)
            changed += int(np.count_nonzero(mask == 1))
            valid += int(np.count_nonzero(mask != MASK_NODATA))
            mask_tif.write(mask, window)
            tick()
    seconds = time.perf_counter() - started
    logger.info("CVA: threshold %.4g, %.2f %% of valid pixels changed, %.1f s", threshold,
                100 * changed / max(1, valid), seconds)
    return DetectResult(out, score_path, float(threshold), changed / max(1, valid), pair.warped,
                        grid.width * grid.height / 1e6 / seconds)
