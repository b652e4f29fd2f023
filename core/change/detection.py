"""Change detection with a network, streamed strip by strip over any raster size (see :mod:`core.io.blend`).

Two methods share this streaming: ``model`` (a fine-tuned Siamese U-Net's change probability and
its validated threshold) and ``features`` (the cosine distance of a pre-trained encoder's features,
thresholded with Otsu's method; no labels needed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from ..checkpoint import load_model, read_config
from ..device import describe_device, resolve_device
from ..errors import CheckpointFormatError, NoDataError
from ..io.blend import Tiling, stream_blended
from ..io.normalization import BandStats
from ..io.tiling import Tile
from ..io.writer import AtomicGeoTiff, OutputGroup
from ..models.distance import FeatureDistance
from .cva import otsu_threshold
from .matching import DateMatch, match_pair, uses_matching
from .pair import (
    MASK_NODATA,
    OTSU_SAMPLES,
    DetectResult,
    Progress,
    RasterPair,
    ShouldStop,
    Ticker,
    change_mask,
    check_pair_outputs,
    mask_geotiff,
)
from .predict import predict_batch
from .stable_cover import StableCover, stable_cover
from .training import load_change_model

logger = logging.getLogger(__name__)

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # normalised (n, C, t, t) twice -> scores (n, t, t)


def no_shared_pixel(pair: RasterPair) -> NoDataError:
    """The error for a pair without a pixel valid (and, with clouds masked, clear) in both dates."""
    if pair.clouds is not None:
        return NoDataError(f"'{pair.t1.source}' and '{pair.t2.source}' share no valid pixel that is clear of clouds "
                           "in both dates; choose clearer dates, raise --cloud-threshold, or run without --mask-clouds")
    return NoDataError(f"'{pair.t1.source}' and '{pair.t2.source}' share no valid pixel (all nodata or NaN); "
                       "give rasters that overlap with data")


def network_scorer(model: torch.nn.Module, device: torch.device) -> Scorer:
    """A two-date network as a numpy scorer (see :func:`~core.change.predict.predict_batch`; bf16 on CUDA)."""
    return lambda x1, x2: predict_batch(model, x1, x2, device, amp=True)


def stream_scores(pair: RasterPair, stats: BandStats, scorer: Scorer, tiling: Tiling,
                  tick: Callable[[], None], match: DateMatch | None = None,
                  stable: StableCover | None = None) -> Iterator[tuple[Window, np.ndarray]]:
    """Blended scores of the whole raster, strip by strip: ``(window of full rows, scores)``, NaN at nodata.
    ``match``: the pair's t2-onto-t1 mapping, applied to every tile of t2 before normalising. ``stable``:
    scores 0 where a cover is there at both dates (:mod:`~core.change.stable_cover`, judged on the values as read).

    Pixels invalid (nodata or NaN) in either date are NaN in the scores and zero in the network's
    input, so they never leak into their neighbours' scores beyond the receptive field.
    """
    readers = pair.readers()

    def predict(tiles: list[Tile]) -> tuple[np.ndarray, np.ndarray]:
        x1s, x2s, oks, stables = [], [], [], []
        for t in tiles:
            window = Window(t.col, t.row, t.width, t.height)
            (x1, v1), (x2, v2) = readers[0].read(window), readers[1].read(window)
            ok = v1 & v2
            if stable is not None:
                stables.append(stable.mask(x1, x2))
            if match is not None:
                x2 = match.apply(x2)
            x1s.append(stats.apply(x1, ok))
            x2s.append(stats.apply(x2, ok))
            oks.append(ok)
        scores = scorer(np.stack(x1s), np.stack(x2s))  # (n, t, t)
        if stables:
            scores = np.where(np.stack(stables), 0.0, scores).astype(np.float32)
        return scores[:, None], np.stack(oks)  # (n, 1, t, t), (n, t, t)

    for window, scores in stream_blended(pair.grid.height, pair.grid.width, 1, tiling, predict, tick):
        yield window, scores[0]


def detect_with_model(pair: RasterPair, model_dir: str | Path, out: str | Path,
                      probability_out: str | Path | None = None, tile: int = 256, overlap: int = 32,
                      batch_size: int = 8, threshold: float | None = None, device_name: str = "auto",
                      keep: Collection[str] = (), progress: Progress | None = None,
                      should_stop: ShouldStop | None = None) -> DetectResult:
    """Change mask (and probability) of a raster pair with a ``swimdiff finetune-change`` model, in one pass.

    Args:
        pair: the two dates, opened with the model's bands (see :func:`~core.change.pair.open_pair`).
        model_dir: the change model folder.
        out: change mask GeoTIFF (uint8: 0 no change, 1 change, 255 nodata; with a colour table).
        probability_out: optional float32 GeoTIFF of the change probability (NaN nodata).
        tile, overlap, batch_size: tiling and batching of the model.
        threshold: probability threshold (default: the one chosen on validation, in config.json).
        device_name: auto, cpu, cuda or cuda:N.
        keep: covers ("vegetation", "water") whose stable-cover rule of the model is not applied
            (:mod:`~core.change.stable_cover`): scored like the other pixels.
        progress, should_stop: progress callback and cancel poll (a cancel leaves no output).

    Raises:
        CheckpointFormatError, OutputError, Cancelled: see their messages.
    """
    started = time.perf_counter()
    out, prob_path = check_pair_outputs(pair, out, probability_out)
    device = resolve_device(device_name)
    model, config = load_change_model(model_dir, device)
    stats = BandStats.from_dict(config["normalization"])
    chosen = float(config["threshold"] if threshold is None else threshold)
    match = match_pair(pair) if uses_matching(config) else None
    if match is not None:
        logger.info("t2 matched onto t1: %s", match.to_dict())
    stable = stable_cover(config, pair.bands, keep)
    rule = stable.tags() if stable is not None else {}
    if stable is not None:
        logger.info("pixels %s are not change (%s: score them like the others)", stable.describe(),
                    ", ".join(f"--keep-{r.cover.name}" for r in stable.rules))
    tiling = Tiling(tile, overlap, batch_size)
    side, used_overlap, tiles = tiling.fitted(pair.grid.height, pair.grid.width)
    logger.info("model %s on %s: %d tiles of %d px (overlap %d), threshold %.2f", model_dir,
                describe_device(device), len(tiles), side, used_overlap, chosen)
    tick = Ticker(progress, should_stop, len(tiles))("change probability")
    changed = valid = 0
    with OutputGroup() as outputs:  # both files appear together, or neither
        mask_tif = outputs.add(mask_geotiff(out, pair.grid, {"method": "model", "model": str(model_dir),
                                                     "threshold": f"{chosen:.4g}", **rule, **pair.tags()}))
        prob_tif = (outputs.add(AtomicGeoTiff(prob_path, pair.grid, 1, "float32", float("nan"),
                                              descriptions=["change probability"], tags={**rule, **pair.tags()}))
                    if prob_path else None)
        for window, prob in stream_scores(pair, stats, network_scorer(model, device), tiling, tick, match,
                                          stable):
            mask = change_mask(prob, chosen)
            mask_tif.write(mask, window)
            if prob_tif is not None:
                prob_tif.write(prob, window)
            changed += int(np.count_nonzero(mask == 1))
            valid += int(np.count_nonzero(mask != MASK_NODATA))
        if valid == 0:  # raised inside the block: neither file is kept
            raise no_shared_pixel(pair)
    seconds = time.perf_counter() - started
    return DetectResult(out, prob_path, chosen, changed / max(1, valid), pair.warped,
                        pair.grid.width * pair.grid.height / 1e6 / seconds)


def load_feature_distance(model_dir: str | Path, device: torch.device) -> tuple[FeatureDistance, dict]:
    """The encoder of a pre-training or change model folder as a :class:`FeatureDistance` scorer.

    Raises:
        CheckpointFormatError: not a model folder, or no encoder that fits its config.
    """
    config = read_config(Path(model_dir), kind=None)
    weights, _ = load_model(Path(model_dir), kind=None)
    arch = config["architecture"]
    model = FeatureDistance(arch["arch"], arch["in_chans"])
    try:
        model.load_encoder(weights)
    except KeyError as error:
        raise CheckpointFormatError(f"--model '{model_dir}': {error}") from error
    return model.to(device).eval(), config


def detect_features(pair: RasterPair, model_dir: str | Path, out: str | Path, score_out: str | Path | None = None,
                    tile: int = 256, overlap: int = 32, batch_size: int = 8, threshold: float | None = None,
                    device_name: str = "auto", progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> DetectResult:
    """Unsupervised change: cosine distance of encoder features, Otsu's threshold unless one is given.

    Two passes: the scores go to a float32 GeoTIFF (``score_out``, or a hidden temporary file beside
    ``out``) while a sample of them is kept for Otsu's threshold; the mask is then cut from that file.

    Raises:
        CheckpointFormatError, OutputError, NoDataError, Cancelled: see their messages.
    """
    started = time.perf_counter()
    out, score_path = check_pair_outputs(pair, out, score_out)
    device = resolve_device(device_name)
    model, config = load_feature_distance(model_dir, device)
    stats = BandStats.from_dict(config["normalization"])
    tiling = Tiling(tile, overlap, batch_size)
    grid = pair.grid
    ticker = Ticker(progress, should_stop, len(tiling.fitted(grid.height, grid.width)[2]) + 1)
    logger.info("feature distance of %s on %s", model_dir, describe_device(device))
    keep = min(1.0, OTSU_SAMPLES / (grid.width * grid.height))
    rng = np.random.default_rng(0)
    samples: list[np.ndarray] = []
    with OutputGroup() as outputs:  # the scores (kept only with --probability) and the mask appear together
        score_tif = outputs.add(AtomicGeoTiff(score_path or out.with_name(f"{out.name}.score"), grid, 1, "float32",
                                              float("nan"), descriptions=["feature distance (1 - cosine)"],
                                              tags=pair.tags()))
        for window, score in stream_scores(pair, stats, network_scorer(model, device),
                                           tiling, ticker("feature distance")):
            score_tif.write(score, window)
            values = score[np.isfinite(score)]
            samples.append(values[rng.random(values.size) < keep])
        score_tif.finish()  # closed and checked: read back below
        sample = np.concatenate(samples)
        if sample.size == 0:
            raise no_shared_pixel(pair)
        chosen = otsu_threshold(sample) if threshold is None else float(threshold)
        changed = valid = 0
        mask_tif = outputs.add(mask_geotiff(out, pair.grid, {"method": "features", "model": str(model_dir),
                                                     "threshold": f"{chosen:.6g}", **pair.tags()}))
        with rasterio.open(score_tif.tmp) as scores:
            for top in range(0, grid.height, tiling.tile):
                window = Window(0, top, grid.width, min(tiling.tile, grid.height - top))
                mask = change_mask(scores.read(1, window=window), chosen)
                mask_tif.write(mask, window)
                changed += int(np.count_nonzero(mask == 1))
                valid += int(np.count_nonzero(mask != MASK_NODATA))
        if not score_path:
            outputs.drop(score_tif)
        ticker("change mask")()
    seconds = time.perf_counter() - started
    logger.info("features: threshold %.4g (%s), %.2f %% of valid pixels changed", chosen,
                "Otsu" if threshold is None else "given", 100 * changed / max(1, valid))
    return DetectResult(out, score_path, chosen, changed / max(1, valid), pair.warped,
                        grid.width * grid.height / 1e6 / seconds)
