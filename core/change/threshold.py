"""Re-threshold a saved change probability into a change mask, without running the model again.

``swimdiff detect --probability`` keeps the model's change probability (float32, NaN nodata). Choosing
another threshold afterwards needs only that file: it is read strip by strip and cut into the same mask
``detect`` writes (:func:`~core.change.pair.change_mask`, :func:`~core.change.pair.mask_geotiff`), with the
threshold and the source probability file in its tags. Memory follows the strip, not the raster.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..errors import ConfigError, NoDataError, RasterReadError
from ..io.output_paths import check_writable, dataset_files, refuse_inputs_as_outputs
from ..io.raster import Grid
from ..io.writer import BLOCK
from .pair import MASK_NODATA, Progress, ShouldStop, Ticker, change_mask, mask_geotiff

logger = logging.getLogger(__name__)

#: The ``method`` tag of a mask cut from a saved probability (``detect`` writes ``model``, ``features``, ``cva``).
METHOD = "threshold"


@dataclass(frozen=True)
class ThresholdResult:
    """What a re-thresholding wrote and found."""

    change: Path
    probability: Path
    threshold: float
    changed_fraction: float
    megapixels_per_second: float


def check_probability_threshold(threshold: float) -> float:
    """The threshold as a float when it is a probability (0 to 1).

    Raises:
        ConfigError: NaN, infinite or outside [0, 1]; the message names ``--threshold``, the value and the range.
    """
    value = float(threshold)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"--threshold {threshold} is out of range: it is a change probability; use 0 to 1 "
                          "(e.g. 0.3, the shipped model's validated threshold)")
    return value


def open_probability(path: str | Path) -> rasterio.DatasetReader:
    """Open a change probability raster: one band of floating-point values.

    Raises:
        RasterReadError: missing, unreadable, or not a 1-band float raster (the message says what it is).
    """
    path = Path(path)
    if not path.exists():
        raise RasterReadError(f"--probability '{path}' does not exist; check the path")
    try:
        ds = rasterio.open(path)
    except RasterioError as error:
        raise RasterReadError(f"--probability '{path}' cannot be read as a raster ({error}); give the file written "
                              "by 'swimdiff detect --probability'") from error
    if ds.count != 1 or not np.issubdtype(np.dtype(ds.dtypes[0]), np.floating):
        what = f"{ds.count} band{'s' if ds.count != 1 else ''} of {ds.dtypes[0]}"
        ds.close()
        raise RasterReadError(f"--probability '{path}' has {what}, not one band of probabilities (float); give the "
                              "file written by 'swimdiff detect --probability' (float32, 0 to 1, NaN nodata)")
    return ds


def threshold_probability(probability: str | Path, threshold: float, out: str | Path,
                          progress: Progress | None = None, should_stop: ShouldStop | None = None,
                          rows: int = BLOCK) -> ThresholdResult:
    """Cut a change mask from a saved change probability at ``threshold``: change where probability > threshold.

    Args:
        probability: a 1-band float GeoTIFF of change probability (NaN or its nodata value: no data).
        threshold: the probability threshold, 0 to 1.
        out: the change mask GeoTIFF (uint8: 0 no change, 1 change, 255 nodata; colour table; tags ``method``,
            ``threshold``, ``probability``), on the probability's grid, written atomically.
        progress, should_stop: progress callback and cancel poll (a cancel leaves no output).
        rows: rows per strip read and written.

    Returns:
        The mask, the threshold and the changed share of valid pixels.

    Raises:
        ConfigError: the threshold is not a probability.
        RasterReadError: the probability file is missing or not a 1-band float raster.
        OutputError: ``out`` is the probability file or cannot be written.
        NoDataError: the probability holds no valid pixel (nothing is written).
        Cancelled: ``should_stop`` said so (nothing is written).
    """
    started = time.perf_counter()
    chosen = check_probability_threshold(threshold)
    source = Path(probability)
    refuse_inputs_as_outputs({"--out": out}, {"--probability": dataset_files([source])})
    out = check_writable(out, "--out")
    with open_probability(source) as ds:
        grid = Grid(crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height)
        nodata = ds.nodata
        strips = range(0, grid.height, rows)
        tick = Ticker(progress, should_stop, len(strips), job="thresholding")("change mask")
        tags = {"method": METHOD, "threshold": f"{chosen:.4g}", "probability": str(source)}
        changed = valid = 0
        with mask_geotiff(out, grid, tags) as mask_tif:
            for top in strips:
                window = Window(0, top, grid.width, min(rows, grid.height - top))
                values = ds.read(1, window=window).astype(np.float32, copy=False)  # (h, W)
                if nodata is not None and not math.isnan(nodata):
                    values = np.where(values == nodata, np.float32(np.nan), values)
                mask = change_mask(values, chosen)
                mask_tif.write(mask, window)
                changed += int(np.count_nonzero(mask == 1))
                valid += int(np.count_nonzero(mask != MASK_NODATA))
                tick()
            if valid == 0:  # raised inside the block: the mask is not kept
                raise NoDataError(f"--probability '{source}' holds no valid pixel (all NaN or nodata); give the "
                                  "probability of a detection that found data")
    seconds = max(time.perf_counter() - started, 1e-9)
    fraction = changed / max(1, valid)
    logger.info("change mask %s at threshold %.4g: %.2f %% of valid pixels changed", out, chosen, 100 * fraction)
    return ThresholdResult(out, source, chosen, fraction, grid.width * grid.height / 1e6 / seconds)
