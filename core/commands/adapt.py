"""``swimdiff adapt``: fine-tune a change model on polygons an analyst drew over pairs of dates."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from ..events import Reporter
from .common import Formatter, StopOnSignal, add_reading_options, kept_covers

logger = logging.getLogger("core.cli")


def add(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "adapt", formatter_class=Formatter,
        help="fine-tune a change model on change / no-change polygons drawn over a pair of dates",
        description="Adapt a change model to a place. --labels is a polygon layer GDAL/OGR reads (GeoPackage,\n"
                    "Shapefile, GeoJSON; 'file.gpkg|layername=NAME' names a layer) with an integer field\n"
                    "(--label-field): 1 = change, 0 = no change. Pixels inside no polygon are ignored; where\n"
                    "polygons overlap, change wins; polygons in another CRS are reprojected. Repeat\n"
                    "--t1/--t2/--labels for several pairs. About a quarter of each class's pixels is held out\n"
                    "(whole polygons) to choose the step and threshold; the starting model's F1 on the same\n"
                    "pixels is reported beside the adapted one's. The model folder works with 'detect --model'.",
        epilog="example: swimdiff adapt --t1 imgs_1 --t2 imgs_2 --labels drawn.gpkg --out adapted-model",
    )
    p.add_argument("--t1", action="append", required=True, help="the earlier raster of a pair (repeatable)")
    p.add_argument("--t2", action="append", required=True, help="the later raster of a pair (repeatable)")
    p.add_argument("--labels", action="append", required=True, help="the polygons drawn over a pair (repeatable)")
    p.add_argument("--label-field", default="change", help="integer field of the polygons: 1 change, 0 no change")
    p.add_argument("--out", required=True, help="model folder to write (must not hold a model)")
    p.add_argument("--model", default=None, help="change model to start from (default: the shipped model)")
    p.add_argument("--encoder", default=None, help="start from a 'swimdiff pretrain' encoder and a new decoder "
                                                   "instead of a change model")
    p.add_argument("--steps", type=int, default=120, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=8, help="patch pairs per step")
    p.add_argument("--lr", type=float, default=2e-4, help="peak AdamW learning rate")
    p.add_argument("--eval-every", type=int, default=20, help="steps between validations")
    p.add_argument("--keep-vegetation", action="store_true",
                   help="drop the starting model's stable-vegetation rule (pixels green at both dates are not "
                        "change): use it when the changes you draw include changes within green areas")
    p.add_argument("--keep-water", action="store_true",
                   help="drop the starting model's stable-water rule (pixels that are open water at both dates are "
                        "not change): use it when the changes you draw include changes on water")
    add_reading_options(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of patches and the hold-out")
    p.set_defaults(run=_run_adapt)


def _run_adapt(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..change.adapt import ADAPT_TRAIN, LabelledPair, adapt_change_model
    from ..errors import ConfigError
    from ..io.bands import assumed_band_names

    counts = (len(args.t1), len(args.t2), len(args.labels))
    if len(set(counts)) != 1:
        raise ConfigError(f"got {counts[0]} --t1, {counts[1]} --t2 and {counts[2]} --labels; give one --t2 and one "
                          "--labels for every --t1, in the same order")
    if args.eval_every < 1:
        raise ConfigError(f"--eval-every {args.eval_every} is out of range; use 1 or more (e.g. 20)")
    train = replace(ADAPT_TRAIN, steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device,
                    seed=args.seed)
    pairs = [LabelledPair(t1, t2, labels) for t1, t2, labels in zip(args.t1, args.t2, args.labels)]
    with StopOnSignal() as stop:
        result = adapt_change_model(pairs, args.out, model_dir=args.model, encoder_dir=args.encoder, train=train,
                                    label_field=args.label_field, eval_every=args.eval_every,
                                    assume_band_names=assumed_band_names(args.assume_band_names),
                                    value_scale=args.value_scale, keep=kept_covers(args),
                                    progress=reporter.progress, should_stop=stop,
                                    on_metrics=reporter.metric)
    before = result.zero_shot.get("f1")
    logger.info("held-out F1 %.3f at step %d (threshold %.2f)%s; model in %s", result.val_scores.get("f1", 0.0),
                result.best_step, result.threshold,
                f", the starting model's {before:.3f}" if before is not None else "", result.out_dir)
    return {"model_dir": str(result.out_dir), "best_step": result.best_step, "threshold": result.threshold,
            "threshold_kept": result.threshold_kept,
            **{f"val_{k}": v for k, v in result.val_scores.items()},
            **{f"zero_shot_val_{k}": v for k, v in result.zero_shot.items()},
            "labelled_pixels": result.pixels}
