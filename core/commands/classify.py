"""``swimdiff finetune-classify`` and ``swimdiff classify``: land-cover classifiers and maps."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from ..events import Reporter
from .common import Formatter, StopOnSignal, add_reading_options

if TYPE_CHECKING:
    pass

logger = logging.getLogger("core.cli")


def add_finetune(commands: argparse._SubParsersAction) -> None:
    from ..config import ClassifyConfig

    c = ClassifyConfig()
    p = commands.add_parser(
        "finetune-classify", formatter_class=Formatter,
        help="train a land-cover classifier on labelled patches (EuroSAT or BigEarthNet layout)",
        description="Train a scene classifier on labelled patches:\n"
                    "  EuroSAT layout:     DIR/<Class>/*.jpg|*.png|*.tif (one folder per class, single-label)\n"
                    "  BigEarthNet layout: DIR/<patch>/<patch>_Bxx.tif + <patch>_labels_metadata.json (multi-label)\n"
                    "With --encoder the classifier starts from a 'swimdiff pretrain' model: the encoder's bands that\n"
                    "the patches have are used (RGB patches on a 13-band encoder keep its R, G, B input weights) with\n"
                    "its normalisation (8-bit JPG/PNG values get statistics of the training split instead).\n"
                    "Without it the encoder starts from random weights (the baseline). Reports accuracy and a\n"
                    "confusion matrix (single-label) or micro mAP (multi-label) and per-class scores on a\n"
                    "validation split stratified per class.",
        epilog="example: swimdiff finetune-classify --data ../shared/data/classification/eurosat_small/rgb_100 "
               "--encoder runs/my_area --out runs/eurosat --linear-probe --epochs 20",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="folder of labelled patches (see above)")
    p.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    p.add_argument("--encoder", default=None, metavar="PRETRAIN_DIR",
                   help="a 'swimdiff pretrain' model folder (default: random init)%(default).0s")
    p.add_argument("--linear-probe", action="store_true",
                   help="train only the linear layer on frozen encoder features (the SeCo/SwiMDiff protocol)")
    p.add_argument("--epochs", type=int, default=c.epochs, help="passes over the training patches")
    p.add_argument("--batch-size", type=int, default=c.batch_size, help="patches per step")
    p.add_argument("--lr", type=float, default=None,
                   help="peak AdamW learning rate (default: 1e-2 with --linear-probe, 3e-4 otherwise)%(default).0s")
    p.add_argument("--val-fraction", type=float, default=c.val_fraction,
                   help="share of patches held out for validation, per class where possible (0: none)")
    p.add_argument("--no-augment", action="store_true", help="no random flips and 90-degree rotations")
    p.add_argument("--seed", type=int, default=c.seed, help="seed of the split, initialisation and batches")
    p.add_argument("--device", default=c.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--arch", default=c.arch, help="timm ResNet without --encoder (with it, the encoder's)")
    p.set_defaults(run=_run_finetune_classify)


def _run_finetune_classify(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..config import ClassifyConfig
    from ..landcover.training import finetune_classify

    config = ClassifyConfig(arch=args.arch, linear_probe=args.linear_probe, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, val_fraction=args.val_fraction,
                            augment=not args.no_augment, seed=args.seed, device=args.device)
    with StopOnSignal() as stop:
        result = finetune_classify(args.data, args.out, config, encoder_dir=args.encoder,
                                   progress=reporter.progress, should_stop=stop, on_metrics=reporter.metric)
    for name, scores in result.scores["per_class"].items():
        logger.info("%-40s %s", name, "  ".join(f"{k} {'-' if v is None else format(v, '.3g')}"
                                               for k, v in scores.items()))
    value = "n/a" if result.value is None else f"{result.value:.3f}"
    logger.info("%s %s on %s patches; model in %s", result.metric, value, result.evaluated_on, result.out_dir)
    outputs = {"model_dir": str(result.out_dir), result.metric: result.value, "evaluated_on": result.evaluated_on,
               "per_class": result.scores["per_class"]}
    if result.confusion_png:
        outputs["confusion_matrix"] = str(result.confusion_png)
    return outputs


def add_classify(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "classify", formatter_class=Formatter,
        help="land-cover map of a whole raster with a 'swimdiff finetune-classify' model (GeoTIFF out)",
        description="Map the land cover of a raster: windows of the model's patch size slide over it (overlapping\n"
                    "by half a window unless --overlap says otherwise), each window's class probabilities are\n"
                    "blended over its pixels, favouring its centre, and each pixel takes the most probable class.\n"
                    "--raster is a multi-band raster or a folder of *_Bxx.tif band files; the model's bands are\n"
                    "matched by name (band descriptions, R/G/B or STAC common names, file suffixes), else by\n"
                    "count and order with a warning (--assume-band-names names them); values are put on the\n"
                    "model's scale (--value-scale). The map keeps\n"
                    "the raster's CRS and transform: uint8 class ids, 255 where the raster has no data, a colour\n"
                    "table and the class names (CLASS_NAMES metadata). Written window strip by window strip,\n"
                    "memory flat in the raster's height; the files appear only when complete.",
        epilog="example: swimdiff classify --raster scene.tif --model runs/eurosat --out landcover.tif "
               "--probabilities landcover_prob.tif",
    )
    p.add_argument("--raster", required=True, help="the raster to map (its grid is the output grid)")
    p.add_argument("--model", required=True, metavar="DIR", help="a 'swimdiff finetune-classify' model folder")
    p.add_argument("--out", required=True, help="land-cover GeoTIFF: class ids 0..K-1, 255 nodata")
    p.add_argument("--probabilities", default=None, metavar="P.tif",
                   help="also write one float32 band of probability per class")
    p.add_argument("--tile", type=int, default=None,
                   help="window side in pixels (default: the model's patch size)%(default).0s")
    p.add_argument("--overlap", type=int, default=None,
                   help="overlap of neighbouring windows in pixels (default: half a window)%(default).0s")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_reading_options(p)
    p.set_defaults(run=_run_classify)


def _run_classify(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..io.bands import assumed_band_names
    from ..landcover.mapping import CLASS_NODATA, map_land_cover, open_classify_raster

    date = open_classify_raster(args.raster, args.model, assumed_band_names(args.assume_band_names),
                                args.value_scale)
    with StopOnSignal() as stop:  # map_land_cover takes the opened date as it is (see core.io.raster.open_date)
        result = map_land_cover(date, args.model, args.out, args.probabilities, tile=args.tile,
                                overlap=args.overlap, batch_size=args.batch_size, device_name=args.device,
                                progress=reporter.progress, should_stop=stop)
    for name, share in sorted(result.class_fractions.items(), key=lambda item: -item[1]):
        logger.info("%-40s %5.1f %%", name, 100 * share)
    logger.info("land-cover map %s (%d classes, windows of %d px, overlap %d, %.3g Mpx/s on %s)", result.landcover,
                len(result.classes), result.window, result.overlap, result.megapixels_per_second, result.device)
    outputs = {"landcover": str(result.landcover), "model": str(args.model), "classes": result.classes,
               "colors": [list(color) for color in result.colors], "class_fractions": result.class_fractions,
               "nodata": CLASS_NODATA, "multi_label": result.multi_label}
    if result.probabilities:
        outputs["probabilities"] = str(result.probabilities)
    return outputs
