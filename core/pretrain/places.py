"""Places on the ground: the scene ids of scene-wide matching.

In the method (SeCo's data) a *scene* is a place of about 2.6 km seen at several dates. A raster
is not a place: one large raster holds many, and two files of one place (two products, two dates)
are the same place. So a patch's scene id is the cell of a square grid on the ground (side
``cell_m`` metres, default 2560 m = 256 px at 10 m) that holds the patch's centre, derived from map
coordinates only: every date of a cell shares its id, whatever file it came from.

When everything a run reads lies within one cell, every queued key is "the same place" as every
query: scene-wide matching would then remove all negatives (``mask``: the contrastive loss is
exactly 0) or spread targets over unrelated patches (``soft``). :func:`single_place` tells, so the
training can switch scene-wide matching off and say why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Sequence

from ..config import LossConfig
from ..io.raster import Grid
from .scenes import Scene

logger = logging.getLogger(__name__)

DEFAULT_CELL_M = 2560.0
METRES_PER_DEGREE = 111_320.0  # along a meridian; cells on geographic grids are this many metres per degree


def _cell_side(grid: Grid, cell_m: float) -> float:
    """The cell side in the grid's CRS units (degrees for a geographic CRS, else metres or pixels)."""
    return cell_m / METRES_PER_DEGREE if grid.crs is not None and grid.crs.is_geographic else cell_m


def place_id(grid: Grid, row: float, col: float, cell_m: float = DEFAULT_CELL_M) -> int:
    """The id of the ground cell holding pixel ``(row, col)`` of ``grid`` (a non-negative 62-bit int).

    Args:
        grid: the raster's grid (CRS and transform; without a CRS the transform's units are used).
        row, col: pixel coordinates (fractions allowed, e.g. a patch centre).
        cell_m: the cell side in metres.
    """
    x, y = grid.transform * (col, row)
    side = _cell_side(grid, cell_m)
    key = f"{grid.crs.to_string() if grid.crs else ''}|{math.floor(x / side)}|{math.floor(y / side)}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 2


def single_place(grids: Sequence[Grid], cell_m: float = DEFAULT_CELL_M) -> bool:
    """True when all ``grids`` share a CRS and their joint extent fits within one cell in both directions."""
    if len({g.crs.to_string() if g.crs else "" for g in grids}) > 1:
        return False
    bounds = [g.bounds for g in grids]
    width = max(b[2] for b in bounds) - min(b[0] for b in bounds)
    height = max(b[3] for b in bounds) - min(b[1] for b in bounds)
    side = _cell_side(grids[0], cell_m)
    return width <= side and height <= side


def matching_for_places(scenes: Sequence[Scene], cell_m: float, loss: LossConfig) -> tuple[LossConfig, str]:
    """The loss settings for these scenes: scene-wide matching off when they all lie in one place.

    Returns:
        ``(loss, reason)``: ``reason`` is empty unless scene-wide matching was switched off (then it is
        logged as a warning and recorded in the model's provenance).
    """
    if loss.swm_mode == "off" or not single_place([s.grid for s in scenes], cell_m):
        return loss, ""
    effect = ("no negatives would be left: a contrastive loss of exactly 0" if loss.swm_mode == "mask"
              else "its soft targets would go to unrelated patches")
    reason = (f"switched off: every raster of this run lies within one place of {cell_m:g} m, so every queued key "
              f"would count as the query's own place ({loss.swm_mode} mode: {effect}); plain MoCo contrast is used "
              "instead. Add rasters of other places, or give a smaller --scene-cell, to use it")
    logger.warning("scene-wide matching %s", reason)
    return dataclasses.replace(loss, swm_mode="off"), reason
