"""Self-training: unlabelled OSCD cities labelled by a change model where it is confident.

A pseudo-label is a change mask made from a model's probabilities: 1 where the probability is at least
``positive``, 0 where it is below ``negative``, 255 (ignored by the loss) in between; with a stable-vegetation
cut (:mod:`~core.change.stable_cover`), 0 also where both dates are green, so that the student learns the rule
instead of copying the teacher's seasonal false alarms. Stored as one
single-band uint8 GeoTIFF per city, ``<city>.tif`` on the B02 grid of its ``imgs_1`` (the OSCD label grid),
and read back as extra training cities by ``finetune-change --pseudo-labels DIR`` (never for validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from torch import nn

from ..errors import RasterReadError
from ..io.normalization import BandStats
from .matching import uses_matching
from .oscd import oscd_cities
from .patches import IGNORE, CityStack, normalised_pair, read_city_pair
from .predict import predict_probability
from .stable_cover import VEGETATION, StableCover, StableRule


def pseudo_label(probability: np.ndarray, negative: float, positive: float) -> np.ndarray:
    """uint8 (H, W): 1 where ``probability >= positive``, 0 where ``< negative``, 255 elsewhere and on NaN."""
    label = np.full(probability.shape, IGNORE, dtype=np.uint8)
    label[probability < negative] = 0
    label[probability >= positive] = 1
    return label


def write_pseudo_label(label: np.ndarray, like: Path, out: Path) -> None:
    """Write ``label`` as ``out`` with the grid of the raster ``like`` (a temporary name, then a rename)."""
    with rasterio.open(like) as ds:
        profile = {"driver": "GTiff", "width": ds.width, "height": ds.height, "count": 1, "dtype": "uint8",
                   "crs": ds.crs, "transform": ds.transform, "nodata": IGNORE, "compress": "deflate"}
    partial = out.with_name(f".{out.name}.partial")
    with rasterio.open(partial, "w", **profile) as ds:
        ds.write(label, 1)
    partial.replace(out)


def label_unlabelled_cities(teacher: nn.Module | Sequence[nn.Module], config: dict[str, Any], data_root: str | Path,
                            folder: str | Path, negative: float = 0.05, positive: float = 0.5,
                            vegetation: float | None = None) -> list[Path]:
    """Pseudo-labels of every unlabelled city of an OSCD root by the change model ``teacher`` (with its
    ``config``), written to ``folder`` as ``<city>.tif`` (see :func:`pseudo_label`); returns the files.

    ``teacher`` may be several models of the same recipe (same bands and normalisation as ``config``): an
    ensemble whose probabilities are averaged. ``vegetation``: an NDVI cut; pixels green at both dates above it
    are labelled 0 (no change) whatever the teacher says.
    """
    teachers = list(teacher) if isinstance(teacher, Sequence) else [teacher]
    stats = BandStats.from_dict(config["normalization"])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for city in oscd_cities(data_root, labelled=False):
        if city.label is not None:
            continue
        x1, x2, valid = normalised_pair(city, config["bands"], stats, uses_matching(config))
        prob = np.mean([predict_probability(model, x1, x2) for model in teachers], axis=0)
        if vegetation is not None:
            raw1, raw2, _ = read_city_pair(city, [VEGETATION.a, VEGETATION.b])
            prob = StableCover((StableRule(VEGETATION, 0, 1, vegetation),)).apply(prob, raw1, raw2)
        label = pseudo_label(np.where(valid, prob, np.nan), negative, positive)
        written.append(folder / f"{city.name}.tif")
        write_pseudo_label(label, next(city.t1.glob("*_B02.tif")), written[-1])
    return written


def pseudo_label_cities(folder: str | Path) -> list[str]:
    """City names of the ``<city>.tif`` files in ``folder``, sorted.

    Raises:
        RasterReadError: not a folder, or no ``.tif`` in it.
    """
    folder = Path(folder)
    names = sorted(p.stem for p in folder.glob("*.tif")) if folder.is_dir() else []
    if not names:
        raise RasterReadError(f"--pseudo-labels '{folder}' holds no <city>.tif; give the folder of pseudo-label "
                              "GeoTIFFs named after OSCD cities")
    return names


def load_pseudo_cities(data_root: str | Path, folder: str | Path, bands: Sequence[str],
                       stats: BandStats, match: bool = False) -> list[CityStack]:
    """The cities of ``folder``'s pseudo-labels, read from the OSCD root and normalised like training cities.

    Raises:
        RasterReadError: a city not in the root, or a label whose shape differs from the city's B02 grid.
    """
    stacks = []
    for city in oscd_cities(data_root, pseudo_label_cities(folder), labelled=False):
        x1, x2, valid = normalised_pair(city, bands, stats, match)
        path = Path(folder) / f"{city.name}.tif"
        with rasterio.open(path) as ds:
            label = ds.read(1)
        if label.shape != valid.shape:
            raise RasterReadError(f"'{path}' is {label.shape[1]}x{label.shape[0]} px but the B02 grid of "
                                  f"'{city.t1}' is {valid.shape[1]}x{valid.shape[0]}; it was made for other images")
        label = np.where(valid, label, IGNORE).astype(np.uint8)
        stacks.append(CityStack(f"{city.name} (pseudo)", x1, x2, label))
    return stacks
