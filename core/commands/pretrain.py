"""``swimdiff pretrain``: self-supervised SwiMDiff pre-training."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..events import Reporter
from .common import Formatter, StopOnSignal

logger = logging.getLogger("core.cli")


def add(commands: argparse._SubParsersAction) -> None:
    from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig

    d, m, lo, t = DataConfig(paths=("x",)), ModelConfig(), LossConfig(), TrainConfig()
    p = commands.add_parser(
        "pretrain", formatter_class=Formatter,
        help="self-supervised SwiMDiff pre-training on unlabelled multi-date rasters",
        description="Pre-train an encoder with SwiMDiff (MoCo v2 + scene-wide matching + diffusion constraint)\n"
                    "on your own unlabelled rasters. Each --data entry is an OSCD root, a city folder with\n"
                    "imgs_1/imgs_2, a folder of dated multi-band rasters (one scene), or raster files /\n"
                    "*_Bxx.tif band folders (given together they form one scene, dates in the given order).",
        epilog="example: swimdiff pretrain --data ../shared/data/multitemporal/boadella_s2l2a_12dates "
               "--out runs/boadella --steps 200",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="PATH", help="scene sources (see above)")
    p.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help=f"optimisation steps (default: {t.steps} unless --epochs is given)%(default).0s")
    length.add_argument("--epochs", type=int, default=None,
                        help="passes over the non-overlapping patches of all dates%(default).0s")
    p.add_argument("--batch-size", type=int, default=t.batch_size, help="patches per step (and per process)")
    p.add_argument("--patch-size", type=int, default=d.patch_size, help="patch side in pixels, multiple of 16")
    p.add_argument("--bands", default="", help="comma-separated band names in model order; default: the bands "
                                              "every date has, in Sentinel-2 order")
    p.add_argument("--assume-band-names", default="", metavar="NAMES",
                   help="names for the bands of multi-band rasters whose band descriptions are empty, e.g. "
                        "'l2a' for B01..B12 without B10, 'l1c' for all 13, or a comma-separated list")
    p.add_argument("--device", default=t.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--arch", default=m.arch, help="timm ResNet encoder")
    p.add_argument("--lr", type=float, default=t.lr, help="peak AdamW learning rate")
    p.add_argument("--queue-size", type=int, default=m.queue_size, help="K, keys kept in the MoCo queue")
    p.add_argument("--temperature", type=float, default=lo.temperature, help="tau of the contrastive logits")
    p.add_argument("--swm-mode", choices=("soft", "mask", "off"), default=lo.swm_mode,
                   help="scene-wide matching: same-scene keys become soft positives, are masked, or off (MoCo). "
                        "Switched off, with a warning, when everything lies within one --scene-cell")
    p.add_argument("--scene-cell", type=float, default=d.scene_cell_m, metavar="METRES",
                   help="a scene of scene-wide matching is a square place on the ground of this side (a patch's "
                        "scene is the cell holding its centre, from map coordinates: one large raster holds many "
                        "scenes, every date of a place shares its id)")
    p.add_argument("--swm-alpha", type=float, default=lo.swm_alpha, help="soft-positive mass of same-scene keys")
    p.add_argument("--swm-temperature", type=float, default=lo.swm_temperature, help="tau' spreading that mass")
    p.add_argument("--lambda-contrastive", type=float, default=lo.lambda_contrastive, help="weight of L_C")
    p.add_argument("--lambda-diffusion", type=float, default=lo.lambda_diffusion,
                   help="weight of the diffusion constraint L_D (0 switches it off)")
    p.add_argument("--diffusion-fraction", type=float, default=lo.diffusion_fraction,
                   help="share of each batch the denoiser sees")
    p.add_argument("--seed", type=int, default=t.seed, help="seed of patches, augmentations and initialisation")
    p.add_argument("--num-workers", type=int, default=d.num_workers, help="data-loading processes")
    p.add_argument("--cache-mb", type=int, default=d.cache_mb, help="memory for holding small scenes in RAM")
    p.add_argument("--checkpoint-every", type=int, default=t.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=t.log_every, help="steps between metric reports")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    p.set_defaults(run=_run_pretrain)


def _run_pretrain(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from ..io.bands import assumed_band_names, parse_band_list
    from ..pretrain.training import pretrain

    data = DataConfig(paths=tuple(args.data), bands=parse_band_list(args.bands), patch_size=args.patch_size,
                      cache_mb=args.cache_mb, num_workers=args.num_workers, scene_cell_m=args.scene_cell)
    model = ModelConfig(arch=args.arch, queue_size=args.queue_size)
    loss = LossConfig(temperature=args.temperature, swm_mode=args.swm_mode, swm_alpha=args.swm_alpha,
                      swm_temperature=args.swm_temperature, lambda_contrastive=args.lambda_contrastive,
                      lambda_diffusion=args.lambda_diffusion, diffusion_fraction=args.diffusion_fraction)
    steps = args.steps if args.steps is not None else (0 if args.epochs else TrainConfig().steps)
    train = TrainConfig(steps=steps, epochs=args.epochs or 0, batch_size=args.batch_size, lr=args.lr,
                        device=args.device, amp=not args.no_amp, seed=args.seed, log_every=args.log_every,
                        checkpoint_every=args.checkpoint_every)
    with StopOnSignal("saving a checkpoint and the model of this step (continue with --resume)") as stop:
        result = pretrain(data, model, loss, train, args.out, resume=args.resume, overwrite=args.overwrite,
                          assume_band_names=assumed_band_names(args.assume_band_names), progress=reporter.progress,
                          should_stop=stop, on_metrics=reporter.metric)
    plot = result.outputs["plot"] if Path(result.outputs["plot"]).is_file() else "none yet"
    if result.stopped:
        logger.warning("stopped after %d of %d steps in %.0f s on %s; the model of step %d is in %s (usable, not "
                       "finished: continue with --resume), loss plot %s", result.steps_done, result.total_steps,
                       result.seconds, result.device, result.steps_done, result.out_dir, plot)
    else:
        logger.info("finished %d/%d steps in %.0f s on %s; model in %s, loss plot %s", result.steps_done,
                    result.total_steps, result.seconds, result.device, result.out_dir, plot)
    return {**result.outputs, "stopped": result.stopped, "complete": result.steps_done == result.total_steps,
            "steps_done": result.steps_done, "total_steps": result.total_steps, "device": result.device,
            **result.final_metrics}
