"""Scenes: co-registered rasters of one place at several dates.

Scenes are built from what users have on disk:

* an OSCD-layout root (``images/<city>/imgs_1``, ``imgs_2``): one scene per city;
* one city folder holding ``imgs_1`` and ``imgs_2``;
* a folder of dated multi-band rasters (``Boadella_2020-01-13.tif`` ...): one scene;
* explicit raster files or band folders given together: one scene, dates in the given order.

Every scene gets an integer ``scene_id``; scene-wide matching treats keys with the query's
scene id as soft positives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BandMismatchError, GridMismatchError, RasterReadError
from ..io.bands import ASSUME_FIX, SENTINEL2_BANDS, SENTINEL2_L2A_BANDS, band_from_filename
from ..io.raster import RASTER_SUFFIXES, DateRaster, Grid, open_date, require_some_data, sample_windows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scene:
    """One place, several dates, all read onto the grid of the first date's finest band."""

    scene_id: int
    name: str
    dates: tuple[DateRaster, ...]

    @property
    def grid(self) -> Grid:
        return self.dates[0].grid


def _is_band_folder(path: Path) -> bool:
    return path.is_dir() and any(band_from_filename(p.name) for p in path.iterdir())


def _rasters_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)


def _date_groups(path: Path) -> list[tuple[str, list[Path]]]:
    """Expand one --data entry into (scene name, date paths) groups."""
    if not path.exists():
        raise RasterReadError(f"--data '{path}' does not exist; check the path")
    if path.is_file():
        return [("", [path])]  # loose files are grouped by the caller
    if (path / "images").is_dir():
        cities = sorted(p for p in (path / "images").iterdir() if (p / "imgs_1").is_dir())
        if not cities:
            raise RasterReadError(f"OSCD root '{path}' has no images/<city>/imgs_1 folders; check the path")
        return [(c.name, [c / "imgs_1", c / "imgs_2"]) for c in cities]
    if (path / "imgs_1").is_dir() and (path / "imgs_2").is_dir():
        return [(path.name, [path / "imgs_1", path / "imgs_2"])]
    if _is_band_folder(path):
        return [("", [path])]
    rasters = _rasters_in(path)
    if not rasters:
        raise RasterReadError(
            f"--data '{path}' holds no rasters, band folders or OSCD cities; "
            "give a folder of dated GeoTIFFs, an OSCD root, or raster files"
        )
    return [(path.name, list(rasters))]


def check_same_place(name: str, dates: Sequence[DateRaster]) -> None:
    """Raise :class:`GridMismatchError` unless all dates share a CRS and (within 1.5 px) an extent."""
    ref = dates[0].grid
    tolerance = 1.5 * max(ref.pixel_size)
    for date in dates[1:]:
        if date.grid.crs != ref.crs:
            raise GridMismatchError(
                f"scene '{name}': '{date.source}' is in {date.grid.crs} but '{dates[0].source}' is in {ref.crs}; "
                "reproject the dates to one CRS (e.g. gdalwarp -t_srs) or give them as separate scenes"
            )
        offsets = [abs(a - b) for a, b in zip(date.grid.bounds, ref.bounds)]
        if max(offsets) > tolerance:
            raise GridMismatchError(
                f"scene '{name}': '{date.source}' covers {tuple(round(v, 6) for v in date.grid.bounds)} but "
                f"'{dates[0].source}' covers {tuple(round(v, 6) for v in ref.bounds)}; clip the dates to the "
                "same extent (e.g. gdalwarp -te) or give them as separate scenes"
            )


def same_pixels(first: DateRaster, second: DateRaster, bands: Sequence[str]) -> bool:
    """True when two dates read the same files (directly or through VRTs), or hold identical, varied values in a
    spread sample.

    Identical samples of a few thousand pixels per band that are not constant cannot come from two
    acquisitions: they are the same data (a copy, a re-export, a VRT of the same files).
    """
    def files(date: DateRaster) -> list[tuple[Path, int]]:
        return sorted(r.origin() for r in date.bands if r.name in bands)

    if files(first) == files(second):
        return True
    if not first.grid.same_as(second.grid):
        return False
    x1, v1 = sample_windows(first, bands)
    x2, v2 = sample_windows(second, bands, first.grid)
    if not v1.any() or not np.array_equal(v1, v2):
        return False
    values = x1.transpose(1, 0, 2, 3)[:, v1]  # (C, n_valid)
    return bool(np.array_equal(values, x2.transpose(1, 0, 2, 3)[:, v2]) and np.ptp(values) > 0)


def discover_scenes(paths: Sequence[str | Path], assume_band_names: Sequence[str] = ()) -> list[Scene]:
    """Build scenes from the user's ``--data`` entries.

    Args:
        paths: OSCD roots, city folders, folders of dated rasters, band folders or raster files.
            Loose files and band folders given together form one scene, in the given order.
        assume_band_names: names for unnamed bands of multi-band files (see :func:`open_date`).

    Returns:
        Scenes with ids 0..n-1, every date checked to be readable, co-located and not all nodata.

    Raises:
        RasterReadError, GridMismatchError, NoDataError: with the offending path and the fix.
    """
    groups: list[tuple[str, list[Path]]] = []
    loose: list[Path] = []
    for entry in paths:
        for name, members in _date_groups(Path(entry)):
            if name:
                groups.append((name, members))
            else:
                loose.extend(members)
    if loose:
        groups.append((loose[0].stem if len(loose) == 1 else f"{loose[0].stem}+{len(loose) - 1}", loose))
    scenes = []
    for scene_id, (name, members) in enumerate(groups):
        dates = tuple(open_date(p, assume_band_names) for p in members)
        for date in dates:
            require_some_data(date)
        check_same_place(name, dates)
        check_named(dates)
        scenes.append(Scene(scene_id=scene_id, name=name, dates=dates))
        logger.info("scene %d '%s': %d dates, %dx%d px", scene_id, name, len(dates), dates[0].grid.width,
                    dates[0].grid.height)
        if len(dates) == 1:
            logger.warning("scene '%s' has one date ('%s'): its positive pairs are two augmentations of that date, "
                           "not two dates of one place, so pre-training learns no change between dates; give two or "
                           "more dates of the place (a folder of dated rasters, or the files together in one --data)",
                           name, dates[0].source)
    return scenes


def check_named(dates: Sequence[DateRaster]) -> None:
    """Refuse or loudly flag, before any work, dates whose bands are unnamed (``band1``..``bandN``).

    An encoder trained on unnamed bands knows them only by position: fine-tuning and detection on
    named rasters then refuse it, two steps later. Twelve or thirteen unnamed bands are a
    Sentinel-2 stack whose names the user can give in one word (``l2a``/``l1c``): refuse, with
    that fix. Other counts (an RGB or 4-band composite) may be a layout the user keeps using
    throughout, so they are warned about, and ``band1``.. is what config.json records.

    Raises:
        BandMismatchError: a date with 12 or 13 unnamed bands.
    """
    unnamed = [d for d in dates if d.unnamed]
    for date in unnamed:
        count = len(date.bands)
        if count in (len(SENTINEL2_L2A_BANDS), len(SENTINEL2_BANDS)):
            preset = "l2a" if count == len(SENTINEL2_L2A_BANDS) else "l1c"
            raise BandMismatchError(
                f"'{date.source}' does not name its {count} bands (no band descriptions): an encoder pre-trained on "
                f"them would know them only as band1..band{count}, and fine-tuning or detection on Sentinel-2 rasters "
                f"would refuse it. Name them: --assume-band-names {preset} if they are "
                f"{', '.join(SENTINEL2_L2A_BANDS if preset == 'l2a' else SENTINEL2_BANDS)} in that order, "
                "else the names in file order, e.g. B02,B03,B04,B08")
    if unnamed:
        more = f" (and {len(unnamed) - 1} more dates)" if len(unnamed) > 1 else ""
        logger.warning("'%s'%s does not name its bands (%s): the model will know them only by position, and only "
                       "rasters with the same bands in the same order will fit it. Name them with %s",
                       unnamed[0].source, more, ", ".join(unnamed[0].band_names), ASSUME_FIX)


def common_bands(scenes: Sequence[Scene], requested: Sequence[str] = ()) -> list[str]:
    """The bands to stack for these scenes: see :func:`shared_bands`."""
    return shared_bands([d for s in scenes for d in s.dates], requested)


def shared_bands(dates: Sequence[DateRaster], requested: Sequence[str] = ()) -> list[str]:
    """The bands to stack: the requested ones (checked on every date) or those all dates share.

    Raises:
        BandMismatchError: a requested band is missing somewhere, or the dates share no band.
    """
    if requested:
        for date in dates:
            missing = [b for b in requested if b not in date.band_names]
            if missing:
                raise BandMismatchError(
                    f"'{date.source}' lacks band(s) {', '.join(missing)} (it has {', '.join(date.band_names)}); "
                    "pass --bands with bands every date has"
                )
        return list(requested)
    shared = set(dates[0].band_names)
    for date in dates[1:]:
        shared &= set(date.band_names)
    if not shared:
        raise BandMismatchError(
            f"the dates share no band name ('{dates[0].source}' has {dates[0].band_names}); give rasters with "
            "the same bands, or name unnamed bands with --assume-band-names"
        )
    dropped = sorted({b for d in dates for b in d.band_names} - shared)
    if dropped:
        logger.warning("using the %d bands all dates share; ignoring %s", len(shared), ", ".join(dropped))
    return [b for b in dates[0].band_names if b in shared]  # the first date's order (see DateRaster.bands)
