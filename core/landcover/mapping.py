"""A land-cover map of a whole raster from a patch classifier, by sliding window.

A ``swimdiff finetune-classify`` model names one class per patch (64 px for EuroSAT, 120 px for
BigEarthNet). To map a raster, windows of the model's patch size slide over it with overlap;
each window's class probabilities are spread over its pixels with a taper that favours its
centre, and every pixel takes the class of highest blended probability. Windows are streamed
strip by strip (:mod:`core.io.blend`): memory follows ``classes x window x width``, never the
raster's height. Multi-label models (BigEarthNet) map their most probable label; the per-class
probabilities (sigmoid) are in the optional probabilities raster.

The map is a uint8 GeoTIFF on the raster's grid: class ids 0..K-1, 255 where the raster has no
data, a colour table (:mod:`core.io.palette`), and the class names in its metadata
(``CLASS_NAMES`` as JSON, ``CLASS_<id>`` each), so they travel with the file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from ..change.pair import Progress, ShouldStop, Ticker, name_by_order
from ..checkpoint import read_config
from ..device import describe_device, resolve_device
from ..errors import ConfigError, NoDataError
from ..io.blend import Tiling, stream_blended
from ..io.normalization import BandStats, with_value_scale
from ..io.output_paths import check_writable, date_files, refuse_inputs_as_outputs
from ..io.palette import RGB, class_colors
from ..io.raster import DateRaster, StackReader, open_date
from ..io.tiling import Tile
from ..io.writer import AtomicGeoTiff, OutputGroup
from ..models.classifier import Classifier
from .patches import RGB_BANDS
from .training import CLASSIFY_KIND, load_classifier

logger = logging.getLogger(__name__)

CLASS_NODATA = 255
MIN_WINDOW = 16  # px: a ResNet reduces a window 32-fold, so smaller ones carry almost no context


@dataclass(frozen=True)
class LandCoverResult:
    """What a land-cover run wrote and found.

    Attributes:
        landcover: the class map GeoTIFF.
        probabilities: the per-class probability GeoTIFF, or None.
        classes: class names; index = class id.
        colors: the colour of each class id.
        class_fractions: share of the valid pixels mapped to each class.
        multi_label: the model names several labels per patch (the map shows the most probable).
        window: window side used, overlap: their overlap, in pixels.
        megapixels_per_second: speed of the whole run.
        device: where the network ran.
    """

    landcover: Path
    probabilities: Path | None
    classes: list[str]
    colors: list[RGB]
    class_fractions: dict[str, float]
    multi_label: bool
    window: int
    overlap: int
    megapixels_per_second: float
    device: str


def open_raster(path: str | Path | DateRaster, bands: Sequence[str]) -> DateRaster:
    """The raster to classify, its bands named (by description, else by order when the count matches;
    three unnamed bands for an RGB model are taken as red, green, blue).

    Raises:
        RasterReadError, BandMismatchError: unreadable, or without the model's bands.
    """
    if set(bands) == set(RGB_BANDS):  # an unnamed 3-band image is red, green, blue in that order
        bands = RGB_BANDS
    return name_by_order(open_date(path), bands)


def open_classify_raster(raster: str | Path, model_dir: str | Path, assume_band_names: Sequence[str] = (),
                         value_scale: str = "auto") -> DateRaster:
    """The raster to classify, its bands named as the model's and its values on the model's scale.

    The same naming and scale rules as ``swimdiff detect`` (see :func:`~core.change.pair.open_pair`), applied
    before any weights are loaded, so a bad raster stops at once.

    Raises:
        CheckpointFormatError: not a classifier folder. RasterReadError, BandMismatchError,
        ValueScaleError, ConfigError: see their messages.
    """
    stats = BandStats.from_dict(read_config(Path(model_dir), CLASSIFY_KIND)["normalization"])
    date = open_raster(open_date(raster, assume_band_names), stats.bands)
    return with_value_scale(date, stats.bands, stats.value_scale, value_scale)


def warn_on_value_scale(date: DateRaster, config: dict[str, Any]) -> None:
    """Warn when the raster's data type contradicts what the model was trained on (8-bit images vs reflectance)."""
    eight_bit_model = bool(config.get("provenance", {}).get("eight_bit"))
    with rasterio.open(date.bands[0].path) as ds:
        dtype = ds.dtypes[date.bands[0].index - 1]
    if eight_bit_model and dtype != "uint8":
        logger.warning("the model was trained on 8-bit images (JPG/PNG, values 0-255) but '%s' holds %s values: "
                       "the map will be wrong unless they are 0-255 too; classify an 8-bit RGB rendering, or train "
                       "the model on reflectance GeoTIFFs", date.source, dtype)
    elif not eight_bit_model and dtype == "uint8":
        logger.warning("the model was trained on reflectance but '%s' holds 8-bit (0-255) values: the map will be "
                       "wrong if they are a display rendering; classify the reflectance bands instead", date.source)


def choose_window(config: dict[str, Any], height: int, width: int, tile: int | None,
                  overlap: int | None) -> tuple[int, int]:
    """(window side, overlap): the model's patch size and half of it unless given; clamped to the raster.

    Raises:
        ConfigError: a window or overlap out of range, or a raster too small for any window.
    """
    patch = int(config.get("patch_size") or 64)
    side = patch if tile is None else tile
    if side < MIN_WINDOW:
        raise ConfigError(f"--tile {side} is too small; use {MIN_WINDOW} or more (the model's patch size is {patch})")
    if side != patch:
        logger.warning("--tile %d differs from the %d px patches the model learnt from: objects appear at another "
                       "scale of context, which may change the classes", side, patch)
    if min(height, width) < MIN_WINDOW:
        raise ConfigError(f"the raster is {width} x {height} px; a land-cover map needs at least "
                          f"{MIN_WINDOW} x {MIN_WINDOW} (windows of {patch} px work best)")
    side = min(side, height, width)
    used = side // 2 if overlap is None else overlap
    if not 0 <= used < side:
        raise ConfigError(f"--overlap {used} is out of range; use 0 up to the window side {side} (e.g. {side // 2})")
    return side, used


def class_probabilities(model: Classifier, x: np.ndarray, multi_label: bool, device: torch.device) -> np.ndarray:
    """(n, C, h, w) normalised windows -> class probabilities (n, K): softmax, or sigmoid when multi-label."""
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                         enabled=device.type == "cuda"):
        logits = model(torch.from_numpy(x).to(device)).float()
    probabilities = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
    return probabilities.cpu().numpy()


def map_land_cover(raster: str | Path | DateRaster, model_dir: str | Path, out: str | Path,
                   probabilities_out: str | Path | None = None, tile: int | None = None,
                   overlap: int | None = None, batch_size: int = 64, device_name: str = "auto",
                   progress: Progress | None = None, should_stop: ShouldStop | None = None) -> LandCoverResult:
    """Classify every pixel of a raster with a ``swimdiff finetune-classify`` model, streamed.

    Args:
        raster: a multi-band raster, or a folder of ``*_Bxx.tif`` band files.
        model_dir: the classifier folder.
        out: class map GeoTIFF (uint8 class ids, 255 nodata, colour table, class names).
        probabilities_out: optional float32 GeoTIFF with one band per class (NaN nodata).
        tile: window side (default: the model's patch size); overlap: default half a window.
        batch_size: windows per forward pass.
        device_name: auto, cpu, cuda or cuda:N.
        progress, should_stop: progress callback and cancel poll (a cancel leaves no output).

    Raises:
        CheckpointFormatError, RasterReadError, BandMismatchError, ConfigError, OutputError,
        NoDataError, Cancelled: see their messages; no output is left behind.
    """
    started = time.perf_counter()
    refuse_inputs_as_outputs({"--out": out, "--probabilities": probabilities_out},
                             {"--raster": date_files(open_date(raster))})
    out = check_writable(out, "--out")
    prob_path = check_writable(probabilities_out, "--probabilities") if probabilities_out else None
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size} is out of range; use 1 or more (e.g. 64)")
    device = resolve_device(device_name)
    model, config = load_classifier(model_dir, device)
    classes, multi_label = list(config["classes"]), bool(config.get("multi_label"))
    if len(classes) >= CLASS_NODATA:
        raise ConfigError(f"--model '{model_dir}' has {len(classes)} classes; a land-cover map holds at most "
                          f"{CLASS_NODATA - 1} (uint8 with {CLASS_NODATA} as nodata)")
    stats = BandStats.from_dict(config["normalization"])
    date = open_raster(raster, stats.bands)
    warn_on_value_scale(date, config)
    grid = date.grid
    side, used_overlap = choose_window(config, grid.height, grid.width, tile, overlap)
    tiling = Tiling(side, used_overlap, batch_size)
    windows = len(tiling.fitted(grid.height, grid.width)[2])
    logger.info("classifying '%s' with %s on %s: %d windows of %d px (overlap %d), %d classes", date.source,
                model_dir, describe_device(device), windows, side, used_overlap, len(classes))
    reader = StackReader(date, grid, stats.bands)
    colors = class_colors(classes)
    counts = np.zeros(len(classes), dtype=np.int64)

    def predict(tiles: list[Tile]) -> tuple[np.ndarray, np.ndarray]:
        xs, oks = [], []
        for t in tiles:
            x, ok = reader.read(Window(t.col, t.row, t.width, t.height))
            xs.append(stats.apply(x, ok))
            oks.append(ok)
        probabilities = class_probabilities(model, np.stack(xs), multi_label, device)  # (n, K)
        return probabilities[:, :, None, None], np.stack(oks)  # (n, K, 1, 1): one answer per window

    tick = Ticker(progress, should_stop, windows, job="land-cover mapping")("land cover")
    with ExitStack() as stack:
        stack.callback(reader.close)
        outputs = stack.enter_context(OutputGroup())  # both files appear together, or neither
        map_tif = outputs.add(_class_map_tif(out, date, classes, colors, model_dir))
        prob_tif = (outputs.add(AtomicGeoTiff(prob_path, grid, len(classes), "float32", float("nan"),
                                              descriptions=classes,
                                              tags={"model": str(model_dir), "CLASS_NAMES": json.dumps(classes)}))
                    if prob_path else None)
        for window, probabilities in stream_blended(grid.height, grid.width, len(classes), tiling, predict, tick):
            ids = _class_ids(probabilities)
            map_tif.write(ids, window)
            if prob_tif is not None:
                prob_tif.write(probabilities, window)
            counts += np.bincount(ids[ids != CLASS_NODATA], minlength=len(classes))[:len(classes)]
        if counts.sum() == 0:  # raised inside the block: no file is kept
            raise NoDataError(f"'{date.source}' holds no valid pixel with the model's bands "
                              f"({', '.join(stats.bands)}); check its nodata value")
    fractions = {name: float(n) / float(counts.sum()) for name, n in zip(classes, counts)}
    seconds = time.perf_counter() - started
    return LandCoverResult(out, prob_path, classes, colors, fractions, multi_label, side, used_overlap,
                           grid.width * grid.height / 1e6 / seconds, describe_device(device))


def _class_ids(probabilities: np.ndarray) -> np.ndarray:
    """(K, h, w) probabilities, NaN at nodata -> (h, w) uint8 class ids, :data:`CLASS_NODATA` at nodata."""
    valid = np.isfinite(probabilities[0])
    ids = np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=0)
    return np.where(valid, ids, CLASS_NODATA).astype(np.uint8)


def _class_map_tif(path: Path, date: DateRaster, classes: list[str], colors: list[RGB],
                   model_dir: str | Path) -> AtomicGeoTiff:
    tags = {"model": str(model_dir), "source": str(date.source), "CLASS_NAMES": json.dumps(classes),
            **{f"CLASS_{i}": name for i, name in enumerate(classes)}}
    colormap = {i: (*color, 255) for i, color in enumerate(colors)}
    return AtomicGeoTiff(path, date.grid, 1, "uint8", CLASS_NODATA, descriptions=["land cover class"],
                         colormap=colormap, tags=tags)
