"""Per-band normalisation statistics, estimated from the training data and saved with the model,
and the value scale they belong to.

A model only understands values on the scale it was trained on. Three scales occur:

* ``sentinel2_dn``: Sentinel-2 digital numbers, reflectance x 10000 (L1C/L2A products, OSCD,
  BigEarthNet); integers, mostly 0-10000.
* ``reflectance``: the same as floats, mostly 0-1 (what many tools export).
* ``uint8``: 8-bit display values 0-255 (JPG/PNG, RGB renderings): a stretch that cannot be
  turned back into reflectance.

Every model's ``config.json`` records its scale under ``normalization.value_scale``; older configs
get it from their band means (a median mean above 255 can only be digital numbers, one below 2
only reflectance). At inference, :func:`scale_of_values` reads the scale of a sample of the user's
raster and :func:`rescale_factor` reconciles the two: reflectance and digital numbers convert
exactly (x 10000 or / 10000, with a warning); anything involving 8-bit values stops with a clear
message, because a confident map from the wrong scale is worse than none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import CheckpointFormatError, ConfigError, NoDataError, ValueScaleError
from .raster import DateRaster, sample_windows

logger = logging.getLogger(__name__)

VALUE_SCALES: dict[str, str] = {
    "sentinel2_dn": "Sentinel-2 digital numbers (reflectance x 10000, 0-10000)",
    "reflectance": "reflectance (floats, 0-1)",
    "uint8": "8-bit display values (0-255, e.g. a JPG/PNG or an RGB rendering)",
}
DN_PER_REFLECTANCE = 10000.0
SAMPLE_VALUES = 200_000  # values kept to tell the scale of training data


def scale_of_means(means: Iterable[float]) -> str:
    """The value scale a model's band means imply (for configs written before ``value_scale`` existed).

    The median band mean of real imagery is far from the boundaries: 0.05-0.4 for reflectance,
    50-200 for 8-bit images, 500-3000 for Sentinel-2 digital numbers.
    """
    values = np.asarray(list(means), dtype=np.float64)
    middle = float(np.median(values)) if values.size else 0.0
    return "reflectance" if middle <= 2.0 else "uint8" if middle <= 255.0 else "sentinel2_dn"


def scale_of_values(values: np.ndarray) -> str | None:
    """The value scale of a sample of valid pixel values (all bands pooled), or None when none fits.

    Integers all within 0-255 are 8-bit; non-integers whose 99th percentile is at most 2 are
    reflectance; a 99th percentile above 255 (or integers above 255) are digital numbers. Anything
    else (e.g. reflectance in per cent) fits none, and an empty sample tells nothing (None).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    high, top = float(np.percentile(values, 99)), float(values.max())
    integral = bool(np.all(values == np.round(values)))
    if integral and top <= 255.0:
        return "uint8"
    if not integral and high <= 2.0:
        return "reflectance"
    if high > 255.0 or integral:
        return "sentinel2_dn"
    return None


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation of every band, in model band order, and the scale of the values.

    ``value_scale`` (one of :data:`VALUE_SCALES`) is inferred from the means when not given, so
    every saved config states it.
    """

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    value_scale: str = ""

    def __post_init__(self) -> None:
        if not self.value_scale:
            object.__setattr__(self, "value_scale", scale_of_means(self.mean))
        if self.value_scale not in VALUE_SCALES:
            raise ValueError(f"value_scale {self.value_scale!r} is unknown; use one of {', '.join(VALUE_SCALES)}")

    def to_dict(self) -> dict:
        return {"bands": list(self.bands), "mean": list(self.mean), "std": list(self.std),
                "value_scale": self.value_scale}

    @classmethod
    def from_dict(cls, data: dict) -> BandStats:
        """Read the ``normalization`` entry of a config (``value_scale`` inferred when absent).

        Raises:
            CheckpointFormatError: an unknown ``value_scale``.
        """
        scale = str(data.get("value_scale") or "")
        if scale and scale not in VALUE_SCALES:
            raise CheckpointFormatError(f"the model's normalization has value_scale {scale!r}; this SwiMDiff knows "
                                        f"{', '.join(VALUE_SCALES)}: re-create the model or fix its config.json")
        return cls(tuple(data["bands"]), tuple(map(float, data["mean"])), tuple(map(float, data["std"])), scale)

    def subset(self, bands: Sequence[str]) -> BandStats:
        """The statistics of some of these bands, in the given order."""
        index = [self.bands.index(b) for b in bands]
        return replace(self, bands=tuple(bands), mean=tuple(self.mean[i] for i in index),
                       std=tuple(self.std[i] for i in index))

    def apply(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Normalise a (C, h, w) array; invalid pixels become 0 (the band mean)."""
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]  # (C, 1, 1)
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]  # (C, 1, 1)
        return np.where(valid[None], (x - mean) / std, 0.0).astype(np.float32)  # (C, h, w)


def rescale_factor(data_scale: str | None, model_scale: str, source: str, declared: bool = False,
                   high: float | None = None) -> float:
    """The factor that brings a raster's values to the model's scale, or a clear stop.

    Args:
        data_scale: the raster's scale (detected by :func:`scale_of_values`, or declared by the user);
            None when the sample had no valid pixel (nothing to judge: factor 1) or fit no scale.
        model_scale: the scale the model was trained on (``BandStats.value_scale``).
        source: the raster, as named in messages.
        declared: the user gave ``data_scale`` (``--value-scale``) rather than it being detected.
        high: the sample's 99th percentile, quoted when the values fit no scale.

    Returns:
        1.0 when the scales agree; 10000 (reflectance into a digital-number model) or 1/10000 (the
        reverse), logged as a warning.

    Raises:
        ValueScaleError: 8-bit values into a reflectance/digital-number model or the reverse (an 8-bit
            rendering cannot be turned back into reflectance), or values that fit no scale.
    """
    override = "" if declared else " If the detection is wrong, say the scale with --value-scale."
    if data_scale is None:
        if high is None:
            return 1.0
        raise ValueScaleError(
            f"cannot tell the value scale of '{source}': its values reach {high:.4g} (99th percentile), which fits "
            f"none of {', '.join(VALUE_SCALES)}. The model expects {VALUE_SCALES[model_scale]}: rescale the raster "
            "to that (e.g. gdal_translate -scale) or pass --value-scale with its scale")
    if data_scale == model_scale:
        return 1.0
    pair = {data_scale, model_scale}
    if pair == {"reflectance", "sentinel2_dn"}:
        factor = DN_PER_REFLECTANCE if data_scale == "reflectance" else 1.0 / DN_PER_REFLECTANCE
        logger.warning("'%s' holds %s but the model was trained on %s: its values are %s 10000 to match.%s", source,
                       VALUE_SCALES[data_scale], VALUE_SCALES[model_scale],
                       "multiplied by" if factor > 1 else "divided by", override)
        return factor
    if data_scale == "uint8":
        fix = ("give the reflectance bands (the original Sentinel-2 digital numbers or float reflectance, not a "
               "display export), or use a model trained on 8-bit images")
        why = "an 8-bit rendering is a display stretch that cannot be turned back into reflectance"
    else:
        fix = ("give an 8-bit rendering of the raster (e.g. gdal_translate -ot Byte -scale), or use a model trained "
               "on reflectance bands")
        why = "a model trained on 8-bit images would map it with confidence and be wrong"
    raise ValueScaleError(
        f"'{source}' holds {VALUE_SCALES[data_scale]} but the model was trained on {VALUE_SCALES[model_scale]}; "
        f"{why}: {fix}." + ("" if declared else f" If its values really are {VALUE_SCALES[model_scale]}, "
                                                f"pass --value-scale {model_scale}."))


def with_value_scale(date: DateRaster, bands: Sequence[str], model_scale: str, declared: str = "auto") -> DateRaster:
    """The date set to deliver values on the model's scale (see :mod:`core.io.normalization`).

    Args:
        date: the date, its bands named.
        bands: the model's bands (the ones read).
        model_scale: the model's ``value_scale``.
        declared: ``auto`` to detect the date's scale from :func:`sample_windows`, else the scale
            the user declared (``--value-scale``).

    Returns:
        The date with ``scale`` set (1.0 when the scales agree or the sample holds no valid pixel).

    Raises:
        ValueScaleError: 8-bit values into a reflectance model or the reverse, or values on no known scale.
        ConfigError: an unknown ``declared`` scale.
    """
    if declared != "auto" and declared not in VALUE_SCALES:
        raise ConfigError(f"--value-scale {declared!r} is unknown; use auto, {', '.join(VALUE_SCALES)}")
    high = None
    if declared == "auto":
        x, valid = sample_windows(date, bands)
        values = x.transpose(1, 0, 2, 3)[:, valid]  # (C, n_valid)
        data_scale = scale_of_values(values)
        high = float(np.percentile(values, 99)) if values.size else None
        logger.debug("'%s': value scale %s (99th percentile %s)", date.source, data_scale, high)
    else:
        data_scale = declared
    factor = rescale_factor(data_scale, model_scale, str(date.source), declared=declared != "auto", high=high)
    return replace(date, scale=factor) if factor != 1.0 else date


class BandMoments:
    """Running per-band sums over valid pixels, for exact mean and std of data seen in pieces."""

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels, dtype=np.float64)
        self.total_sq = np.zeros(channels, dtype=np.float64)
        self.count = 0

    def add(self, x: np.ndarray, valid: np.ndarray) -> None:
        """Accumulate the valid pixels of x (C, h, w); valid is (h, w)."""
        values = x[:, valid].astype(np.float64)  # (C, n_valid)
        self.total += values.sum(axis=1)
        self.total_sq += (values**2).sum(axis=1)
        self.count += values.shape[1]

    def mean_std(self, what: str = "the rasters") -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), each (C,); a constant band gets std 1 (centred, not blown up).

        Raises:
            NoDataError: no valid pixel was seen.
        """
        if self.count == 0:
            raise NoDataError(f"no valid pixel found in {what}; check that they overlap and their nodata values")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - mean**2, 0.0))
        return mean, np.where(std > 1e-6, std, 1.0)


def estimate_band_stats(bands: Iterable[str], samples: Iterable[tuple[np.ndarray, np.ndarray]]) -> BandStats:
    """Mean and std per band over the valid pixels of (x (C, h, w), valid (h, w)) samples, and their
    value scale (:func:`scale_of_values` on up to :data:`SAMPLE_VALUES` of them; from the means when
    they fit no scale).

    Raises:
        NoDataError: no sample holds a valid pixel.
    """
    bands = tuple(bands)
    moments = BandMoments(len(bands))
    kept: list[np.ndarray] = []
    budget = SAMPLE_VALUES
    for x, valid in samples:
        moments.add(x, valid)
        values = x[:, valid].ravel()  # (C * n_valid,)
        if budget > 0 and values.size:
            step = max(1, values.size // min(budget, 4096))
            kept.append(values[::step][:budget])
            budget -= kept[-1].size
    mean, std = moments.mean_std("the training windows")
    scale = scale_of_values(np.concatenate(kept)) if kept else None
    return BandStats(bands, tuple(mean.tolist()), tuple(std.tolist()), scale or "")
