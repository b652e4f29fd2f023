"""Typed, frozen configuration dataclasses that round-trip to JSON.

Each class validates itself in ``__post_init__`` and raises :class:`~core.errors.ConfigError`
(a ``ValueError``) naming the field, the value and the allowed range. Every checkpoint stores
all of them, so a model folder says exactly how it was trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Literal, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound="_JsonConfig")

SWM_MODES = ("soft", "mask", "off")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of the device names every command accepts (see ``DEVICES_HELP``)."""
    return isinstance(name, str) and _DEVICE_NAME.fullmatch(name) is not None


def _check(ok: bool, field: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{field}={value!r} is invalid: {fix}")


class _JsonConfig:
    """Mixin: ``to_dict``/``from_dict`` that round-trip through JSON."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(names)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# What a resumed pre-training may change: how long it runs and how it is logged, checkpointed, read or
# placed. Anything else (batch and patch size, learning rate, seed, the loss, ...) changes what the run
# is, and config.json would then misreport it.
RESUMABLE_CHANGES: dict[str, frozenset[str]] = {
    "train": frozenset({"steps", "epochs", "log_every", "checkpoint_every", "device", "amp"}),
    "data": frozenset({"paths", "cache_mb", "num_workers"}),
    "loss": frozenset(),
    "run": frozenset(),
}
RUN_FIELDS = {"world_size": "processes (torchrun --nproc_per_node)", "scenes": "scenes of --data"}


def resume_conflicts(saved: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> list[str]:
    """Settings of a resumed run that differ from the saved run's and change its meaning.

    Args:
        saved: ``{"train": ..., "data": ..., "loss": ..., "run": {"world_size", "scenes"}}`` as the
            training state recorded them.
        current: the same sections of this run (``to_dict()`` of each config).

    Returns:
        One ``--option: was A, now B`` text per conflict (empty when the run may continue).
    """
    conflicts = []
    for section, fields in current.items():
        before = json.loads(json.dumps(saved.get(section) or {}))  # tuples -> lists, as saved
        now = json.loads(json.dumps(fields))
        for name, value in now.items():
            if name in RESUMABLE_CHANGES.get(section, frozenset()) or name not in before or before[name] == value:
                continue
            option = RUN_FIELDS.get(name, f"--{name.replace('_', '-')}")
            conflicts.append(f"{option}: was {before[name]!r}, now {value!r}")
    return conflicts


@dataclasses.dataclass(frozen=True)
class DataConfig(_JsonConfig):
    """Where training patches come from and how they are cut.

    Attributes:
        paths: scene sources: OSCD roots, city folders, folders of dated rasters, or raster files.
        bands: band names in model order; empty means the bands every date has, in Sentinel-2 order.
        patch_size: side of the square training patch in reference-grid pixels.
        max_nodata_fraction: windows with more nodata than this are redrawn.
        cache_mb: scenes whose stack fits in this budget are held in memory; larger ones stream.
        stats_windows: windows per date sampled to estimate per-band normalisation statistics.
        num_workers: DataLoader worker processes (0 reads in the training process).
        scene_cell_m: side in metres of the ground cells that are scene-wide matching's scenes (a patch's
            scene is the cell holding its centre; see :mod:`core.pretrain.places`).
    """

    paths: tuple[str, ...] = ()
    bands: tuple[str, ...] = ()
    patch_size: int = 96
    max_nodata_fraction: float = 0.5
    cache_mb: int = 2048
    stats_windows: int = 32
    num_workers: int = 1
    scene_cell_m: float = 2560.0

    def __post_init__(self) -> None:
        _check(len(self.paths) > 0, "--data", list(self.paths), "give at least one scene folder or raster")
        _check(16 <= self.patch_size <= 1024 and self.patch_size % 16 == 0, "--patch-size",
               self.patch_size, "use a multiple of 16 between 16 and 1024 (e.g. 96)")
        _check(0.0 <= self.max_nodata_fraction < 1.0, "max_nodata_fraction", self.max_nodata_fraction,
               "use a value in [0, 1)")
        _check(self.cache_mb >= 0, "--cache-mb", self.cache_mb, "use 0 (always stream) or more")
        _check(self.stats_windows >= 1, "stats_windows", self.stats_windows, "use 1 or more")
        _check(self.num_workers >= 0, "--num-workers", self.num_workers, "use 0 or more")
        _check(math.isfinite(self.scene_cell_m) and self.scene_cell_m > 0, "--scene-cell", self.scene_cell_m,
               "use a side in metres greater than 0 (e.g. 2560, about the scenes of the SwiMDiff paper)")


@dataclasses.dataclass(frozen=True)
class ModelConfig(_JsonConfig):
    """Architecture of the SwiMDiff model.

    Attributes:
        arch: a timm ResNet name (resnet18, resnet34, resnet50, ...).
        in_chans: number of input bands (filled in from the data).
        proj_dim: size of the L2-normalised embedding.
        proj_hidden: hidden width of the 2-layer MLP projection head.
        queue_size: K, the number of past keys (with their scene ids) kept as negatives.
        momentum: m of the exponential moving average key encoder (0.99 rather than MoCo's 0.999:
            runs on one user's rasters are thousands, not hundreds of thousands, of steps).
        key_bn_splits: the key batch is shuffled and normalised in this many groups of at least two
            (MoCo's shuffle-BN on one device). This reduces, but does not remove, the leak of batch
            statistics: the query encoder normalises the whole batch as one group, so each key group is
            a random subset of the query's group rather than a different set, as MoCo's cross-GPU
            shuffle gives. Kept this way on purpose: splitting the query batch too would change the
            method and the shipped model's training, which needs a new benchmark to justify. Batches
            too small for two groups of two are normalised in one group (no shuffle benefit, and
            batch normalisation never sees a single value); pre-training logs a warning then.
        denoiser_channels: widths of the diffusion denoiser's levels (its first level sits at
            stride ``denoiser_unshuffle`` of the encoder).
        denoiser_unshuffle: pixel-unshuffle factor: the denoiser sees every pixel, folded into
            channels, at 1/factor resolution.
        diffusion_timesteps: T of the DDPM noise schedule.
    """

    arch: str = "resnet18"
    in_chans: int = 13
    proj_dim: int = 128
    proj_hidden: int = 512
    queue_size: int = 4096
    momentum: float = 0.99
    key_bn_splits: int = 2
    denoiser_channels: tuple[int, ...] = (32, 64)
    denoiser_unshuffle: int = 4
    diffusion_timesteps: int = 1000

    def __post_init__(self) -> None:
        _check(self.arch.startswith(("resnet", "resnext", "seresnet", "wide_resnet")), "--arch", self.arch,
               "choose a timm ResNet such as resnet18, resnet34 or resnet50")
        _check(self.in_chans >= 1, "in_chans", self.in_chans, "use 1 or more bands")
        _check(self.proj_dim >= 8, "proj_dim", self.proj_dim, "use 8 or more")
        _check(self.queue_size >= 1, "--queue-size", self.queue_size, "use 1 or more (e.g. 4096)")
        _check(0.0 <= self.momentum < 1.0, "--momentum", self.momentum, "use a value in [0, 1), e.g. 0.999")
        _check(self.key_bn_splits >= 1, "key_bn_splits", self.key_bn_splits, "use 1 or more")
        _check(len(self.denoiser_channels) in (1, 2, 3) and min(self.denoiser_channels) >= 8,
               "denoiser_channels", self.denoiser_channels, "give 1 to 3 widths of at least 8, e.g. (32, 64)")
        _check(all(c % 8 == 0 for c in self.denoiser_channels), "denoiser_channels",
               self.denoiser_channels, "use multiples of 8 (group normalisation uses 8 groups)")
        _check(self.denoiser_unshuffle in (1, 2, 4, 8), "denoiser_unshuffle", self.denoiser_unshuffle,
               "use 1, 2, 4 or 8")
        _check(self.diffusion_timesteps >= 10, "diffusion_timesteps", self.diffusion_timesteps, "use 10 or more")


@dataclasses.dataclass(frozen=True)
class LossConfig(_JsonConfig):
    """The SwiMDiff objective ``L = lambda_contrastive * L_C + lambda_diffusion * L_D``.

    Attributes:
        temperature: tau of the contrastive logits.
        swm_mode: "soft" (same-scene keys become soft positives), "mask" (they are dropped from the
            denominator) or "off" (plain MoCo).
        swm_alpha: target mass spread over same-scene keys in "soft" mode (0 is plain MoCo).
        swm_temperature: tau' of the softmax that spreads that mass by similarity.
        lambda_contrastive: weight of L_C (0 switches the contrastive part off).
        lambda_diffusion: weight of L_D (0 switches the diffusion constraint off).
        diffusion_fraction: share of each batch that the denoiser sees (cost control).
    """

    temperature: float = 0.2
    swm_mode: Literal["soft", "mask", "off"] = "soft"
    swm_alpha: float = 0.5
    swm_temperature: float = 0.1
    lambda_contrastive: float = 1.0
    lambda_diffusion: float = 1.0
    diffusion_fraction: float = 0.5

    def __post_init__(self) -> None:
        _check(0.0 < self.temperature <= 10.0, "--temperature", self.temperature, "use a value in (0, 10], e.g. 0.2")
        _check(self.swm_mode in SWM_MODES, "--swm-mode", self.swm_mode, f"choose one of {', '.join(SWM_MODES)}")
        _check(0.0 <= self.swm_alpha <= 1.0, "--swm-alpha", self.swm_alpha, "use a value in [0, 1]")
        _check(0.0 < self.swm_temperature <= 10.0, "--swm-temperature", self.swm_temperature,
               "use a value in (0, 10], e.g. 0.1")
        _check(self.lambda_contrastive >= 0.0, "--lambda-contrastive", self.lambda_contrastive, "use 0 or more")
        _check(self.lambda_diffusion >= 0.0, "--lambda-diffusion", self.lambda_diffusion, "use 0 or more")
        _check(self.lambda_contrastive > 0.0 or self.lambda_diffusion > 0.0, "--lambda-contrastive/--lambda-diffusion",
               (self.lambda_contrastive, self.lambda_diffusion), "switch at least one loss on")
        _check(0.0 < self.diffusion_fraction <= 1.0, "--diffusion-fraction", self.diffusion_fraction,
               "use a value in (0, 1]")

    @property
    def uses_diffusion(self) -> bool:
        return self.lambda_diffusion > 0.0


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonConfig):
    """How long and how fast to train.

    Attributes:
        steps: optimisation steps (0 means "derive from epochs").
        epochs: passes over the data's non-overlapping patches (used when steps is 0).
        batch_size: patches per step and process.
        lr: peak learning rate (AdamW, cosine decay after a linear warm-up).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up length.
        device: auto, cpu, cuda or cuda:N.
        amp: mixed precision on CUDA (ignored on CPU).
        seed: seeds patches, augmentations, noise and initialisation.
        log_every: steps between metric events.
        checkpoint_every: steps between resumable checkpoints (the last step always saves).
    """

    steps: int = 1000
    epochs: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    log_every: int = 5
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        _check(self.steps >= 0 and self.epochs >= 0 and (self.steps > 0 or self.epochs > 0),
               "--steps/--epochs", (self.steps, self.epochs), "give a positive --steps or --epochs")
        _check(self.batch_size >= 2, "--batch-size", self.batch_size, "use 2 or more (e.g. 64)")
        _check(0.0 < self.lr <= 1.0, "--lr", self.lr, "use a value in (0, 1], e.g. 1e-3")
        _check(self.weight_decay >= 0.0, "--weight-decay", self.weight_decay, "use 0 or more")
        _check(self.warmup_steps >= 0, "--warmup-steps", self.warmup_steps, "use 0 or more")
        _check(is_device_name(self.device), "--device", self.device, f"use {DEVICES_HELP}")
        _check(self.log_every >= 1, "--log-every", self.log_every, "use 1 or more")
        _check(self.checkpoint_every >= 1, "--checkpoint-every", self.checkpoint_every, "use 1 or more")


@dataclasses.dataclass(frozen=True)
class ClassifyConfig(_JsonConfig):
    """How to train a classifier.

    Attributes:
        arch: timm ResNet of the encoder when there is no pre-trained one (else the encoder's).
        linear_probe: train only the linear layer on frozen encoder features.
        epochs: passes over the training patches.
        batch_size: patches per step.
        lr: peak AdamW learning rate; None means 1e-2 for a linear probe, 3e-4 for fine-tuning.
        weight_decay: AdamW weight decay.
        val_fraction: share of patches held out for validation, per class where possible (0: none;
            the scores are then measured on the training patches, and say so).
        augment: random flips and 90-degree rotations of training patches.
        seed: seeds the split, the initialisation, the batches and the augmentations.
        device: auto, cpu, cuda or cuda:N.
    """

    arch: str = "resnet18"
    linear_probe: bool = False
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    augment: bool = True
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _check(self.arch.startswith(("resnet", "resnext", "seresnet", "wide_resnet")), "--arch", self.arch,
               "choose a timm ResNet such as resnet18, resnet34 or resnet50")
        _check(self.epochs >= 1, "--epochs", self.epochs, "use 1 or more")
        _check(self.batch_size >= 2, "--batch-size", self.batch_size, "use 2 or more (e.g. 32)")
        _check(self.lr is None or 0.0 < self.lr <= 1.0, "--lr", self.lr, "use a value in (0, 1], e.g. 1e-3")
        _check(self.weight_decay >= 0.0, "--weight-decay", self.weight_decay, "use 0 or more")
        _check(0.0 <= self.val_fraction <= 0.5, "--val-fraction", self.val_fraction,
               "use 0 (no validation) to 0.5, e.g. 0.2")
        _check(is_device_name(self.device), "--device", self.device, f"use {DEVICES_HELP}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-2 if self.linear_probe else 3e-4)
