"""The SwiMDiff pre-training loop: data -> model -> optimiser, with checkpoints, resume and DDP.

One function, :func:`pretrain`, serves the CLI, a QgsTask and a Processing algorithm alike: it
takes config dataclasses plus ``progress``/``should_stop``/``on_metrics`` callbacks and returns a
:class:`PretrainResult`. Under ``torchrun`` the same call trains with DistributedDataParallel
(gloo on CPU, NCCL on GPU); rank 0 alone writes. Every check of the user's input happens before
the first file is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .. import __version__
from ..checkpoint import (
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
from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig, resume_conflicts
from ..device import describe_device, resolve_device
from ..errors import CheckpointFormatError, ConfigError, OutputError, ResumeError
from ..history import plot_losses, write_csv
from ..io.normalization import BandStats, estimate_band_stats
from ..io.output_paths import check_writable
from ..models.swimdiff import SwiMDiff
from .distributed import DistInfo, any_rank, barrier, init_distributed, seed_rank
from .places import matching_for_places
from .sampler import DateSource, ScenePairDataset, build_sources, random_windows
from .scenes import Scene, common_bands, discover_scenes

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]
OnMetrics = Callable[[int, dict[str, float]], None]
HISTORY_FILE = "history.csv"
PLOT_FILE = "loss.png"
SETUP_SHARE = 0.02  # progress fraction reserved for reading scenes and statistics


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


@dataclass
class Run:
    """Everything one pre-training run holds, built by :func:`prepare_run`."""

    data: DataConfig
    loss: LossConfig
    train: TrainConfig
    out_dir: Path
    device: torch.device
    info: DistInfo
    scenes: list[Scene]
    bands: list[str]
    sources: list[list[DateSource]]
    stats: BandStats
    model: SwiMDiff
    optimizer: torch.optim.Optimizer
    total_steps: int
    provenance: dict[str, Any]
    start_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)


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
    check_writable(out_dir, "--out", folder=True)


def learning_rate(step: int, total: int, train: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    progress = (step - train.warmup_steps) / max(1, total - train.warmup_steps)
    return train.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def steps_per_epoch(scenes: list[Scene], patch_size: int, global_batch: int) -> int:
    """Non-overlapping patch positions over all dates, divided by the global batch."""
    patches = sum((s.grid.width // patch_size) * (s.grid.height // patch_size) * len(s.dates) for s in scenes)
    return max(1, math.ceil(patches / global_batch))


def prepare_run(data: DataConfig, model_cfg: ModelConfig, loss: LossConfig, train: TrainConfig, out_dir: Path,
                resume: bool, assume_band_names: tuple[str, ...], report: Progress) -> Run:
    """Read the scenes, build the model and optimiser, and restore state when resuming."""
    device = resolve_device(train.device)
    info = init_distributed(train.device)
    if info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    logger.info("device: %s (rank %d of %d)", describe_device(device), info.rank, info.world_size)
    report(0.0, f"reading scenes on {describe_device(device)}")
    scenes = discover_scenes(data.paths, assume_band_names)
    bands = common_bands(scenes, data.bands)
    loss, one_place = matching_for_places(scenes, data.scene_cell_m, loss)
    model_cfg = dataclasses.replace(model_cfg, in_chans=len(bands))
    torch.manual_seed(train.seed)
    model = SwiMDiff(model_cfg, loss).to(device)  # the same initial weights on every rank
    seed_rank(train.seed, info.rank)  # but each rank its own diffusion noise, timesteps and key shuffles
    if data.patch_size % model.patch_multiple:
        raise ConfigError(f"--patch-size {data.patch_size} must be a multiple of {model.patch_multiple} for this "
                          "denoiser; e.g. 96")
    if info.is_main:
        model.warn_if_small_batch(train.batch_size)
    sources = build_sources(scenes, bands, data.patch_size, data.cache_mb)
    state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if resume:
        state = _read_resume_state(out_dir, bands, model_cfg, {
            "train": train.to_dict(), "data": data.to_dict(), "loss": loss.to_dict(),
            "run": {"world_size": info.world_size, "scenes": [s.name for s in scenes]}})
        stats = BandStats.from_dict(state[1]["normalization"])
    else:
        report(SETUP_SHARE / 2, "estimating per-band normalisation")
        stats = estimate_band_stats(bands, random_windows(sources, data.patch_size, data.stats_windows, train.seed))
    per_epoch = steps_per_epoch(scenes, data.patch_size, train.batch_size * info.world_size)
    total = train.steps or train.epochs * per_epoch
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train.lr,
                                  weight_decay=train.weight_decay)
    provenance = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "swimdiff_version": __version__,
        "torch_version": torch.__version__,
        "device": describe_device(device),
        "world_size": info.world_size,
        "total_steps": total,
        "steps_per_epoch": per_epoch,
        "scenes": [{"id": s.scene_id, "name": s.name, "dates": [str(d.source) for d in s.dates]} for s in scenes],
        **({"scene_wide_matching": one_place} if one_place else {}),
    }
    run = Run(data, loss, train, out_dir, device, info, scenes, bands, sources, stats, model, optimizer, total,
              provenance)
    if state is not None:
        _restore(run, *state)
    return run


def _read_resume_state(out_dir: Path, bands: list[str], model_cfg: ModelConfig, settings: dict[str, dict[str, Any]]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The saved state, if this run's bands, architecture and ``settings`` may continue it (``--steps`` may grow)."""
    tensors, meta = load_train_state(out_dir)
    if meta.get("bands") != bands or ModelConfig.from_dict(meta["architecture"]) != model_cfg:
        raise ResumeError(
            f"--resume: '{out_dir}' was trained on bands {meta.get('bands')} with {meta.get('architecture')}; "
            f"this run has bands {bands} and {model_cfg.to_dict()}: use the same --data/--bands/--arch, "
            "or another --out"
        )
    if "train" not in meta:
        logger.warning("'%s' predates recorded settings; cannot check that --batch-size, --patch-size, --lr etc. "
                       "match the saved run", out_dir / STATE_FILE)
    elif conflicts := resume_conflicts(meta, settings):
        raise ResumeError(f"--resume: '{out_dir}' was trained with other settings ({'; '.join(conflicts)}); they "
                          "change what the run is: resume with the saved values, or start a new run in another --out")
    return tensors, meta


def _restore(run: Run, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Load model, optimiser, RNG and history from a training state."""
    try:
        run.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        run.optimizer.load_state_dict(unflatten_optimizer(
            {k: v for k, v in tensors.items() if k.startswith("optimizer.")}, meta["optimizer"]))
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointFormatError(f"'{run.out_dir / STATE_FILE}' does not fit this model ({error})") from error
    torch.set_rng_state(tensors["rng.torch"])
    if run.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], run.device)
    run.start_step, run.history = int(meta["step"]), list(meta["history"])
    if run.info.rank > 0:  # the saved RNG state is rank 0's: other ranks draw their own again
        seed_rank(run.train.seed, run.info.rank, run.start_step)
    if run.start_step >= run.total_steps:
        raise ResumeError(
            f"--resume: '{run.out_dir}' already finished {run.start_step} steps; raise --steps above that"
        )
    logger.info("resuming at step %d of %d", run.start_step, run.total_steps)


def batches(run: Run) -> Iterator[dict[str, torch.Tensor]]:
    """The remaining batches; sample ``i`` depends only on (seed, rank, i), so resume replays exactly."""
    dataset = ScenePairDataset(run.scenes, run.sources, run.stats, run.data.patch_size,
                               length=run.total_steps * run.train.batch_size, seed=run.train.seed,
                               rank=run.info.rank, max_nodata_fraction=run.data.max_nodata_fraction,
                               cell_m=run.data.scene_cell_m)
    remaining = range(run.start_step * run.train.batch_size, len(dataset))
    loader = DataLoader(dataset, batch_size=run.train.batch_size, sampler=remaining,
                        num_workers=run.data.num_workers, pin_memory=run.device.type == "cuda",
                        generator=torch.Generator().manual_seed(run.train.seed))  # leaves the global RNG alone
    for batch in loader:
        yield {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}


class StepRunner:
    """Forward, backward and update of one step, with mixed precision on CUDA."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.net: torch.nn.Module = run.model
        if run.info.world_size > 1:
            ids = [run.device.index] if run.device.type == "cuda" else None
            self.net = DistributedDataParallel(run.model, device_ids=ids)
        enabled = run.train.amp and run.device.type == "cuda"
        bf16 = enabled and torch.cuda.is_bf16_supported()
        self.autocast_dtype = torch.bfloat16 if bf16 else torch.float16
        self.amp = enabled
        self.scaler = torch.amp.GradScaler("cuda") if enabled and not bf16 else None

    def __call__(self, batch: dict[str, torch.Tensor], lr: float) -> torch.Tensor:
        """Train on one batch; returns (loss, loss_contrastive, loss_diffusion, accuracy)."""
        optimizer = self.run.optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device_type=self.run.device.type, dtype=self.autocast_dtype, enabled=self.amp):
            out = self.net(batch["x_q"], batch["x_k"], batch["scene_id"])
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(out.loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            out.loss.backward()
            optimizer.step()
        return torch.stack([out.loss.detach(), out.loss_contrastive, out.loss_diffusion, out.accuracy]).float()


class MetricWindow:
    """Averages step values between two logged rows of the history."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums, self.count, self.started = np.zeros(4), 0, time.perf_counter()

    def add(self, values: torch.Tensor) -> None:
        self.sums += values.cpu().numpy()
        self.count += 1

    def row(self, step: int, lr: float, negatives: int) -> dict[str, float]:
        loss, loss_c, loss_d, accuracy = self.sums / max(1, self.count)
        seconds = (time.perf_counter() - self.started) / max(1, self.count)
        self.reset()
        return {"step": float(step), "loss": float(loss), "loss_contrastive": float(loss_c),
                "loss_diffusion": float(loss_d), "accuracy": float(accuracy), "negatives": float(negatives),
                "lr": lr, "seconds": seconds}


def save_checkpoint(run: Run, step: int, final: bool) -> None:
    """Rank 0 writes the resumable state, history and plot; if ``final`` (end or stop) also the model folder."""
    if not run.info.is_main:
        return
    opt_tensors, opt_meta = flatten_optimizer(run.optimizer.state_dict())
    tensors = {**{f"model.{k}": v for k, v in run.model.state_dict().items()}, **opt_tensors,
               "rng.torch": torch.get_rng_state()}
    if run.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(run.device)
    meta = {"step": step, "history": run.history, "optimizer": opt_meta, "bands": run.bands,
            "architecture": run.model.model_config.to_dict(), "normalization": run.stats.to_dict(),
            "train": run.train.to_dict(), "data": run.data.to_dict(), "loss": run.loss.to_dict(),
            "run": {"world_size": run.info.world_size, "scenes": [s.name for s in run.scenes]}}
    run.out_dir.mkdir(parents=True, exist_ok=True)
    save_train_state(run.out_dir, tensors, meta)
    write_csv(run.out_dir / HISTORY_FILE, run.history)
    if run.history:
        plot_losses(run.out_dir / PLOT_FILE, run.history,
                    f"SwiMDiff pre-training, {len(run.scenes)} scene(s), step {step}")
    if final:
        provenance = {**run.provenance, "steps_done": step, "complete": step == run.total_steps,
                      "seconds": round(time.perf_counter() - run.started, 1)}
        save_model(run.out_dir, run.model.exported_state_dict(), {
            "kind": PRETRAIN_KIND,
            "architecture": run.model.model_config.to_dict(),
            "bands": run.bands,
            "normalization": run.stats.to_dict(),
            "patch_size": run.data.patch_size,
            "data": run.data.to_dict(),
            "loss": run.loss.to_dict(),
            "train": run.train.to_dict(),
            "provenance": provenance,
            "metrics": summarise(run.history),
        })


def summarise(history: list[dict[str, float]]) -> dict[str, float]:
    """Means over the last fifth of the logged rows (less noisy than the last row)."""
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
        should_stop: polled every step; True saves a resumable checkpoint and the model of that step
            (provenance ``complete: false``) and returns with ``stopped``.
        on_metrics: called with (step, metrics) every ``train.log_every`` steps.

    Returns:
        The run's :class:`PretrainResult`.

    Raises:
        SwimDiffError: bad input (unreadable rasters, band or grid mismatch, patch too large, output
            not writable, nothing to resume); raised before anything is written.
    """
    out_dir = Path(out_dir)
    report = progress or (lambda fraction, message: None)
    check_output(out_dir, resume, overwrite)
    run = prepare_run(data, model_cfg, loss, train, out_dir, resume, assume_band_names, report)
    total, global_batch = run.total_steps, train.batch_size * run.info.world_size
    step_runner, window = StepRunner(run), MetricWindow()
    device_text = describe_device(run.device)
    report(SETUP_SHARE, f"training {total} steps of {train.batch_size} patches on {device_text}")
    run.model.train()
    step, stopped = run.start_step, False
    for batch in batches(run):
        lr = learning_rate(step, total, train)
        values = step_runner(batch, lr)
        step += 1
        if not torch.isfinite(values).all():
            raise ConfigError(f"the loss became {values.tolist()} at step {step}; lower --lr (now {train.lr})")
        window.add(values)
        if step % train.log_every == 0 or step == total:
            run.history.append(window.row(step, lr, min(run.model.model_config.queue_size, step * global_batch)))
            if on_metrics and run.info.is_main:
                on_metrics(step, run.history[-1])
        report(SETUP_SHARE + (1 - SETUP_SHARE) * step / total, f"step {step}/{total}, loss {float(values[0]):.4f}")
        stopped = any_rank(bool(should_stop and should_stop()), run.device)  # a stop on one rank stops all
        if step == total or stopped or step % train.checkpoint_every == 0:
            save_checkpoint(run, step, final=step == total or stopped)  # a stop leaves a usable model too
        if stopped:
            logger.info("stopped at step %d of %d; the model of this step is saved; continue with --resume",
                        step, total)
            break
    barrier()
    return PretrainResult(out_dir, step, total, stopped, device_text, time.perf_counter() - run.started,
                          summarise(run.history))
