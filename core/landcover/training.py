"""Training land-cover classifiers on labelled patches (EuroSAT or BigEarthNet layout).

The encoder starts from a ``swimdiff pretrain`` model (its bands, mapped onto the data's, and its
normalisation) or from random weights (the baseline, bands and statistics from the data). A linear
probe trains the linear layer on frozen features, as SeCo and SwiMDiff evaluate encoders;
fine-tuning trains everything. AdamW with a cosine schedule, flips and 90-degree rotations,
cross-entropy (single-label) or binary cross-entropy (multi-label). The last epoch's weights are
kept: validation sets this small would make "best epoch" selection a coin toss.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..change.training import pretrained_encoder
from ..checkpoint import load_model, load_weights, save_model
from ..config import ClassifyConfig
from ..device import describe_device, resolve_device
from ..errors import Cancelled, CheckpointFormatError, DatasetError, OutputError
from ..history import write_csv
from ..io.band_mapping import BandMapping, identity_mapping, map_bands
from ..io.normalization import BandStats, estimate_band_stats
from ..io.output_paths import check_writable
from ..models.classifier import Classifier
from .metrics import micro_map, multi_label_scores, save_confusion_png, single_label_scores
from .patches import PatchSet, load_patches

logger = logging.getLogger(__name__)

CLASSIFY_KIND = "swimdiff-classify"
CONFUSION_FILE = "confusion_matrix.png"
HISTORY_COLUMNS = ("epoch", "loss", "lr", "val_loss", "seconds")
FEW_VALIDATION_PATCHES = 10  # below this, say how coarse the validation score is


@dataclasses.dataclass(frozen=True)
class ClassifyResult:
    """What :func:`finetune_classify` wrote and measured.

    Attributes:
        out_dir: the model folder.
        metric: "accuracy" (single-label) or "micro_map" (multi-label).
        value: that score on the validation patches (or the training patches without any).
        scores: every score, per-class ones included.
        confusion_png: the confusion matrix picture (single-label), else None.
        evaluated_on: "validation" or "training".
        seconds: wall time.
    """

    out_dir: Path
    metric: str
    value: float | None
    scores: dict[str, Any]
    confusion_png: Path | None
    evaluated_on: str
    seconds: float


def split_indices(patches: PatchSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) indices, stratified per class for single-label patches.

    A class with at least two patches gives ``round(n * fraction)`` of them (at least one, at most
    n - 1) to validation; a lone patch stays in training. Multi-label patches are split at random.
    """
    rng = np.random.default_rng(seed)
    n = len(patches)
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    groups = ([np.flatnonzero(patches.y == k) for k in range(len(patches.classes))] if not patches.multi_label
              else [np.arange(n)])
    val: list[int] = []
    for group in groups:
        if len(group) < 2:
            continue
        take = min(max(1, round(len(group) * fraction)), len(group) - 1)
        val += rng.permutation(group)[:take].tolist()
    val_index = np.array(sorted(val), dtype=np.int64)
    return np.setdiff1d(np.arange(n), val_index), val_index


def choose_normalization(patches: PatchSet, mapping: BandMapping, encoder_config: dict[str, Any],
                         x: np.ndarray, train_index: np.ndarray) -> tuple[BandStats, str]:
    """The encoder's statistics for the mapped bands, or statistics of the training split.

    The encoder's statistics describe reflectance; 8-bit JPG/PNG display values (0-255) are on
    another scale, so they (and data without an encoder) get statistics of the training patches.

    Returns:
        (stats in model band order, where they came from).
    """
    if encoder_config and not patches.eight_bit:
        stats = BandStats.from_dict(encoder_config["normalization"])
        order = [list(stats.bands).index(b) for b in mapping.bands]
        return BandStats(mapping.bands, tuple(stats.mean[i] for i in order), tuple(stats.std[i] for i in order)), \
            "encoder"
    source = "training split"
    if encoder_config:
        source = "training split (8-bit display values, not reflectance: the encoder's statistics do not apply)"
        logger.info("the patches are 8-bit images (0-255), not reflectance: normalising with per-band statistics "
                    "of the training split instead of the encoder's")
    stats = estimate_band_stats(mapping.bands, ((x[i], patches.valid[i]) for i in train_index))
    return stats, source


def normalise(x: np.ndarray, valid: np.ndarray, stats: BandStats) -> torch.Tensor:
    """(N, C, H, W) values -> normalised float32 tensor, invalid pixels 0 (the band mean)."""
    mean = np.asarray(stats.mean, dtype=np.float32)[None, :, None, None]  # (1, C, 1, 1)
    std = np.asarray(stats.std, dtype=np.float32)[None, :, None, None]  # (1, C, 1, 1)
    return torch.from_numpy(((x - mean) / std * valid[:, None]).astype(np.float32))  # (N, C, H, W)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches over n items; a last batch of one item joins the one before it (batch
    normalisation needs two)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], n])]


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random horizontal flip and a random multiple of 90 degrees, per patch of (N, C, H, W)."""
    out = []
    for patch, flip, k in zip(x, rng.random(len(x)) < 0.5, rng.integers(0, 4, len(x))):
        patch = patch.flip(-1) if flip else patch
        out.append(torch.rot90(patch, int(k), dims=(-2, -1)))
    return torch.stack(out)  # (N, C, H, W)


def _loss(logits: torch.Tensor, y: torch.Tensor, multi_label: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, y) if multi_label else F.cross_entropy(logits, y)


@torch.no_grad()
def predict_logits(model: Classifier, x: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Logits (N, K) of normalised patches (N, C, H, W), in eval mode, on the CPU."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def build_model(config: ClassifyConfig, mapping: BandMapping, num_classes: int, weights: dict[str, torch.Tensor] | None,
                arch: str, encoder_dir: str | Path | None) -> Classifier:
    """The classifier, its encoder loaded (first convolution on the mapped channels) and frozen for a probe.

    Raises:
        CheckpointFormatError: the encoder weights do not fit its config.
    """
    torch.manual_seed(config.seed)
    model = Classifier(arch, len(mapping.bands), num_classes)
    if weights is not None:
        try:
            model.load_pretrained_encoder(weights, mapping.encoder_channels)
        except (KeyError, RuntimeError) as error:
            raise CheckpointFormatError(f"--encoder '{encoder_dir}': {error}") from error
    if config.linear_probe:
        model.freeze_encoder()
    return model


def finetune_classify(data: str | Path, out_dir: str | Path, config: ClassifyConfig,
                      encoder_dir: str | Path | None = None,
                      progress: Callable[[float, str], None] | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      on_metrics: Callable[[int, dict[str, float]], None] | None = None) -> ClassifyResult:
    """Train a classifier on labelled patches and write a ``swimdiff-classify`` model folder.

    Args:
        data: a folder in EuroSAT or BigEarthNet layout (see :mod:`core.landcover.patches`).
        out_dir: the model folder to write (model.safetensors, config.json, history.csv and, for
            single-label data, confusion_matrix.png).
        config: training settings.
        encoder_dir: a ``swimdiff pretrain`` model folder, or None for random initialisation.
        progress: called with (fraction done, message).
        should_stop: polled every step; True cancels (nothing is written).
        on_metrics: called after every epoch with (epoch, scores).

    Raises:
        SwimDiffError: bad data, no band in common with the encoder, unreadable encoder, used output.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        raise OutputError(f"--out '{out_dir}' already holds a model; choose another folder")
    check_writable(out_dir, "--out", folder=True)
    report = progress or (lambda fraction, message: None)
    device = resolve_device(config.device)
    weights, encoder_config = pretrained_encoder(encoder_dir)
    patches = load_patches(data, report)
    arch, mapping = _band_mapping(config, encoder_config, patches, encoder_dir, data)
    x = patches.x[:, list(mapping.data_channels)]  # (N, C, H, W)
    train_index, val_index = split_indices(patches, config.val_fraction, config.seed)
    if len(train_index) < 2:
        raise DatasetError(f"--data '{data}' leaves {len(train_index)} training patch(es) after the validation "
                           f"split; add patches or lower --val-fraction ({config.val_fraction})")
    stats, stats_source = choose_normalization(patches, mapping, encoder_config, x, train_index)
    xn = normalise(x, patches.valid, stats)  # (N, C, H, W)
    y = torch.from_numpy(patches.y)  # (N,) int64 or (N, K) float32
    eval_index = val_index if len(val_index) else train_index
    evaluated_on = "validation" if len(val_index) else "training"
    if not len(val_index):
        logger.warning("no validation patches (--val-fraction %s): scores are measured on the training patches",
                       config.val_fraction)
    elif len(val_index) < FEW_VALIDATION_PATCHES:
        logger.warning("only %d validation patch(es): one patch moves the score by about %.2f; read it as rough",
                       len(val_index), 1.0 / len(val_index))

    model = build_model(config, mapping, len(patches.classes), weights, arch, encoder_dir).to(device)
    mode = "linear probe" if config.linear_probe else "fine-tuning"
    report(0.1, f"{mode} on {len(train_index)} patches, validating on {len(val_index)}, {describe_device(device)}")
    history = _train(model, config, xn, y, train_index, eval_index, patches.multi_label, device,
                     lambda fraction, message: report(0.1 + 0.85 * fraction, message), should_stop, on_metrics)
    final = predict_logits(model, xn[eval_index], device).numpy()  # (M, K)
    scores = (multi_label_scores if patches.multi_label else single_label_scores)(
        final, patches.y[eval_index], patches.classes)
    metric = "micro_map" if patches.multi_label else "accuracy"
    report(0.97, f"{evaluated_on} {metric}: {scores[metric]}")
    seconds = time.perf_counter() - started
    model_config = {
        "kind": CLASSIFY_KIND,
        "architecture": {"arch": arch, "in_chans": len(mapping.bands), "num_classes": len(patches.classes)},
        "bands": list(mapping.bands),
        "normalization": stats.to_dict(),
        "normalization_source": stats_source,
        "classes": list(patches.classes),
        "multi_label": patches.multi_label,
        "patch_size": patches.patch_size,
        "metrics": {"evaluated_on": evaluated_on, "patches": len(eval_index), **scores},
        "train": config.to_dict(),
        "provenance": {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "swimdiff_version": __version__,
            "data": str(data), "layout": patches.layout, "data_bands": list(patches.bands),
            "eight_bit": patches.eight_bit, "train_patches": len(train_index), "val_patches": len(val_index),
            "encoder": str(encoder_dir) if encoder_dir else None,
            "encoder_bands": encoder_config.get("bands"), "encoder_provenance": encoder_config.get("provenance"),
            "bands_missing_from_data": list(mapping.missing), "data_bands_unused": list(mapping.dropped),
            "linear_probe": config.linear_probe, "learning_rate": config.learning_rate,
            "device": describe_device(device), "seconds": round(seconds, 1),
        },
    }
    save_model(out_dir, model.state_dict(), model_config)
    write_csv(out_dir / "history.csv", history, columns=(*HISTORY_COLUMNS, f"val_{metric}"))
    confusion_png = None
    if not patches.multi_label:
        confusion_png = out_dir / CONFUSION_FILE
        save_confusion_png(confusion_png, np.asarray(scores["confusion"]), patches.classes,
                           f"{mode}, {evaluated_on} patches ({len(eval_index)}): accuracy {scores['accuracy']:.3f}")
    report(1.0, f"model written to {out_dir}")
    return ClassifyResult(out_dir, metric, scores[metric], scores, confusion_png, evaluated_on, seconds)


def _band_mapping(config: ClassifyConfig, encoder_config: dict[str, Any], patches: PatchSet,
                  encoder_dir: str | Path | None, data: str | Path) -> tuple[str, BandMapping]:
    """(architecture, band mapping): the encoder's, or all data bands on ``config.arch`` without one."""
    if not encoder_config:
        return config.arch, identity_mapping(patches.bands)
    mapping = map_bands(encoder_config["bands"], patches.bands, str(encoder_dir), str(data))
    if mapping.missing:
        logger.info("the encoder's bands %s are not in the patches: its first layer keeps only %s (the same as "
                    "feeding the missing bands their mean)", ",".join(mapping.missing), ",".join(mapping.bands))
    if mapping.dropped:
        logger.info("the encoder does not know bands %s of the patches: they are not used", ",".join(mapping.dropped))
    return encoder_config["architecture"]["arch"], mapping


def _train(model: Classifier, config: ClassifyConfig, xn: torch.Tensor, y: torch.Tensor, train_index: np.ndarray,
           eval_index: np.ndarray, multi_label: bool, device: torch.device, report: Callable[[float, str], None],
           should_stop: Callable[[], bool] | None,
           on_metrics: Callable[[int, dict[str, float]], None] | None) -> list[dict[str, float]]:
    """AdamW + cosine over ``config.epochs``; scores ``eval_index`` after every epoch; returns the history.

    Args:
        xn: all normalised patches (N, C, H, W), on the CPU.
        y: all targets, (N,) class indices or (N, K) multi-hot.

    Raises:
        Cancelled: ``should_stop`` returned True.
    """
    started = time.perf_counter()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    batches = batch_slices(len(train_index), config.batch_size)
    total = config.epochs * len(batches)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(train_index)
        losses = []
        for part in batches:
            if should_stop and should_stop():
                raise Cancelled("classifier training cancelled; no model was written")
            index = order[part]
            xb = augment(xn[index], rng) if config.augment else xn[index]  # (B, C, H, W)
            loss = _loss(model(xb.to(device)), y[index].to(device), multi_label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            report(step / total, f"epoch {epoch}/{config.epochs}, loss {losses[-1]:.4f}")
        logits = predict_logits(model, xn[eval_index], device)  # (M, K)
        row = {"epoch": float(epoch), "loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"],
               "val_loss": float(_loss(logits, y[eval_index], multi_label)),
               "seconds": round(time.perf_counter() - started, 2)}
        row.update(_headline(logits.numpy(), y[eval_index].numpy(), multi_label))
        history.append(row)
        if on_metrics:
            on_metrics(epoch, row)
    return history


def _headline(logits: np.ndarray, y: np.ndarray, multi_label: bool) -> dict[str, float]:
    """The epoch's headline score: accuracy or micro mAP (NaN without a positive)."""
    if multi_label:
        return {"val_micro_map": micro_map(1.0 / (1.0 + np.exp(-logits)), y)}
    return {"val_accuracy": float((logits.argmax(axis=1) == y).mean())}


def load_classifier(model_dir: str | Path, device: torch.device) -> tuple[Classifier, dict[str, Any]]:
    """A trained classifier and its config, ready for inference.

    Raises:
        CheckpointFormatError: not a classifier folder, or weights that do not fit its config.
    """
    weights, config = load_model(Path(model_dir), kind=CLASSIFY_KIND)
    arch = config["architecture"]
    model = Classifier(arch["arch"], arch["in_chans"], arch["num_classes"])
    load_weights(model, weights, model_dir)
    return model.to(device).eval(), config
