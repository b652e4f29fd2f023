"""One named multi-band raster (a VRT) from a folder of Sentinel-2 band files or a ``.SAFE`` product.

Sentinel-2 ships one file per band at 10, 20 or 60 m. ``gdalbuildvrt -separate`` stacks them but
averages the pixel sizes (about 30 m for the 13 bands) and leaves the bands unnamed. :func:`build_stack`
writes a VRT on the grid of the finest band instead, with each band described by its name (``B02``),
absolute source paths (the VRT can be moved) and the sources' nodata kept.

Resampling: coarser bands are brought onto the grid *bilinearly*, the same kernel
:class:`~core.io.raster.StackReader` uses for a folder of band files, so a stack and its folder give
``swimdiff detect`` the same pixels (``tests/test_io_stack.py`` measures it on a real OSCD city). Bands finer
than a ``--resolution 20`` or ``60`` grid are *averaged* (area mean), the correct way to coarsen reflectance.
The VRT is written under a temporary name in the output folder, opened to check its bands, then renamed;
a ``.tif`` output is the VRT streamed block by block into a tiled, compressed GeoTIFF the same way.
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..errors import BandMismatchError, Cancelled, ConfigError, GridMismatchError, OutputError, RasterReadError
from .bands import SENTINEL2_BANDS, normalise_band_name
from .raster import Grid
from .writer import AtomicGeoTiff, remove_stale_temporaries, sync_file, temporary_name, write_error

logger = logging.getLogger(__name__)

#: Native pixel size (metres) of each Sentinel-2 band.
NATIVE_RESOLUTION: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
    "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}
RESOLUTIONS = (10, 20, 60)
UPSAMPLING = "bilinear"  # as StackReader reads a band folder, so stacks and folders detect alike
DOWNSAMPLING = "average"  # area mean when a finer band is coarsened onto a 20 or 60 m grid
OUTPUT_SUFFIXES = (".vrt", ".tif", ".tiff")

# core.io.bands.band_from_filename knows only "*_B02.tif"; products also name "*_B02.jp2" (L1C) and
# "*_B02_10m.jp2" (L2A, the pixel size after the band).
_BAND_FILE = re.compile(r"_(B(?:0?[1-9]|1[0-2]|8A))(?:_(10|20|60)m)?\.(?:tiff?|jp2)$", re.IGNORECASE)
_RESOLUTION_FOLDER = re.compile(r"^R(10|20|60)m$", re.IGNORECASE)
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


@dataclass(frozen=True)
class BandFile:
    """One band file and its nominal pixel size in metres (``_10m`` suffix or ``R10m`` folder, else native)."""

    name: str
    path: Path
    resolution: int


@dataclass(frozen=True)
class StackResult:
    """What :func:`build_stack` wrote."""

    path: Path
    bands: tuple[str, ...]
    sources: tuple[Path, ...]  # one file per band, in band order
    kind: str  # "folder", "L1C" or "L2A"
    crs: str
    transform: tuple[float, ...]  # the grid's affine (a, b, c, d, e, f)
    width: int
    height: int
    resampled: dict[str, str]  # band -> resampling used, for bands not on the grid already
    nodata: dict[str, float]  # band -> nodata value, for bands that have one


def band_from_path(path: Path) -> tuple[str, int] | None:
    """``(band, nominal metres)`` of a Sentinel-2 band file name, else None (TCI, SCL, AOT, metadata...)."""
    match = _BAND_FILE.search(path.name)
    if match is None:
        return None
    band = normalise_band_name(match.group(1))
    folder = _RESOLUTION_FOLDER.match(path.parent.name)
    metres = match.group(2) or (folder.group(1) if folder else None)
    return band, int(metres) if metres else NATIVE_RESOLUTION[band]


def _image_folders(source: Path) -> tuple[str, list[Path]]:
    """Where the band files of ``source`` lie and what ``source`` is ("folder", "L1C" or "L2A")."""
    if not source.exists():
        raise RasterReadError(f"--source '{source}' does not exist; give a folder of *_Bxx band files or a .SAFE "
                              "folder")
    if not source.is_dir():
        raise RasterReadError(f"--source '{source}' is a file, not a folder; give the folder of *_Bxx band files "
                              "(an unzipped .SAFE product works too)")
    image_data = source / "IMG_DATA"
    if (source / "GRANULE").is_dir():
        granules = sorted(p for p in (source / "GRANULE").glob("*/IMG_DATA") if p.is_dir())
        if len(granules) != 1:
            found = ", ".join(p.parent.name for p in granules) or "none"
            raise RasterReadError(f"--source '{source}' holds {len(granules)} GRANULE/*/IMG_DATA folders ({found}); "
                                  "give the IMG_DATA folder of one granule as --source")
        image_data = granules[0]
    folder = image_data if image_data.is_dir() else source
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and _RESOLUTION_FOLDER.match(p.name))
    kind = "L2A" if subfolders else "L1C" if folder.name.upper() == "IMG_DATA" else "folder"
    return kind, [folder, *subfolders]


def find_band_files(source: str | Path, resolution: int = 10) -> tuple[str, dict[str, BandFile]]:
    """The band files of a folder or product, one per band, taking each band at the resolution closest to the
    grid's (the finest one at or above ``resolution``, else the coarsest finer one).

    Args:
        source: a folder of ``*_Bxx.tif``/``*_Bxx.jp2`` files, an L2A ``IMG_DATA`` folder with ``R10m``,
            ``R20m``, ``R60m``, a granule folder or a ``.SAFE`` product folder.
        resolution: the nominal pixel size of the grid to be built (10, 20 or 60 m).

    Returns:
        The kind of source ("folder", "L1C" or "L2A") and its band files keyed by band name.

    Raises:
        RasterReadError: the source is missing, not a folder, holds several granules or no band files.
        BandMismatchError: two files name the same band at the same resolution.
    """
    source = Path(source)
    kind, folders = _image_folders(source)
    candidates: dict[str, dict[int, Path]] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            parsed = band_from_path(path) if path.is_file() else None
            if parsed is None:
                continue
            band, metres = parsed
            other = candidates.setdefault(band, {}).get(metres)
            if other is not None:
                raise BandMismatchError(f"--source '{source}' has two files for {band} at {metres} m: '{other}' and "
                                        f"'{path}'; keep one file per band (one date per folder)")
            candidates[band][metres] = path
    if not candidates:
        raise RasterReadError(f"--source '{source}' holds no Sentinel-2 band files (names ending _B02.tif, _B02.jp2 "
                              "or _B02_10m.jp2); give a band folder, an IMG_DATA folder or a .SAFE product folder")
    files = {}
    for band, by_metres in candidates.items():
        coarser = [m for m in by_metres if m >= resolution]
        metres = min(coarser) if coarser else max(by_metres)
        files[band] = BandFile(band, by_metres[metres].resolve(), metres)
    return kind, files


@dataclass(frozen=True)
class _Header:
    band: BandFile
    crs: rasterio.crs.CRS | None
    transform: Affine
    width: int
    height: int
    dtype: str
    nodata: float | None
    block: tuple[int, int]  # (rows, columns)


def _header(band: BandFile) -> _Header:
    try:
        with rasterio.open(band.path) as ds:
            return _Header(band, ds.crs, ds.transform, ds.width, ds.height, ds.dtypes[0], ds.nodata,
                           ds.block_shapes[0])
    except RasterioError as error:
        raise RasterReadError(f"cannot read band {band.name} '{band.path}' as a raster ({error}); the file may be "
                              "truncated or not a raster: download it again") from error


def _check_output(out: Path, sources: Sequence[Path], overwrite: bool) -> None:
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OutputError(f"--out '{out}' is neither a .vrt nor a .tif name; use e.g. '{out.with_suffix('.vrt')}'")
    if out.resolve() in {p.resolve() for p in sources}:
        raise OutputError(f"--out '{out}' is one of the band files it would be built from; choose another name")
    if out.is_dir():
        raise OutputError(f"--out '{out}' is a folder; give a file name ending with .vrt")
    if not out.parent.is_dir():
        raise OutputError(f"--out '{out}': the folder '{out.parent}' does not exist; create it first")
    if out.exists() and not overwrite:
        raise OutputError(f"--out '{out}' already exists; pass --overwrite to replace it or choose another name")


def _number(value: float) -> str:
    return str(int(round(value))) if abs(value - round(value)) < 1e-9 else repr(float(value))


def _dst_rect(src: _Header, grid: _Header) -> tuple[float, float, float, float]:
    """Where a source's pixels fall on the grid, in (fractional) grid pixels: x offset, y offset, width, height."""
    return ((src.transform.c - grid.transform.c) / grid.transform.a,
            (src.transform.f - grid.transform.f) / grid.transform.e,
            src.width * src.transform.a / grid.transform.a,
            src.height * src.transform.e / grid.transform.e)


def _check_grids(headers: Sequence[_Header], grid: _Header) -> None:
    for h in headers:
        if h.crs != grid.crs:
            def crs(h: _Header) -> str:
                return f"is in {h.crs}" if h.crs else "has no CRS (not georeferenced, or a damaged header)"

            raise GridMismatchError(f"band {h.band.name} '{h.band.path}' {crs(h)} but band {grid.band.name} "
                                    f"'{grid.band.path}' {crs(grid)}; all bands must come from one product")
        if h.transform.b or h.transform.d:
            raise GridMismatchError(f"band {h.band.name} '{h.band.path}' has a rotated geotransform; warp it to a "
                                    "north-up grid first (gdalwarp)")
        x, y, w, h_ = _dst_rect(h, grid)
        slack = max(1.0, abs(h.transform.a / grid.transform.a))  # one source pixel
        if max(abs(x), abs(y), abs(x + w - grid.width), abs(y + h_ - grid.height)) > slack:
            raise GridMismatchError(f"band {h.band.name} '{h.band.path}' does not cover the extent of band "
                                    f"{grid.band.name} '{grid.band.path}' (offset {x:.1f}, {y:.1f} px, size {w:.1f} x "
                                    f"{h_:.1f} px on its {grid.width} x {grid.height} grid); all bands must come from "
                                    "one product")


def _vrt_xml(headers: Sequence[_Header], grid: _Header, nodata: dict[str, float]) -> tuple[ET.Element, dict[str, str]]:
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    if grid.crs is not None:
        ET.SubElement(root, "SRS").text = grid.crs.to_wkt()
    t = grid.transform
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    resampled = {}
    for index, h in enumerate(headers, 1):
        band = ET.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES.get(h.dtype, "Float64"), band=str(index))
        ET.SubElement(band, "Description").text = h.band.name
        if h.band.name in nodata:
            ET.SubElement(band, "NoDataValue").text = repr(nodata[h.band.name])
        ET.SubElement(band, "ColorInterp").text = "Gray"
        dst = _dst_rect(h, grid)
        source = ET.SubElement(band, "ComplexSource")
        if abs(dst[2] - h.width) > 1e-9 or abs(dst[3] - h.height) > 1e-9:
            resampled[h.band.name] = UPSAMPLING if dst[2] > h.width else DOWNSAMPLING
            source.set("resampling", resampled[h.band.name])
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = str(h.band.path)
        ET.SubElement(source, "SourceBand").text = "1"
        ET.SubElement(source, "SourceProperties", RasterXSize=str(h.width), RasterYSize=str(h.height),
                      DataType=_GDAL_TYPES.get(h.dtype, "Float64"), BlockXSize=str(h.block[1]),
                      BlockYSize=str(h.block[0]))
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(h.width), ySize=str(h.height))
        ET.SubElement(source, "DstRect", xOff=_number(dst[0]), yOff=_number(dst[1]), xSize=_number(dst[2]),
                      ySize=_number(dst[3]))
        if h.band.name in nodata:
            ET.SubElement(source, "NODATA").text = repr(nodata[h.band.name])
    ET.indent(root)
    return root, resampled


def _verify(path: Path, bands: Sequence[str]) -> None:
    """Open a freshly written stack and read one pixel of every band (each source file opens)."""
    try:
        with rasterio.open(path) as ds:
            names = tuple(ds.descriptions)
            if ds.count != len(bands) or names != tuple(bands):
                raise OutputError(f"the stack written to '{path}' reads back with bands {names}, not {tuple(bands)}; "
                                  "this is a bug, please report it")
            for index in range(1, ds.count + 1):
                ds.read(index, window=Window(0, 0, 1, 1))
    except RasterioError as error:
        raise RasterReadError(f"the stack written to '{path}' cannot be read back ({error}); check the band files "
                              "open in GDAL (gdalinfo)") from error


def _write_geotiff(vrt: Path, out: Path, nodata: dict[str, float], progress: Callable[[float, str], None],
                   should_stop: Callable[[], bool]) -> None:
    """Stream the VRT into a tiled, compressed GeoTIFF at ``out``, 256 rows at a time, through
    :class:`~core.io.writer.AtomicGeoTiff` (verified before it replaces anything)."""
    values = set(nodata.values())
    with rasterio.open(vrt) as src:
        if len(values) > 1 or (values and len(nodata) != src.count):
            raise BandMismatchError(f"the bands declare different nodata values ({nodata}) and a GeoTIFF holds one "
                                    "for all bands; write a .vrt instead")
        dtype = src.dtypes[0] if len(set(src.dtypes)) == 1 else "float64"
        grid = Grid(crs=src.crs, transform=src.transform, width=src.width, height=src.height)
        with AtomicGeoTiff(out, grid, src.count, dtype, values.pop() if values else None,
                           descriptions=[d or "" for d in src.descriptions]) as dst:
            for top in range(0, src.height, 256):
                if should_stop():
                    raise Cancelled("stopped while writing the GeoTIFF; nothing was written")
                window = Window(0, top, src.width, min(256, src.height - top))
                dst.write(src.read(window=window), window)
                progress(0.5 + 0.5 * (top + window.height) / src.height, "writing the GeoTIFF")


def build_stack(source: str | Path, out: str | Path, bands: Sequence[str] | None = None, resolution: float = 10.0,
                overwrite: bool = False, progress: Callable[[float, str], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> StackResult:
    """Write one multi-band raster of named Sentinel-2 bands on the grid of the finest band.

    Args:
        source: a folder of ``*_Bxx.tif``/``*_Bxx.jp2`` band files (OSCD layout, a product's ``IMG_DATA``), or an
            unzipped ``.SAFE`` product (L1C: ``GRANULE/*/IMG_DATA/*_Bxx.jp2``; L2A: ``R10m``/``R20m``/``R60m``).
        out: the stack to write: ``.vrt`` (sources referenced by absolute path) or ``.tif`` (a tiled GeoTIFF).
        bands: band names to keep (any spelling, ``b2`` or ``B02``); default every band found. The stack always
            lists them in Sentinel-2 order (B01..B08, B8A, B09..B12).
        resolution: nominal pixel size of the grid in metres: 10, 20 or 60. The grid is that of the finest
            band at or above it; finer bands are averaged onto it, coarser ones interpolated bilinearly.
        overwrite: replace an existing ``out``.
        progress: called with (fraction, message).
        should_stop: polled between steps; when it returns True nothing is written.

    Returns:
        What was written: bands, their source files, the grid, resampling and nodata per band.

    Raises:
        RasterReadError: no band files, an unreadable one, or a product with several granules.
        ConfigError: ``resolution`` is not 10, 20 or 60.
        BandMismatchError: a requested band is missing or not a Sentinel-2 band, or a band is given twice.
        GridMismatchError: bands on different CRSs or extents.
        OutputError: ``out`` is not .vrt/.tif, is an input, exists without ``overwrite``, or its folder is missing.
        Cancelled: ``should_stop`` returned True.
    """
    progress = progress or (lambda fraction, message: None)
    should_stop = should_stop or (lambda: False)
    source, out = Path(source), Path(out)
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"--resolution {resolution:g} is not a Sentinel-2 resolution; use 10, 20 or 60")
    metres = int(resolution)
    kind, found = find_band_files(source, metres)
    wanted = [normalise_band_name(b) for b in bands] if bands else list(found)
    unknown = [b for b in wanted if b not in NATIVE_RESOLUTION]
    if unknown:
        raise BandMismatchError(f"--bands names {unknown}, not Sentinel-2 bands; use names from "
                                f"{', '.join(SENTINEL2_BANDS)}")
    if len(set(wanted)) != len(wanted):
        raise BandMismatchError(f"--bands lists {sorted({b for b in wanted if wanted.count(b) > 1})} more than once; "
                                "give each band once")
    missing = [b for b in wanted if b not in found]
    if missing:
        raise BandMismatchError(f"--source '{source}' has no {', '.join(missing)} (it has "
                                f"{', '.join(b for b in SENTINEL2_BANDS if b in found)}); drop them from --bands")
    names = [b for b in SENTINEL2_BANDS if b in wanted]
    files = [found[b] for b in names]
    _check_output(out, [f.path for f in files], overwrite)

    headers = []
    for i, band in enumerate(files):
        if should_stop():
            raise Cancelled("stopped before the stack was written; nothing was written")
        progress(0.4 * i / len(files), f"reading the header of {band.name}")
        headers.append(_header(band))
    eligible = [h for h in headers if h.band.resolution >= metres]
    if not eligible:
        raise BandMismatchError(f"--resolution {metres}: none of {', '.join(names)} is at {metres} m or coarser, so "
                                f"there is no {metres} m grid to take; add such a band to --bands or use "
                                "--resolution 10")
    grid = min(eligible, key=lambda h: (abs(h.transform.a * h.transform.e), names.index(h.band.name)))
    _check_grids(headers, grid)
    nodata = {h.band.name: float(h.nodata) for h in headers if h.nodata is not None}
    if kind != "folder":
        for h in headers:  # the product format defines 0 as "no data" (Sentinel-2 PSD); JP2 files do not say so
            nodata.setdefault(h.band.name, 0.0)
    root, resampled = _vrt_xml(headers, grid, nodata)

    progress(0.45, "writing the stack")
    as_vrt = out.suffix.lower() == ".vrt"
    # temporaries beside the output (same file system, so the rename is atomic), named after it and this process
    # so that a later run removes what a killed one left (see core.io.writer)
    scratch = out.with_suffix(".vrt")
    for name in {out, scratch}:
        remove_stale_temporaries(name)
    tmp = temporary_name(out)
    vrt = tmp if as_vrt else temporary_name(scratch)
    try:
        try:
            ET.ElementTree(root).write(vrt, encoding="utf-8")
            sync_file(vrt)
        except OSError as error:
            raise write_error(vrt, error) from error
        _verify(vrt, names)
        if should_stop():
            raise Cancelled("stopped before the stack was written; nothing was written")
        if as_vrt:
            os.replace(tmp, out)
        else:  # AtomicGeoTiff verifies the copy and renames it
            _write_geotiff(vrt, out, nodata, progress, should_stop)
    finally:
        for path in {tmp, vrt}:
            path.unlink(missing_ok=True)
    progress(1.0, "stack written")
    t = grid.transform
    logger.info("%s stack of %d bands (%s) on the %d x %d grid of %s: %s%s", kind, len(names), ", ".join(names),
                grid.width, grid.height, grid.band.name, out,
                f"; resampled: {', '.join(f'{b} {how}' for b, how in resampled.items())}" if resampled else "")
    return StackResult(path=out, bands=tuple(names), sources=tuple(f.path for f in files), kind=kind,
                       crs=grid.crs.to_string() if grid.crs else "", transform=(t.a, t.b, t.c, t.d, t.e, t.f),
                       width=grid.width, height=grid.height, resampled=resampled, nodata=nodata)

