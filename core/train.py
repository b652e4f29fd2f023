"""The SwiMDiff pre-training loop: data -> model -> optimiser, with checkpoints, resume and DDP.

One function, :func:`pretrain`, serves the CLI, a QgsTask and a Processing algorithm alike: it
takes config dataclasses plus ``progress``/``should_stop``/``on_metrics`` callbacks and returns a
:class:`PretrainResult`. Under ``torchrun`` the same call trains with DistributedDataParallel
(gloo on CPU, NCCL on GPU); rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from . import __version__
from .checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    PRETRAIN_KIND,
    STATE_FILE,
    flatten_optimizer,
    load_train_state,
    save_model,
    save_train_state,
    unflatten_optimizer,
)
from .config import DataConfig, LossConfig, ModelConfig, TrainConfig
from .data.normalization import BandStats, estimate_band_stats
from .data.sampler import ScenePairDataset, build_sources, random_windows
from .data.scenes import common_bands, discover_scenes
from .device import describe_device, resolve_device
from .errors import CheckpointFormatError, ConfigError, OutputError, ResumeError
from .history import plot_losses, write_csv
from .models.swimdiff import SwiMDiff

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]
OnMetrics = Callable[[int, dict[str, float]], None]
HISTORY_FILE = "history.csv"
PLOT_FILE = "loss.png"


@dataclass
class PretrainResult:
    """What a pre-training run produced."""

    out_dir: Path
    steps_done: int
    total_steps: int
    stopped: bool
    device: str
    seconds: float
    final_metrics: dict[str, float]

    @property
    def outputs(self) -> dict[str, str]:
        return {
            "model_dir": str(self.out_dir),
            "weights": str(self.out_dir / MODEL_FILE),
            "config": str(self.out_dir / CONFIG_FILE),
            "history": str(self.out_dir / HISTORY_FILE),
            "plot": str(self.out_dir / PLOT_FILE),
            "train_state": str(self.out_dir / STATE_FILE),
        }


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name != "cpu"
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def check_output(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing model or to resume from nothing, before any work is done."""
    has_state = (out_dir / STATE_FILE).is_file()
    if resume and not has_state:
        raise ResumeError(f"--resume: '{out_dir}' holds no {STATE_FILE} to continue from; run without --resume")
    if not resume and not overwrite and ((out_dir / CONFIG_FILE).exists() or has_state):
        raise OutputError(
            f"--out '{out_dir}' already holds a model; pass --resume to continue it, --overwrite to replace it, "
            "or choose another folder"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out '{out_dir}' is a file; give a folder path")
    parent = out_dir
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise OutputError(f"--out '{out_dir}' cannot be written (no permission on '{parent}'); choose another folder")


def learning_rate(step: int, total: int, train: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    progress = (step - train.warmup_steps) / max(1, total - train.warmup_steps)
    return train.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def steps_per_epoch(scenes: list, patch_size: int, batch_size: int, world_size: int) -> int:
    """Non-overlapping patch positions over all dates, divided by the global batch."""
    patches = sum((s.grid.width // patch_size) * (s.grid.height // patch_size) * len(s.dates) for s in scenes)
    return max(1, math.ceil(patches / (batch_size * world_size)))


def _autocast(device: torch.device, amp: bool) -> tuple[torch.autocast, torch.amp.GradScaler | None]:
    enabled = amp and device.type == "cuda"
    bf16 = enabled and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16
    scaler = torch.amp.GradScaler("cuda") if enabled and not bf16 else None
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled), scaler


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def _model_config_dict(model: SwiMDiff, bands: list[str], stats: BandStats, data: DataConfig, loss: LossConfig,
                       train: TrainConfig, provenance: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "kind": PRETRAIN_KIND,
        "architecture": model.model_config.to_dict(),
        "bands": bands,
        "normalization": stats.to_dict(),
        "patch_size": data.patch_size,
        "data": data.to_dict(),
        "loss": loss.to_dict(),
        "train": train.to_dict(),
        "provenance": provenance,
        "metrics": metrics,
    }


def _summary(history: list[dict[str, float]]) -> dict[str, float]:
    """Means over the last fifth of the logged steps (less noisy than the last row)."""
    if not history:
        return {}
    tail = history[-max(1, len(history) // 5):]
    keys = ("loss", "loss_contrastive", "loss_diffusion", "accuracy")
    return {f"final_{k}": float(np.mean([r[k] for r in tail])) for k in keys}


def pretrain(data: DataConfig, model_cfg: ModelConfig, loss: LossConfig, train: TrainConfig, out_dir: str | Path,
             *, resume: bool = False, overwrite: bool = False, assume_band_names: tuple[str, ...] = (),
             progress: Progress | None = None, should_stop: ShouldStop | None = None,
             on_metrics: OnMetrics | None = None) -> PretrainResult:
    """Pre-train a SwiMDiff encoder on unlabelled multi-date rasters.

    Args:
        data: scenes, bands and patch size.
        model_cfg: architecture (``in_chans`` is taken from the data).
        loss: the SwiMDiff objective and its ablation switches.
        train: steps, batch, optimiser, device, seed, checkpoint cadence.
        out_dir: the model folder to write.
        resume: continue from ``out_dir``'s training state.
        overwrite: replace an existing model in ``out_dir``.
        assume_band_names: names for unnamed bands of multi-band rasters.
        progress: called with (fraction done, message).
        should_stop: polled every step; True saves a resumable checkpoint and returns.
        on_metrics: called with (step, metrics) every ``train.log_every`` steps.

    Returns:
        The run's :class:`PretrainResult`.

    Raises:
        SwimDiffError: bad input (unreadable rasters, band or grid mismatch, patch too large, output
            not writable, nothing to resume); raised before anything is written.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    report = progress or (lambda fraction, message: None)
    check_output(out_dir, resume, overwrite)
    device = resolve_device(train.device)
    info = init_distributed(train.device)
    if info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    logger.info("device: %s (rank %d of %d)", describe_device(device), info.rank, info.world_size)
    report(0.0, f"reading scenes on {describe_device(device)}")

    scenes = discover_scenes(data.paths, assume_band_names)
    bands = common_bands(scenes, data.bands)
    model_cfg = dataclasses.replace(model_cfg, in_chans=len(bands))
    torch.manual_seed(train.seed)
    model = SwiMDiff(model_cfg, loss).to(device)
    if data.patch_size % model.patch_multiple:
        raise ConfigError(f"--patch-size {data.patch_size} must be a multiple of {model.patch_multiple} for this "
                          "denoiser; e.g. 96")
    sources = build_sources(scenes, bands, data.patch_size, data.cache_mb)

    state_tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    if resume:
        for stale in out_dir.glob(".*.tmp"):  # left by a run killed while writing
            stale.unlink()
        state_tensors, meta = load_train_state(out_dir)
        if meta.get("bands") != bands or ModelConfig.from_dict(meta["architecture"]) != model_cfg:
            raise ResumeError(
                f"--resume: '{out_dir}' was trained on bands {meta.get('bands')} with {meta.get('architecture')}; "
                f"this run has bands {bands} and {model_cfg.to_dict()}: use the same --data/--bands/--arch, "
                "or another --out"
            )
        stats = BandStats.from_dict(meta["normalization"])
    else:
        report(0.01, "estimating per-band normalisation")
        stats = estimate_band_stats(bands, random_windows(sources, data.patch_size, data.stats_windows, train.seed))

    per_epoch = steps_per_epoch(scenes, data.patch_size, train.batch_size, info.world_size)
    total = train.steps or train.epochs * per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    history: list[dict[str, float]] = []
    start_step = 0
    if resume:
        model_state = {k[len("model."):]: v for k, v in state_tensors.items() if k.startswith("model.")}
        try:
            model.load_state_dict(model_state)
            optimizer.load_state_dict(unflatten_optimizer(
                {k: v for k, v in state_tensors.items() if k.startswith("optimizer.")}, meta["optimizer"]))
        except (RuntimeError, KeyError, ValueError) as error:
            raise CheckpointFormatError(f"'{out_dir / STATE_FILE}' does not fit this model ({error})") from error
        torch.set_rng_state(state_tensors["rng.torch"])
        if device.type == "cuda" and "rng.cuda" in state_tensors:
            torch.cuda.set_rng_state(state_tensors["rng.cuda"], device)
        start_step, history = int(meta["step"]), list(meta["history"])
        if start_step >= total:
            raise ResumeError(f"--resume: '{out_dir}' already finished {start_step} steps; raise --steps above that")
        logger.info("resuming at step %d of %d", start_step, total)

    provenance = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "swimdiff_version": __version__,
        "torch_version": torch.__version__,
        "device": describe_device(device),
        "world_size": info.world_size,
        "total_steps": total,
        "steps_per_epoch": per_epoch,
        "scenes": [{"id": s.scene_id, "name": s.name, "dates": [str(d.source) for d in s.dates]} for s in scenes],
    }
    net: torch.nn.Module = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    dataset = ScenePairDataset(scenes, sources, stats, data.patch_size, length=total * train.batch_size,
                               seed=train.seed, rank=info.rank, max_nodata_fraction=data.max_nodata_fraction)
    loader = DataLoader(dataset, batch_size=train.batch_size, sampler=range(start_step * train.batch_size, len(dataset)),
                        num_workers=data.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(train.seed))  # keeps the global RNG for resume
    autocast, scaler = _autocast(device, train.amp)

    def checkpoint(step: int, final: bool) -> None:
        if not info.is_main:
            return
        opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
        tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors, **_rng_tensors(device)}
        state_meta = {"step": step, "history": history, "optimizer": opt_meta, "bands": bands,
                      "architecture": model_cfg.to_dict(), "normalization": stats.to_dict()}
        out_dir.mkdir(parents=True, exist_ok=True)
        save_train_state(out_dir, tensors, state_meta)
        write_csv(out_dir / HISTORY_FILE, history)
        if history:
            plot_losses(out_dir / PLOT_FILE, history, f"SwiMDiff pre-training, {len(scenes)} scene(s), step {step}")
        if final:
            prov = {**provenance, "steps_done": step, "seconds": round(time.perf_counter() - started, 1)}
            save_model(out_dir, model.exported_state_dict(),
                       _model_config_dict(model, bands, stats, data, loss, train, prov, _summary(history)))

    model.train()
    step = start_step
    stopped = False
    window_start, window_sums, window_n = time.perf_counter(), np.zeros(4), 0
    def fraction(done: int) -> float:  # the first 2 % are reading scenes and statistics
        return 0.02 + 0.98 * done / total

    report(fraction(start_step), f"training {total} steps of {train.batch_size} patches on {describe_device(device)}")
    for batch in loader:
        lr = learning_rate(step, total, train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x_q = batch["x_q"].to(device, non_blocking=True)
        x_k = batch["x_k"].to(device, non_blocking=True)
        scene_id = batch["scene_id"].to(device, non_blocking=True)
        with autocast:
            out = net(x_q, x_k, scene_id)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            out.loss.backward()
            optimizer.step()
        step += 1
        values = torch.stack([out.loss.detach(), out.loss_contrastive, out.loss_diffusion, out.accuracy]).float()
        if not torch.isfinite(values).all():
            raise ConfigError(f"the loss became {values.tolist()} at step {step}; lower --lr (now {train.lr})")
        window_sums += values.cpu().numpy()
        window_n += 1
        if step % train.log_every == 0 or step == total:
            means = window_sums / window_n
            row = {"step": step, "loss": means[0], "loss_contrastive": means[1], "loss_diffusion": means[2],
                   "accuracy": means[3], "lr": lr, "seconds": (time.perf_counter() - window_start) / window_n}
            history.append({k: float(v) for k, v in row.items()})
            if on_metrics and info.is_main:
                on_metrics(step, history[-1])
            window_start, window_sums, window_n = time.perf_counter(), np.zeros(4), 0
        report(fraction(step), f"step {step}/{total}, loss {float(values[0]):.4f}")
        stop_now = bool(should_stop and should_stop())
        if step == total or stop_now or step % train.checkpoint_every == 0:
            checkpoint(step, final=step == total)
        if stop_now:
            stopped = True
            logger.info("stopped at step %d; continue with --resume", step)
            break
    if info.world_size > 1:
        dist.barrier()
    return PretrainResult(out_dir, step, total, stopped, describe_device(device),
                          time.perf_counter() - started, _summary(history))
