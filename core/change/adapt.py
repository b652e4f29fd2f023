"""Adapting a change model to a place: fine-tuning on polygons an analyst drew over a pair of dates.

Starts from the shipped change model (or ``model_dir``, or a pre-trained ``encoder_dir`` with a new decoder),
keeps its bands, normalisation and value scale, and trains on patches around the labelled pixels of each
pair. About a quarter of each class's labelled pixels is held out spatially (whole polygons, see
:func:`~core.change.labels.split_labels`); the step (0: the starting model itself) and the threshold with the
best validation F1 are kept — the starting model's threshold unless a new one gains ``GUARD`` held-out F1 — and
the starting model's F1 on the same held-out pixels is reported beside it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader

from .. import __version__
from ..checkpoint import save_model
from ..config import TrainConfig
from ..device import describe_device, resolve_device
from ..errors import Cancelled, ConfigError, DatasetError
from ..history import write_csv
from ..io.normalization import BandStats
from ..models.siamese import SiameseUNet
from .default_model import change_model_dir
from .labels import UNLABELLED, label_counts, rasterize_labels, read_label_polygons, split_labels
from .matching import match_pair, uses_matching
from .pair import open_pair
from .patches import ChangePatchDataset, CityStack
from .stable_cover import COVERS, stable_cover
from .training import (
    CHANGE_KIND,
    FinetuneResult,
    encoder_network,
    load_change_model,
    new_model_folder,
    pooled_counts,
    pretrained_encoder,
    stack_probability,
    train_steps,
    validation_row,
)

logger = logging.getLogger(__name__)

MIN_PIXELS = 200  # labelled pixels of each class, pooled over the pairs
VAL_FRACTION = 0.25
CONTEXT = 32  # pixels of imagery kept around the validation pixels
GUARD = 0.05  # held-out F1 a new threshold must gain over the starting model's to replace it
ADAPT_TRAIN = TrainConfig(steps=120, batch_size=8, lr=2e-4, warmup_steps=10)


@dataclass(frozen=True)
class LabelledPair:
    """Two dates and the polygons drawn over them."""

    t1: str
    t2: str
    labels: str


@dataclass(frozen=True)
class AdaptResult(FinetuneResult):
    """What adapting wrote and found (``zero_shot``: the starting model on the same validation pixels)."""

    zero_shot: dict[str, float] = field(default_factory=dict)
    pixels: dict[str, dict[str, int]] = field(default_factory=dict)  # {"train"|"val": {"change", "no_change"}}
    threshold_kept: bool = False  # the starting model's threshold (see guarded_threshold)


class LabelledPatchDataset(ChangePatchDataset):
    """Patches centred on a changed pixel (``change_share`` of them) or else on any labelled pixel, so that
    steps are not spent on the unlabelled ground between an analyst's polygons."""

    def __init__(self, cities: Sequence[CityStack], patch_size: int, length: int, seed: int = 0) -> None:
        super().__init__(cities, patch_size, length, seed=seed)
        self.labelled = [np.argwhere(c.label != UNLABELLED) for c in self.cities]  # (n_labelled, 2) each

    def _corner(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        if rng.random() < self.change_share and len(self.changed[index]):
            centres = self.changed[index]
        else:
            centres = self.labelled[index]
        h, w = self.cities[index].shape
        row, col = centres[int(rng.integers(0, len(centres)))]
        top = int(np.clip(row - rng.integers(0, self.patch_size), 0, h - self.patch_size))
        left = int(np.clip(col - rng.integers(0, self.patch_size), 0, w - self.patch_size))
        return top, left


def _box(mask: np.ndarray, margin: int, least: int) -> tuple[slice, slice]:
    """Rows and columns of the bounding box of ``mask``, grown by ``margin`` and to ``least`` pixels a side."""
    spans = []
    for axis, size in ((1, mask.shape[0]), (0, mask.shape[1])):
        hits = np.nonzero(mask.any(axis=axis))[0]
        start, stop = max(0, int(hits[0]) - margin), min(size, int(hits[-1]) + 1 + margin)
        need = min(least, size)
        if stop - start < need:
            start = max(0, min(start - (need - (stop - start)) // 2, size - need))
            stop = start + need
        spans.append(slice(start, stop))
    return spans[0], spans[1]


def starting_model(model_dir: str | Path | None, encoder_dir: str | Path | None,
                   device: torch.device) -> tuple[SiameseUNet, dict[str, Any], bool]:
    """The model to adapt, its config, and whether it is a change model (False: a new decoder on an encoder).

    Raises:
        ConfigError: both ``model_dir`` and ``encoder_dir``. CheckpointFormatError: an unreadable folder.
    """
    if model_dir and encoder_dir:
        raise ConfigError(f"give --model ('{model_dir}') or --encoder ('{encoder_dir}'), not both: --model starts "
                          "from a change model, --encoder from a pre-trained encoder with a new decoder")
    if encoder_dir:
        weights, encoder = pretrained_encoder(encoder_dir)
        model = encoder_network(encoder["architecture"]["arch"], len(encoder["bands"]), weights, encoder_dir)
        config = {"kind": CHANGE_KIND, "architecture": {"arch": encoder["architecture"]["arch"],
                                                        "in_chans": len(encoder["bands"]),
                                                        "decoder_channels": [128, 64, 48, 32]},
                  "bands": list(encoder["bands"]), "normalization": encoder["normalization"],
                  "patch_size": 96, "provenance": encoder.get("provenance"), "source": str(encoder_dir)}
        return model.to(device), config, False
    source = change_model_dir(model_dir)
    model, config = load_change_model(source, device)
    return model, {**config, "source": str(source)}, True


def _read_pair(pair: LabelledPair, config: dict[str, Any], label_field: str, patch_size: int, seed: int,
               assume_band_names: Sequence[str], value_scale: str) -> tuple[CityStack, CityStack, dict[str, Any]]:
    """(training stack, validation stack, provenance) of one pair, read only around its labelled pixels; with the
    config's stable-cover rules (:mod:`~core.change.stable_cover`) the validation stack knows the pixels they zero,
    so the threshold is chosen on what detect will give."""
    stats = BandStats.from_dict(config["normalization"])
    opened = open_pair(pair.t1, pair.t2, config["bands"], assume_band_names, stats.value_scale, value_scale)
    grid = opened.grid
    polygons = read_label_polygons(pair.labels, grid, label_field)
    everywhere = np.ones((grid.height, grid.width), dtype=bool)
    rows, cols = _box(rasterize_labels(polygons, grid, everywhere, pair.labels) != UNLABELLED, patch_size // 2,
                      patch_size)
    window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
    (x1, v1), (x2, v2) = (reader.read(window) for reader in opened.readers())
    stable = stable_cover(config, opened.bands)
    ruled = stable.mask(x1, x2) if stable is not None else None
    if uses_matching(config):  # the whole pair's mapping, as detect computes it
        x2 = match_pair(opened).apply(x2)
    valid = np.zeros((grid.height, grid.width), dtype=bool)
    valid[rows, cols] = v1 & v2
    split = split_labels(polygons, grid, valid, VAL_FRACTION, seed)
    x1, x2 = stats.apply(x1, valid[rows, cols]), stats.apply(x2, valid[rows, cols])
    name = Path(pair.labels.split("|")[0]).name  # "file.gpkg|layername=x" names a layer of the file
    train = CityStack(name, x1, x2, split.train[rows, cols])
    val_label = split.val[rows, cols]
    box = _box(val_label != UNLABELLED, CONTEXT, 64) if (val_label != UNLABELLED).any() else (slice(0, 0),) * 2
    val = CityStack(f"{name} (held out)", x1[(slice(None), *box)], x2[(slice(None), *box)], val_label[box],
                    ruled[box] if ruled is not None else None)
    provenance = {"t1": str(pair.t1), "t2": str(pair.t2), "labels": str(pair.labels), "polygons": len(polygons),
                  "pixels": {"train": label_counts(train.label), "val": label_counts(val.label)},
                  "cut_polygons": list(split.cut_polygons), "warped": opened.warped}
    return train, val, provenance


def guarded_threshold(model: torch.nn.Module, vals: Sequence[CityStack], device: torch.device, best: dict[str, Any],
                      start: float) -> dict[str, Any]:
    """The best record, with the starting model's threshold ``start`` unless the held-out F1 at the chosen threshold
    beats the F1 at ``start`` by ``GUARD``: a threshold fitted to a few held-out polygons transfers worse to the rest
    of the raster than the starting model's cross-validated one (docs/benchmarks.md, "guard")."""
    counts = pooled_counts([stack_probability(model, v, device) for v in vals], [v.label for v in vals], start)
    gain = best["f1"] - counts.f1
    if gain >= GUARD:
        return best
    logger.info("kept the starting model's threshold %.2f: %.2f gains only %+.3f held-out F1 (a new one needs %+.2f)",
                start, best["threshold"], gain, GUARD)
    return {**best, "threshold": start, "f1": counts.f1, "scores": counts.scores(),
            "threshold_from": f"starting model (held-out gain of {best['threshold']:.2f}: {gain:+.3f} < {GUARD})"}


def _pooled(provenances: list[dict[str, Any]], part: str) -> dict[str, int]:
    return {k: sum(p["pixels"][part][k] for p in provenances) for k in ("no_change", "change")}


def _check_counts(train: dict[str, int], val: dict[str, int], labels: str) -> None:
    for name, what in (("change", "change (1)"), ("no_change", "no-change (0)")):
        total = train[name] + val[name]
        if total < MIN_PIXELS:
            raise DatasetError(f"--labels {labels}: {total} valid {what} pixels are labelled; adapting needs at least "
                               f"{MIN_PIXELS}: draw {what} polygons over {MIN_PIXELS - total} more pixels")
        if val[name] == 0 or train[name] == 0:
            raise DatasetError(f"--labels {labels}: the {what} pixels cannot be split into training and held-out "
                               "parts; draw several polygons of that class, or larger ones")


def adapt_change_model(pairs: Sequence[LabelledPair], out_dir: str | Path, model_dir: str | Path | None = None,
                       encoder_dir: str | Path | None = None, train: TrainConfig = ADAPT_TRAIN,
                       label_field: str = "change", patch_size: int = 96, eval_every: int = 20, ema: float = 0.9,
                       assume_band_names: Sequence[str] = (), value_scale: str = "auto",
                       keep: Collection[str] = (),
                       progress: Callable[[float, str], None] | None = None,
                       should_stop: Callable[[], bool] | None = None,
                       on_metrics: Callable[[int, dict[str, float]], None] | None = None) -> AdaptResult:
    """Fine-tune a change model on drawn polygons and write a ``swimdiff-change`` model folder.

    The starting model's stable-cover rules (:mod:`~core.change.stable_cover`) are kept, and applied when
    validating, except those of the covers named in ``keep`` ("vegetation", "water"): the adapted model drops them,
    so changes within green areas, or within water, are scored.

    Raises:
        SwimDiffError: unreadable rasters or labels, too few labelled pixels, an unusable ``out_dir``, a cancel.
    """
    started = time.perf_counter()
    if not pairs:
        raise ConfigError("no --t1/--t2/--labels given; give at least one pair of dates with its polygons")
    out_dir = new_model_folder(out_dir)
    report = progress or (lambda fraction, message: None)
    device = resolve_device(train.device)
    torch.manual_seed(train.seed)
    model, config, is_change_model = starting_model(model_dir, encoder_dir, device)
    for cover in COVERS:
        if cover.name in keep:
            config.pop(cover.config_key, None)
    report(0.0, f"reading {len(pairs)} pair(s) and their labels on {describe_device(device)}")
    read = [_read_pair(p, config, label_field, patch_size, train.seed, assume_band_names, value_scale) for p in pairs]
    trains, provenances = [r[0] for r in read], [r[2] for r in read]
    vals = [r[1] for r in read if r[1].label.size]
    pixels = {"train": _pooled(provenances, "train"), "val": _pooled(provenances, "val")}
    _check_counts(pixels["train"], pixels["val"], ", ".join(f"'{p.labels}'" for p in pairs))
    logger.info("labelled pixels: training %s, held out %s", pixels["train"], pixels["val"])
    side = min(patch_size, *(min(t.shape) for t in trains)) // 16 * 16

    zero_shot: dict[str, float] = {}
    best: dict[str, Any] = {"f1": -1.0, "step": 0, "threshold": 0.5, "scores": {}, "state": None}
    if is_change_model:  # step 0: the starting model, kept when adapting does not beat it
        first, best = validation_row(0, float("nan"), model, vals, device, best)
        own = pooled_counts([stack_probability(model, v, device) for v in vals],
                            [v.label for v in vals], float(config["threshold"]))
        zero_shot = {"f1": own.f1, "precision": own.precision, "recall": own.recall,
                     "threshold": float(config["threshold"]), "best_f1": first["val_f1"],
                     "best_threshold": first["threshold"]}
    loader = DataLoader(LabelledPatchDataset(trains, side, train.steps * train.batch_size, seed=train.seed),
                        batch_size=train.batch_size, num_workers=0, shuffle=False)
    best, history = train_steps(model, loader, train, device, vals, eval_every, ema, best, job="adapting",
                                progress=report, should_stop=should_stop, on_metrics=on_metrics)
    if is_change_model:
        model.load_state_dict(best["state"])
        best = guarded_threshold(model, vals, device, best, float(config["threshold"]))
    seconds = time.perf_counter() - started
    saved = {
        "kind": CHANGE_KIND, **{k: config[k] for k in ("architecture", "bands", "normalization", "patch_size")},
        "match_dates": uses_matching(config),
        "threshold": best["threshold"], "threshold_from": best.get("threshold_from", "held-out polygons"),
        **{c.config_key: config[c.config_key] for c in COVERS if c.config_key in config},
        "metrics": {"best_step": best["step"], **{f"val_{k}": v for k, v in best["scores"].items()},
                    **{f"zero_shot_val_{k}": v for k, v in zero_shot.items()}},
        "train": train.to_dict(), "ema": ema,
        "provenance": {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "swimdiff_version": __version__,
            "adapted_from": config["source"], "start": "change model" if is_change_model else "encoder",
            "start_provenance": config.get("provenance"), "pairs": provenances, "label_field": label_field,
            "labelled_pixels": pixels, "val_fraction": VAL_FRACTION, "device": describe_device(device),
            "seconds": round(seconds, 1),
        },
    }
    if should_stop and should_stop():
        raise Cancelled("adapting cancelled; no model was written")
    save_model(out_dir, best["state"], saved)
    write_csv(out_dir / "history.csv", history, columns=("step", "loss", "val_f1", "val_precision", "val_recall",
                                                        "threshold"))
    return AdaptResult(out_dir, best["step"], best["threshold"], best["scores"], seconds, zero_shot, pixels,
                       "threshold_from" in best)
