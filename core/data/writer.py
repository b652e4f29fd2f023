"""Writing GeoTIFFs window by window, atomically.

:class:`AtomicGeoTiff` writes a tiled, compressed GeoTIFF on a reference grid to a temporary
name in the destination folder and renames it into place only when everything was written: a
crash, an error or a cancel leaves no half-written output behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from ..errors import OutputError
from .raster import Grid

BLOCK = 256


def check_writable(path: str | Path, argument: str) -> Path:
    """Raise :class:`OutputError` unless ``path`` can be created (its folder exists and is writable)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{argument} '{path}' is a folder; give a file name such as change.tif")
    if not path.parent.is_dir():
        raise OutputError(f"{argument} '{path}': folder '{path.parent}' does not exist; create it or choose another")
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{argument} '{path}': folder '{path.parent}' is not writable; choose another folder")
    return path


class AtomicGeoTiff:
    """A GeoTIFF on ``grid`` that appears at ``path`` only after a successful ``with`` block."""

    def __init__(self, path: str | Path, grid: Grid, count: int, dtype: str, nodata: float | None,
                 descriptions: Sequence[str] = (), colormap: dict[int, tuple[int, int, int, int]] | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.profile: dict[str, Any] = dict(
            driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype, crs=grid.crs,
            transform=grid.transform, nodata=nodata, compress="deflate", BIGTIFF="IF_SAFER",
            tiled=grid.width >= BLOCK and grid.height >= BLOCK, blockxsize=BLOCK, blockysize=BLOCK,
        )
        self.descriptions = descriptions
        self.colormap = colormap
        self.tags = tags or {}
        self._ds: Any = None

    def __enter__(self) -> AtomicGeoTiff:
        self._ds = rasterio.open(self.tmp, "w", **self.profile)
        for index, text in enumerate(self.descriptions, 1):
            self._ds.set_band_description(index, text)
        if self.colormap:
            self._ds.write_colormap(1, self.colormap)
        if self.tags:
            self._ds.update_tags(**self.tags)
        return self

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write a (count, h, w) or (h, w) array into ``window``."""
        if data.ndim == 2:
            data = data[None]
        self._ds.write(data.astype(self.profile["dtype"], copy=False), window=window)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._ds.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
