"""No-change scenes: dated rasters of a place where nothing of interest changed, trained on as "no change".

Change labels (OSCD's) mark new buildings and roads, never fields, forest or water changing with the season;
yet the eight or ten labelled cities are mostly dense urban areas, so nothing teaches a model that a field
turning brown is not change. A no-change scene is a folder of dated rasters of such a place (countryside,
a reservoir through the seasons). Dates that are mostly cloud (or snow: the median blue reflectance of a
spread sample above 0.2; said in the log) are left out, the others paired half the series apart (large
seasonal gaps, each date used once) and read like any pair ``detect`` reads (band names, value scale, t2 on t1's
grid, t2 matched onto t1 when the model matches dates) and labelled 0 wherever both dates hold data. They are
extra training pairs, never validated on (``finetune-change --no-change-scene DIR``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import RasterReadError
from ..io.normalization import DN_PER_REFLECTANCE, BandStats, scale_of_values
from ..io.raster import RASTER_SUFFIXES, open_date, sample_windows
from .matching import match_dates
from .pair import name_by_order, open_pair
from .patches import IGNORE, CityStack

logger = logging.getLogger(__name__)

BRIGHT_BLUE = 0.2  # median B02 reflectance above which a date is taken for mostly cloud or snow


def scene_dates(folder: str | Path) -> list[Path]:
    """The dated rasters of a no-change scene folder, in name order (dates in the names sort in time).

    Raises:
        RasterReadError: not a folder, or fewer than two rasters in it.
    """
    folder = Path(folder)
    rasters = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES) \
        if folder.is_dir() else []
    if len(rasters) < 2:
        raise RasterReadError(f"--no-change-scene '{folder}' holds {len(rasters)} raster(s); give a folder of two or "
                              "more dated rasters of one place where nothing of interest changed")
    return rasters


def mostly_cloud(path: Path, bands: Sequence[str], assume_band_names: Sequence[str] = ()) -> bool:
    """Whether the median blue (B02) value of a spread sample of the raster is above ``BRIGHT_BLUE`` reflectance
    (False when the raster has no B02 or its values are on no reflectance scale)."""
    date = name_by_order(open_date(path, assume_band_names), bands)
    if "B02" not in date.band_names:
        return False
    x, valid = sample_windows(date, ["B02"])
    blue = x[:, 0][valid]
    scale = scale_of_values(blue)
    if not blue.size or scale not in ("sentinel2_dn", "reflectance"):
        return False
    limit = BRIGHT_BLUE * (DN_PER_REFLECTANCE if scale == "sentinel2_dn" else 1.0)
    return bool(np.median(blue) > limit)


def seasonal_pairs(dates: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Dates half the series apart: (d0, d_h), (d1, d_h+1), ... with h = n // 2 (n // 2 pairs)."""
    half = len(dates) // 2
    return [(dates[i], dates[i + half]) for i in range(half)]


def load_no_change_scene(folder: str | Path, bands: Sequence[str], stats: BandStats, match: bool = False,
                         assume_band_names: Sequence[str] = ()) -> list[CityStack]:
    """The seasonal pairs of one no-change scene as training stacks labelled 0 (255 where a date has no data).

    Raises:
        RasterReadError, BandMismatchError, ValueScaleError: as for ``detect``'s inputs, naming the file.
    """
    dates = scene_dates(folder)
    clear = [d for d in dates if not mostly_cloud(d, bands, assume_band_names)]
    if len(clear) < len(dates):
        logger.info("--no-change-scene '%s': left out %s (mostly cloud or snow)", folder,
                    ", ".join(d.name for d in dates if d not in clear))
    stacks = []
    for first, second in seasonal_pairs(clear):
        pair = open_pair(first, second, bands, assume_band_names, stats.value_scale)
        (x1, v1), (x2, v2) = (reader.read_all() for reader in pair.readers())
        valid = v1 & v2
        if match:
            x2 = match_dates(x1, x2, valid).apply(x2)
        label = np.where(valid, 0, IGNORE).astype(np.uint8)
        stacks.append(CityStack(f"{first.stem}~{second.stem} (no change)", stats.apply(x1, valid),
                                stats.apply(x2, valid), label))
    return stacks
