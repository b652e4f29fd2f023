"""Cloud masks of Sentinel-2 L1C dates with s2cloudless, so that clouds in one date are not mapped as change.

The detector is `s2cloudless <https://github.com/sentinel-hub/sentinel2-cloud-detector>`_ (Sentinel Hub):
a LightGBM classifier of single pixels from ten top-of-atmosphere bands (B01, B02, B04, B05, B08, B8A, B09,
B10, B11, B12), validated against nine other detectors in the CMIX intercomparison (Skakun et al., 2022) and
used for Sentinel Hub's and Earth Engine's cloud layers. It was chosen because its model ships inside the
wheel (nothing is downloaded at run time, so it works offline and in the plugin's own environment), it needs
no product metadata (angles, DEM) beyond the bands, and its dependencies (lightgbm, opencv-python-headless,
sentinelhub) install from wheels beside the project's pins; ``requirements.txt`` caps shapely and opencv so
that numpy stays below 2. The alternatives fell short of that: python-fmask is not on PyPI and needs the
product's metadata (sun and view angles); OmniCloudMask (red, green and NIR, so L2A too, and cloud shadows)
downloads its weights from Google Drive or Hugging Face at first use. s2cloudless detects clouds and cirrus,
not cloud shadows, and bright roofs or bare soil can pass its threshold (``--cloud-threshold``).

How it runs here, for one date (:func:`detect_clouds`):

* The bands are read (bilinear, :class:`~core.io.raster.StackReader`) onto a *processing grid* aligned with
  the output grid, ``factor`` output pixels per side, about 60 m (the resolution of B01/B09/B10): Sentinel
  Hub trained the model on 10 m pixels but runs it on 160 m ones, and at 10 m the classifier would cost more
  than the change model itself (0.02-0.06 Mpx/s measured on 2 shared CPU cores).
* Values become reflectance by the date's value scale (:mod:`core.io.normalization`): digital numbers are
  divided by 10000, reflectance is kept, 8-bit renderings are refused.
* The probabilities of the whole processing grid (at most 4096 px a side, a few MB) are kept, then
  s2cloudless's own post-processing makes the mask: a disk average over ``AVERAGE_OVER`` px, the threshold,
  a dilation by ``DILATION`` px (the parameters of the library's published examples). Because the mask is
  made once for the whole raster, any tiling of the detection reads the same mask: no seams.

:class:`PairClouds` holds the masks of both dates and the cloudy fractions of the pixels valid in both;
:class:`CloudMaskedReader` reads a date with the cloudy pixels of either date as nodata, so every change
method (model, features, CVA) leaves them out of its statistics and writes nodata there.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from affine import Affine
from rasterio.windows import Window

from ..errors import BandMismatchError, ConfigError, ValueScaleError
from .normalization import DN_PER_REFLECTANCE, VALUE_SCALES, scale_of_values
from .raster import DateRaster, Grid, StackReader, sample_windows
from .tiling import block_grid

logger = logging.getLogger(__name__)

CLOUD_BANDS: tuple[str, ...] = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
DEFAULT_THRESHOLD = 0.4  # S2PixelCloudDetector's default probability threshold
PROCESSING_METRES = 60.0  # the processing grid's pixel (B01, B09 and B10 are 60 m bands)
AVERAGE_OVER = 4  # px of the processing grid: disk the probabilities are averaged over
DILATION = 2  # px of the processing grid: disk the mask is dilated by
MAX_SIDE = 4096  # the processing grid is coarsened further beyond this many pixels a side
STRIP_PIXELS = 1 << 20  # processing-grid pixels classified per step
COUNT_BLOCK = 512  # output pixels a side of the blocks the cloudy fractions are counted in
OFFSET_DN = 1000.0  # processing baseline 04.00 (from 25 January 2022) adds this to every L1C digital number


@dataclass(frozen=True)
class CloudOptions:
    """How clouds are masked: the s2cloudless probability threshold and the input's value scale."""

    threshold: float = DEFAULT_THRESHOLD
    value_scale: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:  # also NaN
            raise ConfigError(f"--cloud-threshold {self.threshold} is out of range; it is a cloud probability: use "
                              f"a value between 0 and 1 (default {DEFAULT_THRESHOLD}; higher masks fewer pixels)")
        if self.value_scale != "auto" and self.value_scale not in VALUE_SCALES:
            raise ConfigError(f"--value-scale {self.value_scale!r} is unknown; use auto, {', '.join(VALUE_SCALES)}")


def check_cloud_bands(date: DateRaster) -> None:
    """Refuse a date that lacks a band s2cloudless needs, naming the raster, the missing bands and the fix.

    Raises:
        BandMismatchError: e.g. an L2A product (no B10), an RGB raster, or bands without names.
    """
    missing = [b for b in CLOUD_BANDS if b not in date.band_names]
    if not missing:
        return
    needs = (f"--mask-clouds needs the Sentinel-2 L1C bands {', '.join(CLOUD_BANDS)} (s2cloudless classifies "
             f"top-of-atmosphere reflectance)")
    if date.unnamed:
        hint = " (12 bands: perhaps an L2A product, which has no B10)" if len(date.bands) == 12 else ""
        raise BandMismatchError(
            f"{needs}, but '{date.source}' does not name its {len(date.bands)} bands{hint}: name them in file "
            "order with --assume-band-names (l1c for all 13 Sentinel-2 bands), or run without --mask-clouds")
    why = (" An L2A product has no cirrus band B10: use the L1C product of the same dates" if missing == ["B10"]
           else " Use the full L1C product (all 13 bands, e.g. a folder of *_Bxx.tif files)")
    raise BandMismatchError(f"{needs}, but '{date.source}' lacks {', '.join(missing)} (it has "
                            f"{', '.join(date.band_names)}).{why}, or run without --mask-clouds")


def reflectance_scale(date: DateRaster, declared: str = "auto") -> float:
    """The factor that turns the date's stored values into reflectance, from its value scale.

    ``auto`` reads the scale from a sample (:func:`~core.io.normalization.scale_of_values`); the choice is
    logged, and digital numbers whose cirrus band never drops below 1000 get a warning (the +1000 offset of
    processing baseline 04.00, which s2cloudless does not expect).

    Raises:
        ValueScaleError: 8-bit values, or values on no known scale.
    """
    x, valid = sample_windows(date, CLOUD_BANDS)
    values = x.transpose(1, 0, 2, 3)[:, valid]  # (10, n_valid)
    scale = scale_of_values(values) if declared == "auto" else declared
    if scale is None and values.size == 0:
        logger.warning("'%s': no valid pixel in the sample to tell its value scale; taking Sentinel-2 digital "
                       "numbers (reflectance x 10000) for cloud masking; say it with --value-scale", date.source)
        scale = "sentinel2_dn"
    if scale == "reflectance":
        factor = 1.0
    elif scale == "sentinel2_dn":
        factor = 1.0 / DN_PER_REFLECTANCE
        cirrus = values[CLOUD_BANDS.index("B10")]
        if cirrus.size and float(np.percentile(cirrus, 1)) >= OFFSET_DN:
            logger.warning("'%s': its cirrus band B10 hardly drops below %d; L1C products of processing baseline "
                           "04.00 and later (from 25 January 2022) add %d to every digital number, which "
                           "s2cloudless does not expect (it would flag nearly everything as cloud): subtract the "
                           "offset first", date.source, OFFSET_DN, OFFSET_DN)
    else:
        what = VALUE_SCALES[scale] if scale else "values on no known scale"
        raise ValueScaleError(
            f"cannot mask clouds in '{date.source}': it holds {what}, but s2cloudless needs top-of-atmosphere "
            "reflectance (Sentinel-2 L1C digital numbers or reflectance 0-1). Give the L1C bands, "
            "pass --value-scale with their scale, or run without --mask-clouds")
    logger.info("'%s': cloud masking reads it as %s%s", date.source, VALUE_SCALES[scale],
                ", divided by 10000 into reflectance" if factor != 1.0 else "")
    return factor


def pixel_metres(grid: Grid) -> float | None:
    """The grid's pixel size in metres (geometric mean of x and y), or None without a CRS."""
    if grid.crs is None:
        return None
    x, y = grid.pixel_size
    if grid.crs.is_geographic:  # degrees: metres at the grid's centre latitude
        latitude = math.radians((grid.bounds[1] + grid.bounds[3]) / 2)
        return math.sqrt(x * 111_320.0 * max(math.cos(latitude), 1e-6) * y * 110_574.0)
    try:
        return math.sqrt(x * y) * float(grid.crs.linear_units_factor[1])
    except Exception:  # a CRS without linear units: treat as unknown
        return None


def processing_factor(grid: Grid) -> int:
    """Output pixels per processing-grid pixel: about :data:`PROCESSING_METRES`, at most :data:`MAX_SIDE` a side."""
    metres = pixel_metres(grid)
    factor = max(1, round(PROCESSING_METRES / metres)) if metres else 1
    return max(factor, math.ceil(max(grid.width, grid.height) / MAX_SIDE))


def coarse_grid(grid: Grid, factor: int) -> Grid:
    """The processing grid: same CRS and origin, pixels ``factor`` times larger, covering the whole grid."""
    return Grid(grid.crs, grid.transform * Affine.scale(factor), math.ceil(grid.width / factor),
                math.ceil(grid.height / factor))


@dataclass(frozen=True)
class CloudMask:
    """Cloudy pixels of one date on the processing grid (``factor`` output pixels a side each)."""

    mask: np.ndarray  # (h_coarse, w_coarse) bool
    factor: int

    def window(self, window: Window) -> np.ndarray:
        """The (h, w) bool mask of a window of the output grid."""
        top, left = int(window.row_off), int(window.col_off)
        rows = np.arange(top, top + int(window.height)) // self.factor
        cols = np.arange(left, left + int(window.width)) // self.factor
        return self.mask[np.ix_(rows, cols)]

    @property
    def fraction(self) -> float:
        """Cloudy share of the processing grid (a quick figure; :class:`PairClouds` counts valid pixels)."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def load_detector(threshold: float) -> Any:
    """s2cloudless's detector with this module's post-processing.

    Raises:
        ConfigError: s2cloudless is not installed in this environment, with the fix.
    """
    try:
        with warnings.catch_warnings():  # its sentinelhub import warns about PROJ data it never uses here
            warnings.simplefilter("ignore")
            from s2cloudless import S2PixelCloudDetector
    except ImportError as error:
        raise ConfigError(f"--mask-clouds needs the s2cloudless package, which this environment lacks ({error}): "
                          "install the plugin's requirements.txt (the plugin's 'Set up environment' or "
                          "`python -m pip install -r requirements.txt`), or run without --mask-clouds") from error
    return S2PixelCloudDetector(threshold=threshold, average_over=AVERAGE_OVER, dilation_size=DILATION,
                                all_bands=False)


def cloud_probability(detector: Any, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """s2cloudless's cloud probability of reflectance x (10, h, w) in CLOUD_BANDS order -> (h, w), 0 where invalid."""
    probability = detector.get_cloud_probability_maps(x.transpose(1, 2, 0)[None])[0]  # (h, w)
    return np.where(valid, probability, 0.0).astype(np.float32)


def detect_clouds(date: DateRaster, grid: Grid, options: CloudOptions = CloudOptions(),
                  tick: Callable[[], None] | None = None) -> CloudMask:
    """The cloud mask of one date on ``grid`` (see the module's docstring for how).

    Args:
        date: the date, its bands named (it must have :data:`CLOUD_BANDS`).
        grid: the output grid the mask belongs to (the date is warped onto it when it differs).
        options: threshold and value scale.
        tick: called after every strip (progress; may raise to cancel).

    Raises:
        BandMismatchError, ValueScaleError, ConfigError: see :func:`check_cloud_bands`,
            :func:`reflectance_scale`, :func:`load_detector`.
    """
    check_cloud_bands(date)
    scale = reflectance_scale(date, options.value_scale)
    return _classify(date, scale, grid, processing_factor(grid), load_detector(options.threshold), tick)


def _classify(date: DateRaster, scale: float, grid: Grid, factor: int, detector: Any,
              tick: Callable[[], None] | None) -> CloudMask:
    """Probabilities of the whole processing grid, strip by strip, then s2cloudless's mask of them."""
    coarse = coarse_grid(grid, factor)
    reader = StackReader(replace(date, scale=scale), coarse, CLOUD_BANDS)
    probability = np.zeros((coarse.height, coarse.width), dtype=np.float32)  # (h_coarse, w_coarse)
    rows = max(1, STRIP_PIXELS // coarse.width)
    try:
        for top in range(0, coarse.height, rows):
            window = Window(0, top, coarse.width, min(rows, coarse.height - top))
            probability[top:top + int(window.height)] = cloud_probability(detector, *reader.read(window))
            if tick:
                tick()
    finally:
        reader.close()
    mask = detector.get_mask_from_prob(probability[None])[0].astype(bool)  # averaged, thresholded, dilated
    return CloudMask(mask, factor)


def cloud_steps(grid: Grid) -> int:
    """How many ticks :func:`detect_pair_clouds` makes for ``grid`` (strips of both dates, counting blocks)."""
    coarse = coarse_grid(grid, processing_factor(grid))
    strips = math.ceil(coarse.height / max(1, STRIP_PIXELS // coarse.width))
    return 2 * strips + len(block_grid(grid.height, grid.width, COUNT_BLOCK))


@dataclass(frozen=True)
class PairClouds:
    """The cloud masks of two dates on one grid, and how much of their shared valid area is cloudy."""

    t1: CloudMask
    t2: CloudMask
    options: CloudOptions
    valid: int  # pixels valid in both dates (before cloud masking)
    cloudy_t1: int
    cloudy_t2: int
    cloudy: int  # cloudy in either date
    resolution: str  # the processing grid's pixel, in words

    def either(self, window: Window) -> np.ndarray:
        """(h, w) bool: cloudy in t1 or t2."""
        return self.t1.window(window) | self.t2.window(window)

    def fractions(self) -> dict[str, float]:
        """The cloudy shares of the pixels valid in both dates, as the ``detect`` result reports them."""
        share = (lambda n: n / self.valid) if self.valid else (lambda n: 0.0)
        return {"cloudy_fraction_t1": share(self.cloudy_t1), "cloudy_fraction_t2": share(self.cloudy_t2),
                "cloudy_fraction": share(self.cloudy)}

    def tags(self) -> dict[str, str]:
        """GeoTIFF tags that say clouds were masked, how, and how much."""
        from importlib.metadata import version

        how = (f"s2cloudless {version('s2cloudless')}: probability > {self.options.threshold:g} on a "
               f"{self.resolution} grid, averaged over {AVERAGE_OVER} px, dilated by {DILATION} px; cloudy "
               "pixels of either date are nodata")
        return {"cloud_mask": how, **{k: f"{v:.6f}" for k, v in self.fractions().items()}}


def detect_pair_clouds(t1: DateRaster, t2: DateRaster, grid: Grid, bands: Sequence[str],
                       options: CloudOptions = CloudOptions(), tick: Callable[[], None] | None = None) -> PairClouds:
    """Cloud masks of both dates on ``grid``, and the cloudy shares of the pixels valid in both (of ``bands``).

    Both dates are checked before any pixel is classified, so a missing band stops the run at once.

    Raises:
        BandMismatchError, ValueScaleError, ConfigError: see :func:`detect_clouds`.
    """
    for date in (t1, t2):
        check_cloud_bands(date)
    scales = [reflectance_scale(date, options.value_scale) for date in (t1, t2)]
    detector, factor = load_detector(options.threshold), processing_factor(grid)
    masks = [_classify(date, scale, grid, factor, detector, tick) for date, scale in zip((t1, t2), scales)]
    valid = cloudy_t1 = cloudy_t2 = cloudy = 0
    readers = StackReader(t1, grid, bands), StackReader(t2, grid, bands)
    try:
        for block in block_grid(grid.height, grid.width, COUNT_BLOCK):
            window = Window(block.col, block.row, block.width, block.height)
            ok = readers[0].read(window)[1] & readers[1].read(window)[1]  # (h, w)
            c1, c2 = masks[0].window(window) & ok, masks[1].window(window) & ok
            valid += int(ok.sum())
            cloudy_t1, cloudy_t2 = cloudy_t1 + int(c1.sum()), cloudy_t2 + int(c2.sum())
            cloudy += int((c1 | c2).sum())
            if tick:
                tick()
    finally:
        for reader in readers:
            reader.close()
    metres = pixel_metres(grid)
    resolution = f"{factor * metres:.0f} m" if metres else f"{factor} x {factor} output pixel"
    return PairClouds(masks[0], masks[1], options, valid, cloudy_t1, cloudy_t2, cloudy, resolution)


class CloudMaskedReader(StackReader):
    """A :class:`StackReader` whose windows have the cloudy pixels of either date as nodata (zero, not valid)."""

    def __init__(self, date: DateRaster, grid: Grid, bands: Sequence[str], clouds: PairClouds) -> None:
        super().__init__(date, grid, bands)
        self.clouds = clouds

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        x, valid = super().read(window)  # (C, h, w), (h, w)
        cloudy = self.clouds.either(window)  # (h, w)
        x[:, cloudy] = 0.0
        return x, valid & ~cloudy
