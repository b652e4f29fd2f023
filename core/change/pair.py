"""Two dates of one place, read on one grid: the pieces every change method shares.

Both dates are read tile by tile onto t1's reference grid (t2 is warped when its grid differs,
and the user is told); outputs keep t1's CRS and transform, are tiled and compressed, carry
nodata where either date has none, and appear only when complete. Memory follows the tile size,
not the raster size.

This module holds the pieces every change method shares (opening a pair, band mapping, masking clouds
(:func:`mask_clouds`), the mask's nodata and colours, refusing outputs that are inputs, progress/cancel
ticks); :mod:`core.change.cva` (change vector analysis) and :mod:`core.change.detection` (a fine-tuned
model, encoder features) use them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rasterio.warp import transform_bounds

from ..errors import BandMismatchError, Cancelled, ConfigError, GridMismatchError
from ..io.bands import is_positional, normalise_band_name
from ..io.clouds import CloudMaskedReader, CloudOptions, PairClouds, cloud_steps, detect_pair_clouds
from ..io.normalization import with_value_scale
from ..io.output_paths import check_writable, date_files, refuse_inputs_as_outputs
from ..io.raster import DateRaster, Grid, StackReader, open_date
from ..io.writer import AtomicGeoTiff
from ..pretrain.scenes import same_pixels, shared_bands

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]
MASK_NODATA = 255
MASK_COLORS = {0: (0, 0, 0, 0), 1: (230, 30, 30, 255)}
OTSU_SAMPLES = 2_000_000


def change_mask(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The change mask every method writes: 1 where ``scores`` is above ``threshold``, 0 elsewhere, 255 where NaN."""
    return np.where(np.isnan(scores), MASK_NODATA, scores > threshold).astype(np.uint8)


def mask_geotiff(path: Path, grid: Grid, tags: dict[str, str]) -> AtomicGeoTiff:
    """The change-mask GeoTIFF every method writes: uint8, 255 nodata, the change colour table, ``tags``."""
    return AtomicGeoTiff(path, grid, 1, "uint8", MASK_NODATA, descriptions=["change"], colormap=MASK_COLORS, tags=tags)


@dataclass(frozen=True)
class RasterPair:
    """Two dates of one place, read on t1's grid; with ``clouds`` (:func:`mask_clouds`), the cloudy pixels of
    either date read as nodata."""

    t1: DateRaster
    t2: DateRaster
    bands: list[str]
    clouds: PairClouds | None = None

    @property
    def grid(self) -> Grid:
        return self.t1.grid

    @property
    def warped(self) -> bool:
        return not self.t2.grid.same_as(self.t1.grid)

    def readers(self) -> tuple[StackReader, StackReader]:
        if self.clouds is not None:
            return (CloudMaskedReader(self.t1, self.grid, self.bands, self.clouds),
                    CloudMaskedReader(self.t2, self.grid, self.bands, self.clouds))
        return StackReader(self.t1, self.grid, self.bands), StackReader(self.t2, self.grid, self.bands)

    def tags(self) -> dict[str, str]:
        """What every output of this pair records besides its method: how clouds were masked, if they were."""
        return self.clouds.tags() if self.clouds is not None else {}


@dataclass(frozen=True)
class DetectResult:
    """What a detection run wrote and found."""

    change: Path
    score: Path | None
    threshold: float
    changed_fraction: float
    warped: bool
    megapixels_per_second: float


def _overlap(t1: Grid, t2: Grid) -> float:
    """Area share of t1 covered by t2 (bounds in t1's CRS)."""
    bounds = t2.bounds
    if t1.crs and t2.crs and t1.crs != t2.crs:
        bounds = transform_bounds(t2.crs, t1.crs, *bounds)
    left, bottom = max(t1.bounds[0], bounds[0]), max(t1.bounds[1], bounds[1])
    right, top = min(t1.bounds[2], bounds[2]), min(t1.bounds[3], bounds[3])
    area = (t1.bounds[2] - t1.bounds[0]) * (t1.bounds[3] - t1.bounds[1])
    return max(0.0, right - left) * max(0.0, top - bottom) / area


def name_by_order(date: DateRaster, bands: Sequence[str]) -> DateRaster:
    """Give a date whose bands are all unnamed (band1..bandN) the names ``bands`` when N matches.

    The mapping is a guess, so it is said on a WARNING line with the file, the names taken and
    the fix (``--assume-band-names``); dates with names (even ambiguous ones like ``B4``) are
    never renamed by order.

    Raises:
        BandMismatchError: the date lacks the bands and cannot be named by order (its count differs,
            or its names are ambiguous), with the fix.
    """
    if not bands or all(b in date.band_names for b in bands):
        return date
    if all(is_positional(n) for n in date.band_names) and len(date.bands) == len(bands):
        logger.warning("'%s' does not name its bands: taking them in order as %s. If that is not their order, "
                       "name them in file order with --assume-band-names (l2a, l1c or a list such as %s), or give "
                       "the raster band descriptions", date.source, ", ".join(bands), ",".join(bands))
        return replace(date, bands=tuple(replace(ref, name=name) for ref, name in zip(date.bands, bands)),
                       unnamed=False)
    if date.ambiguous:
        fix = (f"its names {', '.join(date.ambiguous)} may be Landsat or Sentinel-2 band numbers; if they are "
               f"Sentinel-2 bands, name them in file order with --assume-band-names (e.g. "
               f"{','.join(normalise_band_name(n) for n in date.ambiguous)})")
    elif date.unnamed:
        fix = (f"name its bands in file order with --assume-band-names (l2a, l1c or a list such as "
               f"{','.join(bands)}), or choose a raster with the model's bands")
    else:
        fix = "name the bands (band descriptions or *_Bxx.tif files) or choose a matching raster"
    raise BandMismatchError(
        f"the model expects {len(bands)} bands ({', '.join(bands)}) but '{date.source}' has {len(date.bands)} "
        f"({', '.join(date.band_names)}); {fix}"
    )


def open_pair(t1: str | Path, t2: str | Path, bands: Sequence[str] = (), assume_band_names: Sequence[str] = (),
              model_scale: str | None = None, value_scale: str = "auto") -> RasterPair:
    """Open two dates, decide which bands to compare, and put their values on the model's scale.

    Args:
        t1, t2: multi-band rasters, band folders or single ``*_Bxx.tif`` band files.
        bands: the bands wanted (e.g. a model's); unnamed bands are mapped by order when counts match.
        assume_band_names: names for unnamed bands, in file order (``--assume-band-names``).
        model_scale: the model's value scale (None: no model, e.g. CVA; values are used as they are).
        value_scale: ``auto`` detects each date's scale from a sample, else the scale declared for both.

    Raises:
        RasterReadError, BandMismatchError: unreadable rasters, or no band mapping between them.
        GridMismatchError: the rasters do not overlap.
        ConfigError: t1 and t2 are the same raster (same files, or the same pixels).
        ValueScaleError: a date's values do not fit the model's scale and cannot be converted.
    """
    d1 = name_by_order(open_date(t1, assume_band_names), bands)
    d2 = name_by_order(open_date(t2, assume_band_names), bands)
    pair = RasterPair(d1, d2, shared_bands([d1, d2], bands))
    if _overlap(d1.grid, d2.grid) == 0.0:
        raise GridMismatchError(
            f"--t2 '{d2.source}' does not overlap --t1 '{d1.source}' (bounds {d2.grid.bounds} vs {d1.grid.bounds}); "
            "give two rasters of the same place"
        )
    if same_pixels(d1, d2, pair.bands):
        raise ConfigError(
            f"--t1 '{d1.source}' and --t2 '{d2.source}' are the same raster (the same files or the same pixels): "
            "nothing can have changed; give two acquisitions of the place at different dates"
        )
    if model_scale is not None:
        pair = replace(pair, t1=with_value_scale(d1, pair.bands, model_scale, value_scale),
                       t2=with_value_scale(d2, pair.bands, model_scale, value_scale))
    if pair.warped:
        logger.warning("'%s' is not on the grid of '%s': it is warped onto it (bilinear)", d2.source, d1.source)
    return pair


def mask_clouds(pair: RasterPair, options: CloudOptions | None = None, progress: Progress | None = None,
                should_stop: ShouldStop | None = None) -> RasterPair:
    """The pair with the cloudy pixels of either date as nodata (s2cloudless; see :mod:`core.io.clouds`).

    Args:
        pair: the two dates (see :func:`open_pair`).
        options: threshold and value scale (default: s2cloudless's threshold, the scale read from the values).
        progress, should_stop: progress callback and cancel poll.

    Raises:
        BandMismatchError: a date lacks an L1C band s2cloudless needs (e.g. an L2A product without B10).
        ValueScaleError, ConfigError: values that are no reflectance, or s2cloudless missing.
        Cancelled: ``should_stop`` said so.
    """
    started = time.perf_counter()
    options = options or CloudOptions()
    ticker = Ticker(progress, should_stop, cloud_steps(pair.grid), job="cloud masking")
    clouds = detect_pair_clouds(pair.t1, pair.t2, pair.grid, pair.bands, options, ticker("cloud mask"))
    fractions = clouds.fractions()
    logger.info("clouds (s2cloudless, threshold %.2f, %s grid): %.2f %% of the valid pixels in t1, %.2f %% in t2, "
                "%.2f %% in either, %.1f s; they are nodata in the outputs", options.threshold, clouds.resolution,
                100 * fractions["cloudy_fraction_t1"], 100 * fractions["cloudy_fraction_t2"],
                100 * fractions["cloudy_fraction"], time.perf_counter() - started)
    return replace(pair, clouds=clouds)


def check_pair_outputs(pair: RasterPair, out: str | Path, second: str | Path | None,
                       second_option: str = "--probability") -> tuple[Path, Path | None]:
    """Check a change method's two outputs before any work: neither is a file of either date (every band file,
    a VRT's sources) or the other output (:func:`~core.io.output_paths.refuse_inputs_as_outputs`), and both
    can be written (:func:`~core.io.output_paths.check_writable`).

    Raises:
        OutputError: naming the option, the file and the fix.
    """
    refuse_inputs_as_outputs({"--out": out, second_option: second},
                             {"--t1": date_files(pair.t1), "--t2": date_files(pair.t2)})
    return check_writable(out, "--out"), check_writable(second, second_option) if second else None


class Ticker:
    """Counts finished tiles across passes: reports progress and honours cancel requests."""

    def __init__(self, progress: Progress | None, should_stop: ShouldStop | None, total: int,
                 job: str = "detection") -> None:
        self.progress, self.should_stop, self.total, self.done = progress, should_stop, max(1, total), 0
        self.job = job

    def __call__(self, message: str) -> Callable[[], None]:
        def tick() -> None:
            if self.should_stop and self.should_stop():
                raise Cancelled(f"{self.job} cancelled; no output was written")
            self.done += 1
            if self.progress:
                self.progress(self.done / self.total, message)
        return tick
