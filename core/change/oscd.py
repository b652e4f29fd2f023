"""The OSCD layout: cities with two dates of ``*_Bxx.tif`` band files and change masks.

Traps handled here (see shared/data/README.md): masks hold 1 = no change and 2 = change (not
0/1), carry no CRS (they lie on the B02 grid of ``imgs_1``), and some cities' ``imgs_2`` have a
slightly different pixel size (the readers warp them onto ``imgs_1``'s grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from ..errors import RasterReadError
from ..io.raster import DateRaster, open_date

NO_CHANGE, CHANGE = 1, 2  # values in OSCD's *-cm.tif


@dataclass(frozen=True)
class OscdCity:
    """One OSCD city: its two dates and, when labelled, its change mask."""

    name: str
    t1: Path
    t2: Path
    label: Path | None

    def dates(self) -> tuple[DateRaster, DateRaster]:
        return open_date(self.t1), open_date(self.t2)


def oscd_cities(root: str | Path, names: list[str] | None = None, labelled: bool = True) -> list[OscdCity]:
    """The cities of an OSCD root, in the given order (default: all, sorted).

    Raises:
        RasterReadError: the root is not an OSCD root, or a named city (or its label) is missing.
    """
    root = Path(root)
    images = root / "images"
    if not images.is_dir():
        raise RasterReadError(f"'{root}' is not an OSCD root (no images/ folder); give the folder holding "
                              "images/<city>/imgs_1 and labels/<city>/cm")
    available = sorted(p.name for p in images.iterdir() if (p / "imgs_1").is_dir())
    cities = []
    for name in names or available:
        if name not in available:
            raise RasterReadError(f"city '{name}' is not in '{images}'; choose from {', '.join(available)}")
        label = root / "labels" / name / "cm" / f"{name}-cm.tif"
        if labelled and not label.is_file():
            if names:
                raise RasterReadError(f"city '{name}' has no change mask '{label}'; choose a labelled city")
            continue
        cities.append(OscdCity(name, images / name / "imgs_1", images / name / "imgs_2",
                               label if label.is_file() else None))
    return cities


def read_change_mask(city: OscdCity, height: int, width: int) -> np.ndarray:
    """The city's change mask as uint8 (0 no change, 1 change, 255 unlabelled), shape (height, width).

    Raises:
        RasterReadError: no mask, or a mask whose shape differs from the B02 grid of ``imgs_1``.
    """
    if city.label is None:
        raise RasterReadError(f"city '{city.name}' has no change mask; choose a labelled city")
    with rasterio.open(city.label) as ds:
        raw = ds.read(1)
    if raw.shape != (height, width):
        raise RasterReadError(f"'{city.label}' is {raw.shape[1]}x{raw.shape[0]} px but the B02 grid of "
                              f"'{city.t1}' is {width}x{height}; the label does not belong to these images")
    mask = np.full(raw.shape, 255, dtype=np.uint8)
    mask[raw == NO_CHANGE] = 0
    mask[raw == CHANGE] = 1
    return mask
