"""``swimdiff finetune-change`` and ``swimdiff evaluate``: change detection on OSCD."""

from __future__ import annotations

import argparse
import logging

from ..events import Reporter
from .common import Formatter, StopOnSignal

logger = logging.getLogger("core.cli")


def _cities(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def add_finetune(commands: argparse._SubParsersAction) -> None:
    from ..config import TrainConfig

    t = TrainConfig()
    p = commands.add_parser(
        "finetune-change", formatter_class=Formatter,
        help="fine-tune a Siamese U-Net for change detection on labelled OSCD cities",
        description="Train change detection on an OSCD-layout root (images/<city>/imgs_1|imgs_2, labels/<city>/cm).\n"
                    "With --encoder the Siamese U-Net starts from a 'swimdiff pretrain' model (its bands and\n"
                    "normalisation are used); without it from random weights (the baseline). The step and\n"
                    "probability threshold with the best pooled F1 on the validation pixels are kept: the bottom\n"
                    "--val-fraction of every training city's rows (never in a training patch) and any --val-cities.",
    )
    p.add_argument("--data", required=True, help="OSCD root")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--encoder", default=None, help="a 'swimdiff pretrain' model folder (default: random init)")
    p.add_argument("--cities", default="aguasclaras,bercy,bordeaux,paris,saclay_e,pisa,beihai,beirut",
                   help="comma-separated training cities (default: all labelled ones but mumbai and nantes, "
                        "held out for testing)")
    p.add_argument("--val-cities", default="", help="comma-separated validation cities")
    p.add_argument("--val-fraction", type=float, default=0.25,
                   help="also validate on the bottom rows of every training city (a spatial hold-out; 0: off)")
    p.add_argument("--bands", default="", help="bands to use (default: without --encoder all both dates share, "
                                              "with --encoder all of its bands; with --encoder, some of its "
                                              "bands, e.g. B02,B03,B04,B08: its first layer keeps theirs)")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    p.add_argument("--steps", type=int, default=600, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=8, help="patch pairs per step")
    p.add_argument("--patch-size", type=int, default=96, help="patch side in pixels")
    p.add_argument("--lr", type=float, default=t.lr, help="peak AdamW learning rate")
    p.add_argument("--eval-every", type=int, default=50, help="steps between validations")
    p.add_argument("--ema", type=float, default=0.98, help="decay of the weight average that is validated and "
                                                          "saved (0: the raw weights)")
    p.add_argument("--jitter", type=float, default=0.0,
                   help="strength of a random gain and offset per band and date (radiometric augmentation; 0: off)")
    p.add_argument("--change-share", type=float, default=0.5,
                   help="share of training patches centred on a changed pixel (the rest anywhere; changes cover "
                        "0.3-4 %% of OSCD pixels)")
    p.add_argument("--encoder-lr-scale", type=float, default=1.0,
                   help="the encoder's learning rate as a share of --lr (e.g. 0.1: a pre-trained encoder moves less)")
    p.add_argument("--fusion", choices=("diff", "diff+mean"), default="diff",
                   help="what the decoder sees of the two dates: their features' difference, or also their mean "
                        "(what the place is: water, field, roof)")
    p.add_argument("--match-dates", action="store_true",
                   help="map every t2 onto its t1 (per band, median and 16-84 percentile range) before normalising, "
                        "so global differences between the dates are not change; the model then does it everywhere")
    p.add_argument("--pseudo-labels", default=None, metavar="DIR",
                   help="self-training: a folder of <city>.tif pseudo-labels (0 no change, 1 change, 255 ignored) "
                        "for cities of --data; they are trained on, never validated on")
    p.add_argument("--no-change-scene", action="append", default=[], metavar="DIR",
                   help="a folder of dated rasters of a place where nothing of interest changed (e.g. fields "
                        "through the seasons): pairs of its dates half the series apart are trained on as 'no "
                        "change', never validated on; repeat for several places")
    p.add_argument("--assume-band-names", default="", metavar="NAMES",
                   help="names of the unnamed bands of --no-change-scene rasters, in file order: l2a, l1c or a "
                        "list such as B02,B03,B04,B08")
    p.add_argument("--device", default=t.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=t.seed, help="seed of patches and initialisation")
    p.set_defaults(run=_run_finetune_change)


def _run_finetune_change(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..change.training import finetune_change
    from ..config import TrainConfig
    from ..io.bands import assumed_band_names, parse_band_list

    train = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed)
    with StopOnSignal() as stop:
        result = finetune_change(args.data, args.out, _cities(args.cities), _cities(args.val_cities), train,
                                 encoder_dir=args.encoder, bands=list(parse_band_list(args.bands)) or None,
                                 freeze_encoder=args.freeze_encoder,
                                 patch_size=args.patch_size, eval_every=args.eval_every, ema=args.ema,
                                 val_fraction=args.val_fraction, jitter=args.jitter,
                                 pseudo_labels=args.pseudo_labels, match=args.match_dates,
                                 change_share=args.change_share, encoder_lr_scale=args.encoder_lr_scale,
                                 fusion=args.fusion,
                                 no_change_scenes=args.no_change_scene,
                                 assume_band_names=assumed_band_names(args.assume_band_names),
                                 progress=reporter.progress, should_stop=stop, on_metrics=reporter.metric)
    logger.info("best validation F1 %.3f at step %d (threshold %.2f); model in %s",
                result.val_scores.get("f1", float("nan")), result.best_step, result.threshold, result.out_dir)
    return {"model_dir": str(result.out_dir), "best_step": result.best_step, "threshold": result.threshold,
            **{f"val_{k}": v for k, v in result.val_scores.items()}}


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate", formatter_class=Formatter,
        help="score change detection on labelled OSCD cities (report, previews, JSON)",
        description="Pooled change-class precision, recall, F1 and IoU over all labelled pixels of the chosen\n"
                    "cities, a per-city table, a Markdown report and t1 | t2 | label | prediction previews.\n"
                    "A model is scored on cities it was not trained on: by default the test cities its config\n"
                    "records, else the labelled cities it was neither trained nor validated on. Scoring one of\n"
                    "its training cities needs --include-training-cities; every score says which cities trained it.",
    )
    p.add_argument("--data", required=True, help="OSCD root")
    p.add_argument("--model", default=None, help="a 'swimdiff finetune-change' model folder (default: the shipped "
                                                 "model); features: also a 'swimdiff pretrain' folder")
    p.add_argument("--method", choices=("model", "features", "cva"), default="model",
                   help="the model, the encoder feature distance + Otsu, or the CVA baseline")
    p.add_argument("--cities", default="", help="comma-separated labelled cities (default: the model's held-out "
                                                "cities; with --method cva all labelled ones)")
    p.add_argument("--include-training-cities", action="store_true",
                   help="allow the model's own training cities (and, without --cities, add them); their scores "
                        "are labelled as training cities and are not a held-out measure")
    p.add_argument("--report", default=None, metavar="DIR", help="write report.md, scores.json and PNG previews")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the scores as JSON here")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..change.evaluation import evaluate_oscd
    from ..checkpoint import atomic_write_text
    from ..io.output_paths import check_writable

    json_path = check_writable(args.json, "--json", folder=False) if args.json else None  # before scoring
    result = evaluate_oscd(args.data, _cities(args.cities) or None, args.model, args.method, args.report,
                           args.device, progress=reporter.progress,
                           include_training=args.include_training_cities)
    roles = result.roles()
    for name, counts in result.cities.items():
        logger.info("%-12s F1 %.3f  precision %.3f  recall %.3f  (%s)", name, counts.f1, counts.precision,
                    counts.recall, roles[name])
    scores = result.total.scores()
    logger.info("pooled       F1 %.3f  precision %.3f  recall %.3f  IoU %.3f  %s", scores["f1"], scores["precision"],
                scores["recall"], scores["iou"], result.summary())
    held = result.held_out_total()
    if not result.held_out and held is not None:
        logger.info("held-out     F1 %.3f  precision %.3f  recall %.3f  IoU %.3f  (cities the model did not see)",
                    held.f1, held.precision, held.recall, held.iou)
    if json_path is not None:
        atomic_write_text(json_path, result.to_json())
    summary = result.to_dict()
    return {key: summary[key] for key in ("pooled", "held_out", "pooled_over", "training_cities", "pooled_held_out")
            if key in summary} | ({"report": str(result.report)} if result.report else {})
