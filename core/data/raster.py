"""Read multi-band rasters window by window onto one reference grid.

A *date* is one acquisition: either one multi-band file (GeoTIFF or anything GDAL reads) or a
folder of single-band ``*_Bxx.tif`` files (the Sentinel-2 / OSCD layout, bands at 10, 20 and
60 m). :func:`open_date` only inspects headers; :class:`StackReader` reads windows of the
requested bands resampled onto a target :class:`Grid`, so memory follows the window, never the
raster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
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
from .bands import band_from_filename, canonical_order, normalise_band_name

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


@dataclass(frozen=True)
class DateRaster:
    """One acquisition: its named bands and the grid of its finest band (the reference grid)."""

    source: Path
    bands: tuple[BandRef, ...]
    grid: Grid

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

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


def _file_band_names(ds: rasterio.DatasetReader, assume: Sequence[str]) -> list[str]:
    described = [normalise_band_name(d) for d in ds.descriptions if d]
    if len(described) == ds.count and len(set(described)) == ds.count:
        return described
    if assume and len(assume) == ds.count:
        return list(assume)
    return [f"band{i}" for i in range(1, ds.count + 1)]


def open_date(path: str | Path, assume_band_names: Sequence[str] = ()) -> DateRaster:
    """Inspect one acquisition without reading pixels.

    Args:
        path: a multi-band raster file, or a folder of single-band ``*_Bxx.tif`` files.
        assume_band_names: names for the bands of a multi-band file whose band descriptions do
            not name them (used only when the band count matches).

    Returns:
        The date's bands, named from descriptions or file suffixes (else ``band1``..``bandN``), and
        the grid of its finest band.

    Raises:
        RasterReadError: the path is missing, not a raster, or a folder without band files.
    """
    path = Path(path)
    refs: list[BandRef] = []
    grids: list[Grid] = []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if band_from_filename(p.name))
        if not files:
            raise RasterReadError(
                f"folder '{path}' holds no single-band files named like *_B02.tif; "
                "give a folder of Sentinel-2 band files or a multi-band raster file"
            )
        for file in files:
            with _open(file) as ds:
                refs.append(BandRef(band_from_filename(file.name) or file.stem, file, 1))
                grids.append(_grid_of(ds))
    else:
        with _open(path) as ds:
            refs = [BandRef(n, path, i) for i, n in enumerate(_file_band_names(ds, assume_band_names), 1)]
            grids.append(_grid_of(ds))
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        raise BandMismatchError(f"'{path}' names a band twice ({names}); keep one file per band")
    order = canonical_order(names)
    refs.sort(key=lambda r: order.index(r.name))
    finest = min(grids, key=lambda g: g.pixel_size[0] * g.pixel_size[1])
    return DateRaster(source=path, bands=tuple(refs), grid=finest)


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
            ``(x, valid)``: x is float32 of shape (C, h, w) with invalid pixels set to 0; valid is a
            bool (h, w) mask, False where any band is nodata, NaN or outside the source.

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
            x[c] = np.where(ok, data, 0.0)
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
