"""Read multi-band rasters window by window onto one reference grid.

A *date* is one acquisition: either one multi-band file (GeoTIFF, VRT or anything GDAL reads) or a
folder of single-band ``*_Bxx.tif`` files (the Sentinel-2 / OSCD layout, bands at 10, 20 and
60 m; one such file given alone brings its sibling bands). :func:`open_date` only inspects
headers and names the bands (see :mod:`core.io.bands`); :class:`StackReader` reads windows of
the requested bands resampled onto a target :class:`Grid`, so memory follows the window, never
the raster, and applies the date's ``scale`` (see :func:`core.io.normalization.with_value_scale`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import BandMismatchError, NoDataError, RasterReadError
from .bands import (
    ASSUME_FIX,
    band_file_prefix,
    band_from_filename,
    canonical_order,
    mentions_sentinel2,
    names_from_descriptions,
    vrt_band_names,
    vrt_band_source,
)

logger = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid: CRS, affine transform and size."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def pixel_size(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform * (0, 0)
        right, bottom = self.transform * (self.width, self.height)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    def same_as(self, other: Grid, tolerance: float = 1e-6) -> bool:
        """True when both grids have the same CRS, size and (almost) the same transform."""
        return (
            self.crs == other.crs
            and (self.width, self.height) == (other.width, other.height)
            and self.transform.almost_equals(other.transform, precision=tolerance * max(self.pixel_size))
        )


@dataclass(frozen=True)
class BandRef:
    """Where one named band lives: a file and its 1-based band index."""

    name: str
    path: Path
    index: int

    def origin(self) -> tuple[Path, int]:
        """The file and band this band's pixels come from: through VRT bands that only pass one band of one file
        on (what ``gdalbuildvrt -separate`` writes), else the band itself; the path resolved."""
        path, index = self.path.resolve(), self.index
        for _ in range(8):  # VRTs of VRTs, not endlessly
            source = vrt_band_source(path, index) if path.suffix.lower() == ".vrt" else None
            if source is None:
                break
            path, index = source
        return path, index


@dataclass(frozen=True)
class DateRaster:
    """One acquisition: its named bands and the grid of its finest band (the reference grid).

    Attributes:
        source: the path the user gave.
        bands: the bands, Sentinel-2 ids in sensor order, other names in the file's order.
        grid: the grid of the finest band.
        unnamed: some bands have no name and are called by position (``band3``).
        ambiguous: descriptions kept as they are because they may be Landsat or Sentinel-2
            numbers (``B4``, ``SR_B4``).
        scale: factor :class:`StackReader` applies to every value read (see
            :func:`~core.io.normalization.with_value_scale`).
    """

    source: Path
    bands: tuple[BandRef, ...]
    grid: Grid
    unnamed: bool = False
    ambiguous: tuple[str, ...] = ()
    scale: float = 1.0

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    def __fspath__(self) -> str:
        """The path the user gave, so an opened date can go wherever a raster path goes (``open_date``
        returns it as it is, with its names and scale; ``Path(date)`` is its source)."""
        return os.fspath(self.source)

    def band(self, name: str) -> BandRef:
        for ref in self.bands:
            if ref.name == name:
                return ref
        raise BandMismatchError(
            f"'{self.source}' has no band {name} (it has {', '.join(self.band_names)}); "
            "pass --bands with bands every date has"
        )


def _open(path: Path) -> rasterio.DatasetReader:
    if not path.exists():
        raise RasterReadError(f"'{path}' does not exist; check the path")
    try:
        return rasterio.open(path)
    except RasterioError as error:
        raise RasterReadError(
            f"cannot read '{path}' as a raster ({error}); give a GeoTIFF or another GDAL-readable file"
        ) from error


def _grid_of(ds: rasterio.DatasetReader) -> Grid:
    return Grid(crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height)


def _sentinel2_hint(ds: rasterio.DatasetReader, path: Path) -> bool:
    texts = [path.name, *ds.tags().values()]
    return any(mentions_sentinel2(str(t)) for t in texts)


def _file_band_names(ds: rasterio.DatasetReader, path: Path,
                     assume: Sequence[str]) -> tuple[list[str], bool, tuple[str, ...]]:
    """``(names, unnamed, ambiguous)`` of a multi-band file's bands, in file order.

    Names come from band descriptions, else (VRT) from each band's source file (``*_Bxx.tif``),
    else from ``assume`` (all bands, in file order) when the file does not name every band
    unambiguously; bands still unnamed are called ``band<i>``.

    Raises:
        BandMismatchError: ``assume`` has another count than the file's bands.
    """
    descriptions: list[str | None] = list(ds.descriptions)
    if path.suffix.lower() == ".vrt":
        try:
            sources = vrt_band_names(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            sources = []
        descriptions = [d or (sources[i] if i < len(sources) else None) for i, d in enumerate(descriptions)]
    names, ambiguous = names_from_descriptions(descriptions, _sentinel2_hint(ds, path))
    duplicated = {n for n in names if n and names.count(n) > 1}
    if all(names) and not duplicated and not ambiguous:
        return [n for n in names if n], False, ()
    if assume:
        if len(assume) != ds.count:
            raise BandMismatchError(
                f"--assume-band-names gives {len(assume)} names ({', '.join(assume)}) but '{path}' has {ds.count} "
                f"bands; give {ds.count} names in file order (l2a names 12 bands, l1c 13)")
        return list(assume), False, ()
    if ambiguous:
        logger.warning("'%s' names bands %s: these may be Landsat or Sentinel-2 band numbers, so they are not taken "
                       "as Sentinel-2 bands. If they are Sentinel-2 bands, name them with %s", path,
                       ", ".join(ambiguous), ASSUME_FIX)
    if duplicated:
        logger.warning("'%s' gives several bands the same name (%s): those are called by position", path,
                       ", ".join(sorted(duplicated)))
    final = [n if n and n not in duplicated else f"band{i}" for i, n in enumerate(names, 1)]
    return final, any(n is None or n in duplicated for n in names), tuple(ambiguous)


def _band_files(folder: Path, prefix: str | None = None) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and band_from_filename(p.name)
                  and (prefix is None or band_file_prefix(p.name) == prefix))


def _siblings(path: Path) -> list[Path]:
    """The band files beside a single ``*_Bxx.tif`` file that share its name prefix (itself included)."""
    prefix = band_file_prefix(path.name)
    if prefix is None or not path.is_file():
        return []
    with _open(path) as ds:
        if ds.count != 1:
            return []
    return _band_files(path.parent, prefix)


def open_date(path: str | Path | DateRaster, assume_band_names: Sequence[str] = ()) -> DateRaster:
    """Inspect one acquisition without reading pixels.

    Args:
        path: a multi-band raster file, a folder of single-band ``*_Bxx.tif`` files, or one such
            file (its sibling bands, sharing its name prefix, come with it). A :class:`DateRaster`
            is returned as it is (already opened and named).
        assume_band_names: names, in file order, for the bands of a multi-band file that does not
            name all of them unambiguously (see :mod:`core.io.bands`).

    Returns:
        The date's bands, named from descriptions, VRT source files or file suffixes (else
        ``band1``..``bandN``, with ``unnamed`` set), and the grid of its finest band.

    Raises:
        RasterReadError: the path is missing, not a raster, or a folder without band files.
        BandMismatchError: a band named twice, or ``assume_band_names`` of the wrong count.
    """
    if isinstance(path, DateRaster):
        return path
    path = Path(path)
    refs: list[BandRef] = []
    grids: list[Grid] = []
    unnamed, ambiguous = False, tuple[str, ...]()
    siblings = _siblings(path) if path.is_file() else []
    if path.is_dir() or len(siblings) > 1:
        files = _band_files(path) if path.is_dir() else siblings
        if not files:
            raise RasterReadError(
                f"folder '{path}' holds no single-band files named like *_B02.tif; "
                "give a folder of Sentinel-2 band files or a multi-band raster file"
            )
        if siblings:
            logger.info("'%s' is one band of a set: reading its %d sibling band files (%s) from '%s'", path.name,
                        len(files), ", ".join(canonical_order(band_from_filename(f.name) or "" for f in files)),
                        path.parent)
        for file in files:
            with _open(file) as ds:
                refs.append(BandRef(band_from_filename(file.name) or file.stem, file, 1))
                grids.append(_grid_of(ds))
    else:
        with _open(path) as ds:
            names, unnamed, ambiguous = _file_band_names(ds, path, assume_band_names)
            refs = [BandRef(n, path, i) for i, n in enumerate(names, 1)]
            grids.append(_grid_of(ds))
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        raise BandMismatchError(f"'{path}' names a band twice ({names}); keep one file per band")
    order = canonical_order(names)
    refs.sort(key=lambda r: order.index(r.name))
    finest = min(grids, key=lambda g: g.pixel_size[0] * g.pixel_size[1])
    return DateRaster(source=path, bands=tuple(refs), grid=finest, unnamed=unnamed, ambiguous=ambiguous)


class StackReader:
    """Reads windows of chosen bands of one date, resampled onto a target grid.

    Files already on the target grid are read directly; others go through a ``WarpedVRT``
    (bilinear), which also covers a t2 whose pixel size differs slightly from t1's. Handles are
    opened lazily, so a reader can be created in one process and used in a DataLoader worker.
    """

    def __init__(self, date: DateRaster, grid: Grid, bands: Sequence[str]) -> None:
        self.date = date
        self.grid = grid
        self.refs = [date.band(name) for name in bands]
        self._handles: dict[Path, tuple[Any, ...]] = {}  # path -> (dataset to read, datasets to close)
        self._pid = -1

    def _handle(self, path: Path) -> rasterio.io.DatasetReaderBase:
        if self._pid != os.getpid():  # fresh handles after a fork
            self._handles, self._pid = {}, os.getpid()
        if path not in self._handles:
            ds = _open(path)
            if _grid_of(ds).same_as(self.grid):
                self._handles[path] = (ds,)
            else:
                vrt = WarpedVRT(ds, crs=self.grid.crs or ds.crs, transform=self.grid.transform,
                                width=self.grid.width, height=self.grid.height, resampling=Resampling.bilinear)
                self._handles[path] = (vrt, ds)
        return self._handles[path][0]

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read one window.

        Args:
            window: pixel window of the target grid.

        Returns:
            ``(x, valid)``: x is float32 of shape (C, h, w), multiplied by the date's ``scale``, with
            invalid pixels set to 0; valid is a bool (h, w) mask, False where any band is nodata, NaN
            or outside the source.

        Raises:
            RasterReadError: a file cannot be read (truncated or corrupted data).
        """
        h, w = int(window.height), int(window.width)
        x = np.zeros((len(self.refs), h, w), dtype=np.float32)  # (C, h, w)
        valid = np.ones((h, w), dtype=bool)  # (h, w)
        for c, ref in enumerate(self.refs):
            try:
                band = self._handle(ref.path).read(ref.index, window=window, masked=True)
            except RasterioError as error:
                raise RasterReadError(
                    f"cannot read band {ref.name} of '{ref.path}' ({error}); the file may be corrupted"
                ) from error
            data = np.ma.getdata(band).astype(np.float32)
            ok = ~np.ma.getmaskarray(band) & np.isfinite(data)
            valid &= ok
            x[c] = np.where(ok, data * np.float32(self.date.scale) if self.date.scale != 1.0 else data, 0.0)
        x[:, ~valid] = 0.0
        return x, valid

    def read_all(self, rows_per_block: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Read the whole grid block by block (for caching small scenes in memory)."""
        x = np.zeros((len(self.refs), self.grid.height, self.grid.width), dtype=np.float32)  # (C, H, W)
        valid = np.zeros((self.grid.height, self.grid.width), dtype=bool)  # (H, W)
        for top in range(0, self.grid.height, rows_per_block):
            h = min(rows_per_block, self.grid.height - top)
            x[:, top:top + h], valid[top:top + h] = self.read(Window(0, top, self.grid.width, h))
        return x, valid

    def close(self) -> None:
        for handles in self._handles.values():
            for ds in handles:
                ds.close()
        self._handles = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, -1
        return state


def valid_fraction_preview(date: DateRaster, size: int = 128) -> float:
    """Share of valid pixels in a decimated read of the date's first band (cheap, header-level)."""
    ref = date.bands[0]
    with _open(ref.path) as ds:
        shape = (min(ds.height, size), min(ds.width, size))
        try:
            band = ds.read(ref.index, out_shape=shape, masked=True)
        except RasterioError as error:
            raise RasterReadError(f"cannot read '{ref.path}' ({error}); the file may be corrupted") from error
    data = np.ma.getdata(band)
    ok = ~np.ma.getmaskarray(band) & np.isfinite(data)
    return float(ok.mean())


def require_some_data(date: DateRaster) -> None:
    """Raise :class:`NoDataError` when a date holds nothing but nodata."""
    if valid_fraction_preview(date) == 0.0:
        raise NoDataError(
            f"'{date.source}' holds only nodata pixels; remove it from --data or fix its nodata value"
        )


def sample_windows(date: DateRaster, bands: Sequence[str], grid: Grid | None = None, lattice: int = 4,
                   size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A cheap, spread sample of a date: a ``lattice x lattice`` set of windows over the grid, raw values.

    Cost is bounded whatever the raster's size (``lattice**2`` windows of ``size`` px per band),
    and the windows are spread evenly, so the sample sees land, water and edges alike.

    Args:
        date: the date (its ``scale`` is ignored: values are as stored).
        bands: the bands to read.
        grid: the grid to read on (default: the date's own).

    Returns:
        ``(x, valid)``: float32 (n, C, h, w) and bool (n, h, w).

    Raises:
        RasterReadError: a file cannot be read.
    """
    grid = grid or date.grid
    reader = StackReader(replace(date, scale=1.0), grid, bands)
    h, w = min(size, grid.height), min(size, grid.width)
    rows = np.linspace(0, grid.height - h, lattice).round().astype(int)
    cols = np.linspace(0, grid.width - w, lattice).round().astype(int)
    xs, valids = [], []
    try:
        for top in dict.fromkeys(rows.tolist()):
            for left in dict.fromkeys(cols.tolist()):
                x, valid = reader.read(Window(left, top, w, h))
                xs.append(x)
                valids.append(valid)
    finally:
        reader.close()
    return np.stack(xs), np.stack(valids)
