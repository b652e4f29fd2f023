"""Fine-tuning a Siamese U-Net for change detection on labelled OSCD cities.

The encoder starts from a SwiMDiff (or any ``swimdiff pretrain``) checkpoint, or from random
initialisation for the baseline. Training cities give patches; validation cities are predicted
whole every ``eval_every`` steps, and the step and probability threshold with the best pooled
validation F1 are kept (these models overfit within minutes on OSCD).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import __version__
from ..checkpoint import PRETRAIN_KIND, load_model, load_weights, save_model
from ..config import TrainConfig
from ..device import describe_device, resolve_device
from ..errors import BandMismatchError, Cancelled, CheckpointFormatError, ConfigError, OutputError
from ..history import write_csv
from ..io.normalization import BandStats, estimate_band_stats
from ..io.output_paths import check_writable
from ..models.siamese import SiameseUNet
from ..pretrain.scenes import shared_bands
from ..pretrain.training import learning_rate
from .losses import change_loss
from .metrics import ChangeCounts, count_changes
from .no_change import load_no_change_scene
from .oscd import oscd_cities
from .patches import ChangePatchDataset, CityStack, load_city, read_city_pair, split_rows
from .predict import predict_probability
from .pseudo import load_pseudo_cities

logger = logging.getLogger(__name__)

CHANGE_KIND = "swimdiff-change"
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


@dataclass(frozen=True)
class FinetuneResult:
    out_dir: Path
    best_step: int
    threshold: float
    val_scores: dict[str, float]
    seconds: float


class WeightAverage:
    """Exponential moving average of a model's weights (buffers copied), validated and saved instead of
    the raw weights: it smooths the step-to-step swings of a small, imbalanced training set."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.is_floating_point():
                average.lerp_(current, 1.0 - self.decay)
            else:
                average.copy_(current)


def pretrained_encoder(encoder_dir: str | Path | None) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """Weights and config of a pre-trained model folder (None, {} without one)."""
    if encoder_dir is None:
        return None, {}
    weights, config = load_model(Path(encoder_dir), kind=PRETRAIN_KIND)
    return weights, config


def encoder_network(arch: str, in_chans: int, weights: dict[str, torch.Tensor] | None,
                    encoder_dir: str | Path | None, channels: Sequence[int] | None = None,
                    fusion: str = "diff") -> SiameseUNet:
    """A new Siamese U-Net whose encoder starts from a pre-trained model's weights (random without them);
    ``channels``: the pre-trained encoder's input channels that this model's ``in_chans`` bands are (None: all);
    ``fusion``: see :class:`~core.models.siamese.SiameseUNet`.

    Raises:
        CheckpointFormatError: the weights hold no encoder that fits.
    """
    model = SiameseUNet(arch, in_chans, fusion=fusion)
    if weights is not None:
        try:
            model.load_pretrained_encoder(weights, channels)
        except KeyError as error:
            raise CheckpointFormatError(f"--encoder '{encoder_dir}': {error}") from error
    return model


def encoder_bands(pretrained: Sequence[str], requested: Sequence[str] | None,
                  encoder_dir: str | Path | None) -> tuple[list[str], list[int] | None]:
    """The bands a change model on a pre-trained encoder uses and their indices among the encoder's inputs:
    all of the encoder's (``pretrained``; indices None) or the ``requested`` ones (``--bands``), in their order,
    which must be some of them (unlike :func:`~core.io.band_mapping.map_bands`, which drops unknown bands).

    Raises:
        BandMismatchError: a requested band is not one of the encoder's.
    """
    pretrained = list(pretrained)
    if not requested:
        return pretrained, None
    unknown = [b for b in requested if b not in pretrained]
    if unknown:
        raise BandMismatchError(f"--bands {','.join(requested)}: the encoder '{encoder_dir}' was pre-trained on "
                                f"{','.join(pretrained)}, not on {','.join(unknown)}; choose among its bands")
    return list(requested), [pretrained.index(b) for b in requested]


def new_model_folder(out_dir: str | Path) -> Path:
    """``out_dir`` (``--out``) as a path, checked before any work.

    Raises:
        OutputError: it already holds a model, or it cannot be written.
    """
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        raise OutputError(f"--out '{out_dir}' already holds a model; choose another folder")
    check_writable(out_dir, "--out", folder=True)
    return out_dir


def pooled_counts(probabilities: list[np.ndarray], labels: list[np.ndarray], threshold: float) -> ChangeCounts:
    """Change counts of thresholded probabilities, pooled over the given cities."""
    counts = ChangeCounts()
    for prob, label in zip(probabilities, labels):
        counts = counts + count_changes(prob > threshold, label)
    return counts


def best_threshold(probabilities: list[np.ndarray], labels: list[np.ndarray]) -> tuple[float, ChangeCounts]:
    """The probability threshold with the best pooled F1 over the given cities."""
    best = (0.5, ChangeCounts())
    for threshold in THRESHOLDS:
        counts = pooled_counts(probabilities, labels, float(threshold))
        if counts.f1 > best[1].f1:
            best = (float(threshold), counts)
    return best


def change_step(model: SiameseUNet, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], lr: float,
                device: torch.device, average: WeightAverage | None = None, freeze_encoder: bool = False) -> float:
    """One optimisation step of :func:`~core.change.losses.change_loss` on a batch of patches; returns the loss.

    Args:
        batch: ``{"x1", "x2"}`` (N, C, h, w) and ``"label"`` (N, h, w; 0, 1 or 255 = ignore).
        lr: the learning rate of this step (times each parameter group's ``lr_scale``).
        average: the weight average to update after the step (None: none).
        freeze_encoder: keep the encoder in eval mode (its batch-norm statistics fixed).
    """
    model.train()
    if freeze_encoder:
        model.encoder.eval()
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    logits = model(batch["x1"].to(device), batch["x2"].to(device))  # (N, 1, h, w)
    loss = change_loss(logits, batch["label"].to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if average:
        average.update(model)
    return float(loss.detach())


def parameter_groups(model: SiameseUNet, encoder_lr_scale: float) -> list[dict[str, Any]]:
    """The trainable parameters in two optimiser groups: the encoder's, whose learning rate is ``encoder_lr_scale``
    times the rest's (a pre-trained encoder moved less keeps more of what pre-training learnt), and the rest."""
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    rest = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("encoder.")]
    return [g for g in ({"params": encoder, "lr_scale": encoder_lr_scale}, {"params": rest, "lr_scale": 1.0})
            if g["params"]]


def train_steps(model: SiameseUNet, loader: DataLoader, train: TrainConfig, device: torch.device,
                val_stacks: list[CityStack], eval_every: int, ema: float, best: dict[str, Any],
                freeze_encoder: bool = False, encoder_lr_scale: float = 1.0, job: str = "fine-tuning",
                progress: Callable[[float, str], None] | None = None, should_stop: Callable[[], bool] | None = None,
                on_metrics: Callable[[int, dict[str, float]], None] | None = None,
                ) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Optimise ``model`` on the loader's batches (AdamW, warm-up then cosine decay, the encoder's learning rate
    ``encoder_lr_scale`` times the rest's, a weight average of decay ``ema`` that is validated and kept),
    validating every ``eval_every`` steps and at the end.

    Args:
        best: the best record so far (see :func:`validation_row`), e.g. the starting model's.

    Returns:
        The best record (the last weights when nothing was validated) and the history rows.

    Raises:
        Cancelled: ``should_stop`` said so; nothing was written.
    """
    optimizer = torch.optim.AdamW(parameter_groups(model, encoder_lr_scale), lr=train.lr,
                                  weight_decay=train.weight_decay)
    average = WeightAverage(model, ema) if ema > 0 else None
    history: list[dict[str, float]] = []
    losses: list[float] = []
    for step, batch in enumerate(loader, 1):
        if should_stop and should_stop():
            raise Cancelled(f"{job} cancelled; no model was written")
        losses.append(change_step(model, optimizer, batch, learning_rate(step - 1, train.steps, train), device,
                                  average, freeze_encoder))
        if step % eval_every == 0 or step == train.steps:
            row, best = validation_row(step, float(np.mean(losses[-eval_every:])), average.model if average else model,
                                       val_stacks, device, best)
            history.append(row)
            if on_metrics:
                on_metrics(step, row)
        if progress:
            progress(step / train.steps, f"step {step}/{train.steps}, loss {losses[-1]:.4f}")
    if best["state"] is None:  # no validation cities: keep the last weights
        best.update(step=train.steps, state=(average.model if average else model).state_dict())
    return best, history


def finetune_change(data_root: str | Path, out_dir: str | Path, train_cities: list[str], val_cities: list[str],
                    train: TrainConfig, encoder_dir: str | Path | None = None, arch: str = "resnet18",
                    bands: list[str] | None = None, freeze_encoder: bool = False, patch_size: int = 96,
                    eval_every: int = 50, ema: float = 0.98, val_fraction: float = 0.0, jitter: float = 0.0,
                    pseudo_labels: str | Path | None = None, match: bool = False, change_share: float = 0.5,
                    encoder_lr_scale: float = 1.0, fusion: str = "diff",
                    no_change_scenes: Sequence[str | Path] = (), assume_band_names: Sequence[str] = (),
                    progress: Callable[[float, str], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    on_metrics: Callable[[int, dict[str, float]], None] | None = None) -> FinetuneResult:
    """Fine-tune change detection and write a ``swimdiff-change`` model folder.

    ``ema`` is the decay of the weight average that is validated and saved (0: the raw weights).
    ``jitter`` is the strength of a random per-band gain and offset of each date (0: off). ``change_share`` is
    the share of patches centred on a changed pixel (the rest lie anywhere).
    ``val_fraction`` > 0 also validates on the bottom rows of every training city, which training
    patches then never touch (see :func:`~core.change.patches.split_rows`). ``pseudo_labels`` is a folder
    of ``<city>.tif`` pseudo-labels (see :mod:`~core.change.pseudo`): more training cities, never validated on.
    ``no_change_scenes`` are folders of dated rasters whose seasonal pairs are trained on as "no change"
    (:mod:`~core.change.no_change`; ``assume_band_names`` names their unnamed bands), never validated on.
    ``encoder_lr_scale`` is the encoder's learning rate as a multiple of ``train.lr``. ``fusion``: what the
    decoder sees of the two dates (:class:`~core.models.siamese.SiameseUNet`).
    ``match`` maps every t2 onto its t1 before normalising (:mod:`~core.change.matching`), here and wherever
    the model is used.

    Raises:
        SwimDiffError: unknown cities, band mismatch, unreadable encoder, unwritable output.
    """
    started = time.perf_counter()
    if not 0.0 <= val_fraction < 0.9:
        raise ConfigError(f"--val-fraction {val_fraction} is out of range; use 0 (none) to 0.5, e.g. 0.25")
    if not 0.0 <= change_share <= 1.0:
        raise ConfigError(f"--change-share {change_share} is out of range; use 0 (patches anywhere) to 1, e.g. 0.5")
    if not 0.0 < encoder_lr_scale <= 10.0:
        raise ConfigError(f"--encoder-lr-scale {encoder_lr_scale} is out of range; use a share of --lr above 0, e.g. "
                          "0.1 (1: the same; --freeze-encoder to keep the encoder fixed)")
    if not 0.0 <= ema < 1.0:
        raise ConfigError(f"--ema {ema} is out of range; use 0 (off) or a decay below 1, e.g. 0.98")
    out_dir = new_model_folder(out_dir)
    report = progress or (lambda fraction, message: None)
    device = resolve_device(train.device)
    weights, encoder_config = pretrained_encoder(encoder_dir)
    channels = None
    if encoder_config:
        arch = encoder_config["architecture"]["arch"]
        bands, channels = encoder_bands(encoder_config["bands"], bands, encoder_dir)
    train_set = oscd_cities(data_root, train_cities)
    val_set = oscd_cities(data_root, val_cities) if val_cities else []
    bands = bands or shared_bands(train_set[0].dates())
    report(0.0, f"reading {len(train_set) + len(val_set)} cities on {describe_device(device)}")
    stats = (BandStats.from_dict(encoder_config["normalization"]).subset(bands) if encoder_config
             else estimate_band_stats(bands, (read_city_pair(c, bands)[0::2] for c in train_set)))
    train_stacks = [load_city(c, bands, stats, match) for c in train_set]
    val_stacks = [load_city(c, bands, stats, match) for c in val_set]
    if val_fraction > 0:
        splits = [split_rows(c, val_fraction) for c in train_stacks]
        train_stacks = [train_part for train_part, _ in splits]
        val_stacks += [val_part for _, val_part in splits]
    pseudo_stacks = load_pseudo_cities(data_root, pseudo_labels, bands, stats, match) if pseudo_labels else []
    quiet_stacks = [s for folder in no_change_scenes
                    for s in load_no_change_scene(folder, bands, stats, match, assume_band_names)]
    train_stacks += pseudo_stacks + quiet_stacks

    torch.manual_seed(train.seed)
    model = encoder_network(arch, len(bands), weights, encoder_dir, channels, fusion).to(device)
    if freeze_encoder:
        model.encoder.requires_grad_(False)
    dataset = ChangePatchDataset(train_stacks, patch_size, train.steps * train.batch_size, seed=train.seed,
                                 jitter=jitter, change_share=change_share)
    loader = DataLoader(dataset, batch_size=train.batch_size, num_workers=0, shuffle=False)
    best: dict[str, Any] = {"f1": -1.0, "step": 0, "threshold": 0.5, "state": None, "scores": {}}
    best, history = train_steps(model, loader, train, device, val_stacks, eval_every, ema, best, freeze_encoder,
                                encoder_lr_scale,
                                progress=report, should_stop=should_stop, on_metrics=on_metrics)
    seconds = time.perf_counter() - started
    config = {
        "kind": CHANGE_KIND,
        "architecture": {"arch": arch, "in_chans": len(bands), "decoder_channels": [128, 64, 48, 32],
                         **({"fusion": fusion} if fusion != "diff" else {})},
        "bands": bands,
        "normalization": stats.to_dict(),
        "match_dates": match,
        "patch_size": patch_size,
        "threshold": best["threshold"],
        "metrics": {"best_step": best["step"], **{f"val_{k}": v for k, v in best["scores"].items()}},
        "train": train.to_dict(),
        "ema": ema,
        "jitter": jitter,
        "change_share": change_share,
        "encoder_lr_scale": encoder_lr_scale,
        "provenance": {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "swimdiff_version": __version__,
            "encoder": str(encoder_dir) if encoder_dir else None,
            "encoder_provenance": encoder_config.get("provenance"), "freeze_encoder": freeze_encoder,
            "train_cities": train_cities, "val_cities": val_cities, "val_fraction": val_fraction,
            "pseudo_labels": str(pseudo_labels) if pseudo_labels else None,
            "pseudo_cities": [s.name for s in pseudo_stacks],
            "no_change_scenes": [str(f) for f in no_change_scenes], "no_change_pairs": [s.name for s in quiet_stacks],
            "device": describe_device(device),
            "seconds": round(seconds, 1),
        },
    }
    save_model(out_dir, best["state"], config)
    write_csv(out_dir / "history.csv", history, columns=("step", "loss", "val_f1", "val_precision", "val_recall",
                                                        "threshold"))
    return FinetuneResult(out_dir, best["step"], best["threshold"], best["scores"], seconds)


def stack_probability(model: torch.nn.Module, city: CityStack, device: torch.device) -> np.ndarray:
    """The change probability of a city in memory, 0 on its ``stable`` pixels (as detect gives them)."""
    prob = predict_probability(model, city.x1, city.x2, device=device)
    return prob if city.stable is None else np.where(city.stable, 0.0, prob).astype(np.float32)


def _validate(model: torch.nn.Module, cities: list[CityStack], device: torch.device) -> tuple[float, ChangeCounts]:
    probabilities = [stack_probability(model, c, device) for c in cities]
    return best_threshold(probabilities, [c.label for c in cities])


def validation_row(step: int, loss: float, model: torch.nn.Module, val_stacks: list[CityStack],
                   device: torch.device, best: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """The history row of a validation at ``step`` and the best record (``f1``, ``step``, ``threshold``,
    ``scores``, ``state``): a new one holding a copy of the weights when the pooled F1 improved."""
    row = {"step": float(step), "loss": loss}
    if val_stacks:
        threshold, counts = _validate(model, val_stacks, device)
        row.update(val_f1=counts.f1, val_precision=counts.precision, val_recall=counts.recall, threshold=threshold)
        if counts.f1 > best["f1"]:
            best = {"f1": counts.f1, "step": step, "threshold": threshold, "scores": counts.scores(),
                    "state": copy.deepcopy(model.state_dict())}
    return row, best


def load_change_model(model_dir: str | Path, device: torch.device) -> tuple[SiameseUNet, dict[str, Any]]:
    """A fine-tuned change model and its config, ready for inference.

    Raises:
        CheckpointFormatError: not a change model folder, or weights that do not fit its config.
    """
    weights, config = load_model(Path(model_dir), kind=CHANGE_KIND)
    arch = config["architecture"]
    model = SiameseUNet(arch["arch"], arch["in_chans"], arch["decoder_channels"], arch.get("fusion", "diff"))
    load_weights(model, weights, model_dir)
    return model.to(device).eval(), config
