"""Change labels an analyst drew: a polygon layer rasterised onto t1's grid, and its spatial hold-out.

Any layer GDAL/OGR reads (GeoPackage, Shapefile, GeoJSON...) with an integer field (default ``change``):
1 = change, 0 = no change. A QGIS layer source such as ``labels.gpkg|layername=drawn`` names the layer.
Polygons in another CRS are reprojected onto the grid's; pixels inside no polygon are unlabelled (255);
where polygons overlap, change wins.

Validation holds out whole polygons of each class (never pixels of a training polygon); a class drawn as
a single polygon (or one polygon holding most of its pixels) has that polygon cut at a row: its bottom part
validates, its top part trains.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.features import rasterize

from ..errors import ConfigError, DatasetError
from ..io.raster import Grid

logger = logging.getLogger(__name__)

UNLABELLED = 255
CHANGE_VALUES = (0, 1)
POLYGON_TYPES = ("POLYGON", "MULTIPOLYGON", "CURVEPOLYGON", "MULTISURFACE")


@dataclass(frozen=True)
class LabelPolygon:
    """One drawn polygon: GeoJSON geometry in the grid's CRS, its class (0 no change, 1 change), its feature id."""

    geometry: dict[str, Any]
    change: int
    fid: int


@dataclass(frozen=True)
class LabelSplit:
    """Training and validation labels of one grid (uint8 (H, W): 0, 1, 255 = unlabelled), disjoint."""

    train: np.ndarray
    val: np.ndarray
    cut_polygons: tuple[int, ...]  # feature ids of polygons cut at a row (their bottom part validates)


def label_counts(label: np.ndarray) -> dict[str, int]:
    """Labelled pixels per class: ``{"no_change": n0, "change": n1}``."""
    return {"no_change": int(np.count_nonzero(label == 0)), "change": int(np.count_nonzero(label == 1))}


def parse_layer_source(source: str) -> tuple[str, str | int | None]:
    """Split a QGIS layer source ``path|layername=NAME`` (or ``|layerid=N``) into the path and the layer.

    Raises:
        ConfigError: an option this reader cannot honour (e.g. ``|subset=``: adapting would use every feature).
    """
    path, *options = str(source).split("|")
    layer: str | int | None = None
    for option in options:
        key, _, value = option.partition("=")
        if key == "layername":
            layer = value
        elif key == "layerid":
            layer = int(value) if value.isdigit() else value
        elif key != "geometrytype":
            raise ConfigError(f"--labels '{source}': the option '|{option}' is not supported; save the features you "
                              "want as their own layer (e.g. Export > Save Selected Features As) and pass that")
    return path, layer


def _open_layer(source: str) -> tuple[Any, Any]:
    """(data source, layer) of a labels source; the data source must stay referenced while the layer is used."""
    from osgeo import ogr

    path, name = parse_layer_source(source)
    if not Path(path).exists():
        raise DatasetError(f"--labels '{path}' does not exist; give a polygon layer (GeoPackage, Shapefile, GeoJSON)")
    try:
        ds = ogr.Open(path)
    except RuntimeError:  # when another library switched OGR's exceptions on
        ds = None
    if ds is None or ds.GetLayerCount() == 0:
        raise DatasetError(f"--labels '{path}' is not a vector layer GDAL/OGR can read; give a polygon layer "
                           "(GeoPackage, Shapefile, GeoJSON) with a 'change' field")
    names = [ds.GetLayerByIndex(i).GetName() for i in range(ds.GetLayerCount())]
    if name is None and len(names) > 1:
        raise ConfigError(f"--labels '{path}' holds {len(names)} layers ({', '.join(names)}); name one as "
                          f"'{path}|layername={names[0]}'")
    layer = ds.GetLayerByIndex(name) if isinstance(name, int) else ds.GetLayerByName(name) if name else ds.GetLayer(0)
    if layer is None:
        raise ConfigError(f"--labels '{source}': no layer {name!r} (it has {', '.join(names)})")
    return ds, layer


def _transform(layer: Any, grid: Grid, source: str) -> Any:
    """An OGR coordinate transformation from the layer's CRS to the grid's (None when they are the same)."""
    from osgeo import osr

    layer_srs = layer.GetSpatialRef()
    if grid.crs is None:
        raise ConfigError(f"--t1 has no CRS, so the polygons of '{source}' cannot be placed on it; give a "
                          "georeferenced raster")
    if layer_srs is None:
        raise DatasetError(f"--labels '{source}' has no CRS; save the layer with its CRS (e.g. in QGIS: "
                           "Layer CRS, then Export)")
    grid_srs = osr.SpatialReference()
    grid_srs.ImportFromWkt(grid.crs.to_wkt())
    for srs in (layer_srs, grid_srs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if layer_srs.IsSame(grid_srs):
        return None
    logger.info("reprojecting the polygons of '%s' onto the raster's CRS", source)
    return osr.CoordinateTransformation(layer_srs, grid_srs)


def read_label_polygons(source: str | Path, grid: Grid, field: str = "change") -> list[LabelPolygon]:
    """The polygons of a labels layer, reprojected onto ``grid``'s CRS, with their 0/1 class.

    Raises:
        DatasetError: not a readable vector, no polygons, a missing field or values other than 0 and 1,
            or no polygon on the grid.
    """
    source = str(source)
    ds, layer = _open_layer(source)
    definition = layer.GetLayerDefn()
    fields = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if field not in fields:
        raise DatasetError(f"--labels '{source}' has no field '{field}' (it has {', '.join(fields) or 'none'}); "
                           "add an integer field with 1 = change, 0 = no change, or name yours with --label-field")
    transform = _transform(layer, grid, source)
    polygons: list[LabelPolygon] = []
    for feature in layer:
        value = feature.GetField(field)
        if value not in CHANGE_VALUES:
            raise DatasetError(f"--labels '{source}': feature {feature.GetFID()} has {field} = {value!r}; use 1 for "
                               "change and 0 for no change (every feature needs one of them)")
        geometry = feature.GetGeometryRef()
        if geometry is None or geometry.IsEmpty():
            continue
        if geometry.GetGeometryName() not in POLYGON_TYPES:
            raise DatasetError(f"--labels '{source}': feature {feature.GetFID()} is a {geometry.GetGeometryName()}; "
                               "draw the labels as polygons")
        geometry = geometry.Clone()
        if transform is not None:
            geometry.Transform(transform)
        polygons.append(LabelPolygon(json.loads(geometry.ExportToJson()), int(value), int(feature.GetFID())))
    del ds
    if not polygons:
        raise DatasetError(f"--labels '{source}' holds no polygon; draw change (1) and no-change (0) polygons")
    return polygons


def _burn(shapes: Sequence[tuple[dict[str, Any], int]], grid: Grid, dtype: str) -> np.ndarray:
    if not shapes:
        return np.zeros((grid.height, grid.width), dtype=dtype)
    return rasterize(shapes, out_shape=(grid.height, grid.width), transform=grid.transform, fill=0, dtype=dtype)


def _owners(polygons: Sequence[LabelPolygon], grid: Grid) -> np.ndarray:
    """Index + 1 of the polygon that labels each pixel (0: none), no-change burnt first so change wins."""
    order = sorted(range(len(polygons)), key=lambda i: polygons[i].change)
    return _burn([(polygons[i].geometry, i + 1) for i in order], grid, "int32")


def rasterize_labels(polygons: Sequence[LabelPolygon], grid: Grid, valid: np.ndarray | None = None,
                     source: str = "the labels") -> np.ndarray:
    """The label array (uint8 (H, W): 0 no change, 1 change, 255 unlabelled or invalid) of ``polygons``.

    Raises:
        DatasetError: no polygon covers a pixel of the grid (or only invalid pixels).
    """
    owner = _owners(polygons, grid)
    classes = np.array([UNLABELLED] + [p.change for p in polygons], dtype=np.uint8)
    label = classes[owner]  # (H, W)
    if valid is not None:
        label[~valid] = UNLABELLED
    inside = len(np.unique(owner[owner > 0]))
    if inside == 0 or not (label <= 1).any():
        left, bottom, right, top = grid.bounds
        raise DatasetError(f"--labels '{source}': none of its {len(polygons)} polygons covers a valid pixel of the "
                           f"rasters (bounds {left:.6g}, {bottom:.6g}, {right:.6g}, {top:.6g} in {grid.crs}); draw "
                           "the polygons over the rasters")
    if inside < len(polygons):
        logger.warning("--labels '%s': %d of its %d polygons lie outside the rasters and are not used", source,
                       len(polygons) - inside, len(polygons))
    return label


def _choose_val(ids: list[int], pixels: np.ndarray, fraction: float, rng: np.random.Generator) -> set[int]:
    """Whole polygons (indexes into ``pixels``) that give validation about ``fraction`` of a class's pixels."""
    total = float(pixels[ids].sum())
    chosen: set[int] = set()
    taken = 0.0
    for i in rng.permutation(ids):
        if taken >= fraction * total:
            break
        if taken + pixels[i] <= 0.5 * total and len(chosen) + 1 < len(ids):
            chosen.add(int(i))
            taken += pixels[i]
    return chosen if taken >= 0.5 * fraction * total else set()


def split_labels(polygons: Sequence[LabelPolygon], grid: Grid, valid: np.ndarray, fraction: float = 0.25,
                 seed: int = 0) -> LabelSplit:
    """Hold out about ``fraction`` of each class's labelled pixels for validation, spatially.

    Whole polygons validate when a class has several of fitting size; otherwise the class's largest polygon
    is cut at the row below which ``fraction`` of its pixels lie. A validation pixel is never inside a
    training polygon (nor the training part of a cut one); training never sees a validation label.
    """
    owner = _owners(polygons, grid)
    owner[~valid] = 0
    pixels = np.bincount(owner.ravel(), minlength=len(polygons) + 1)[1:]  # (P,) pixels each polygon labels
    rng = np.random.default_rng(seed)
    val: set[int] = set()
    cuts: dict[int, int] = {}  # polygon index -> first validation row
    rows = np.arange(grid.height)[:, None]
    for change in CHANGE_VALUES:
        ids = [i for i, p in enumerate(polygons) if p.change == change and pixels[i] > 0]
        if not ids:
            continue
        chosen = _choose_val(ids, pixels, fraction, rng)
        if chosen:
            val |= chosen
            continue
        largest = max(ids, key=lambda i: pixels[i])
        own_rows = np.nonzero(owner == largest + 1)[0]
        cuts[largest] = int(np.quantile(own_rows, 1.0 - fraction)) + 1 if len(own_rows) > 1 else grid.height
    classes = np.array([UNLABELLED] + [p.change for p in polygons], dtype=np.uint8)
    label = classes[owner]  # (H, W)
    in_val = np.isin(owner, [i + 1 for i in val])
    train_cover = _burn([(p.geometry, 1) for i, p in enumerate(polygons) if i not in val and i not in cuts],
                        grid, "uint8").astype(bool)
    for i, row in cuts.items():
        inside = _burn([(polygons[i].geometry, 1)], grid, "uint8").astype(bool)
        in_val |= (owner == i + 1) & (rows >= row)
        train_cover |= inside & (rows < row)
    val_label = np.where(in_val & ~train_cover, label, UNLABELLED).astype(np.uint8)
    train_label = np.where(in_val, UNLABELLED, label).astype(np.uint8)
    return LabelSplit(train_label, val_label, tuple(polygons[i].fid for i in cuts))
