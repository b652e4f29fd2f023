"""The ``swimdiff`` command line: thin argument parsing over core functions.

Each command parses its arguments into config dataclasses, calls one core function and reports
through a :class:`~core.events.Reporter`. Exit codes: 0 success, 2 a user error (message says
the fix), 1 a bug (traceback logged), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .events import BarReporter, JsonLinesReporter, JsonLogHandler, Reporter

logger = logging.getLogger("core.cli")

EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_CANCELLED = 130


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    from .config import DataConfig, LossConfig, ModelConfig, TrainConfig

    d, m, lo, t = DataConfig(paths=("x",)), ModelConfig(), LossConfig(), TrainConfig()
    p = commands.add_parser(
        "pretrain", formatter_class=_Formatter,
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
                   help="scene-wide matching: same-scene keys become soft positives, are masked, or off (MoCo)")
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


class StopOnSignal:
    """SIGTERM or a first Ctrl-C asks the running job to stop cleanly at its next step (pre-training
    saves a resumable checkpoint; other jobs leave no output); a second Ctrl-C interrupts at once."""

    def __init__(self, note: str = "stopping at the end of this step; nothing half-written is kept") -> None:
        self.note = note
        self.requested = False
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stop requested: %s", self.note)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def _assumed_names(text: str) -> tuple[str, ...]:
    from .data.bands import SENTINEL2_BANDS, SENTINEL2_L2A_BANDS, parse_band_list

    presets = {"l2a": SENTINEL2_L2A_BANDS, "l1c": SENTINEL2_BANDS}
    return presets.get(text.strip().lower(), parse_band_list(text) if text else ())


def _run_pretrain(args: argparse.Namespace, reporter: Reporter) -> dict:
    from .config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from .data.bands import parse_band_list
    from .train import pretrain

    data = DataConfig(paths=tuple(args.data), bands=parse_band_list(args.bands), patch_size=args.patch_size,
                      cache_mb=args.cache_mb, num_workers=args.num_workers)
    model = ModelConfig(arch=args.arch, queue_size=args.queue_size)
    loss = LossConfig(temperature=args.temperature, swm_mode=args.swm_mode, swm_alpha=args.swm_alpha,
                      swm_temperature=args.swm_temperature, lambda_contrastive=args.lambda_contrastive,
                      lambda_diffusion=args.lambda_diffusion, diffusion_fraction=args.diffusion_fraction)
    steps = args.steps if args.steps is not None else (0 if args.epochs else TrainConfig().steps)
    train = TrainConfig(steps=steps, epochs=args.epochs or 0, batch_size=args.batch_size, lr=args.lr,
                        device=args.device, amp=not args.no_amp, seed=args.seed, log_every=args.log_every,
                        checkpoint_every=args.checkpoint_every)
    with StopOnSignal("saving a checkpoint at the end of this step (continue with --resume)") as stop:
        result = pretrain(data, model, loss, train, args.out, resume=args.resume, overwrite=args.overwrite,
                          assume_band_names=_assumed_names(args.assume_band_names), progress=reporter.progress,
                          should_stop=stop, on_metrics=reporter.metric)
    state = "stopped" if result.stopped else "finished"
    logger.info("%s %d/%d steps in %.0f s on %s; model in %s, loss plot %s", state, result.steps_done,
                result.total_steps, result.seconds, result.device, result.out_dir, result.outputs["plot"])
    return {**result.outputs, "stopped": result.stopped, "steps_done": result.steps_done, "device": result.device,
            **result.final_metrics}


def _add_detect(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "detect", formatter_class=_Formatter,
        help="change map of two rasters of the same place (GeoTIFF out)",
        description="Detect changes between two dates. --t1 and --t2 are multi-band rasters or folders of\n"
                    "*_Bxx.tif band files; bands are matched by name (band descriptions or file suffixes),\n"
                    "else by count and order. t2 is warped onto t1's grid when the grids differ. Outputs keep\n"
                    "t1's CRS and transform and appear only when complete.\n"
                    "Methods so far: cva (change vector analysis, Otsu threshold); the SwiMDiff model comes next.",
        epilog="example: swimdiff detect --t1 ../shared/data/oscd/images/bercy/imgs_1 "
               "--t2 ../shared/data/oscd/images/bercy/imgs_2 --out change.tif --score magnitude.tif",
    )
    p.add_argument("--t1", required=True, help="the earlier raster (its grid is the output grid)")
    p.add_argument("--t2", required=True, help="the later raster")
    p.add_argument("--out", required=True, help="change mask GeoTIFF: 0 no change, 1 change, 255 nodata")
    p.add_argument("--score", default=None, help="also write the change score (float32 GeoTIFF)")
    p.add_argument("--method", choices=("cva",), default="cva", help="how change is scored")
    p.add_argument("--threshold", type=float, default=None, help="score threshold (default: Otsu's, automatic)")
    p.add_argument("--bands", default="", help="comma-separated bands to compare (default: all both share)")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels (memory grows with its square)")
    p.set_defaults(run=_run_detect)


def _run_detect(args: argparse.Namespace, reporter: Reporter) -> dict:
    from .data.bands import parse_band_list
    from .errors import ConfigError
    from .infer import detect_cva, open_pair

    if not 64 <= args.tile <= 8192:
        raise ConfigError(f"--tile {args.tile} is out of range; use 64 to 8192 (e.g. 512)")
    pair = open_pair(args.t1, args.t2, parse_band_list(args.bands))
    logger.info("comparing %d bands: %s", len(pair.bands), ", ".join(pair.bands))
    with StopOnSignal() as stop:
        result = detect_cva(pair, args.out, args.score, tile=args.tile, threshold=args.threshold,
                            progress=reporter.progress, should_stop=stop)
    logger.info("change mask %s (%.2f %% changed, threshold %.4g, %.1f Mpx/s)%s", result.change,
                100 * result.changed_fraction, result.threshold, result.megapixels_per_second,
                "; t2 was warped onto t1's grid" if result.warped else "")
    outputs = {"change": str(result.change), "threshold": result.threshold,
               "changed_fraction": result.changed_fraction, "warped": result.warped}
    if result.score:
        outputs["score"] = str(result.score)
    return outputs


def _cities(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _add_finetune_change(commands: argparse._SubParsersAction) -> None:
    from .config import TrainConfig

    t = TrainConfig()
    p = commands.add_parser(
        "finetune-change", formatter_class=_Formatter,
        help="fine-tune a Siamese U-Net for change detection on labelled OSCD cities",
        description="Train change detection on an OSCD-layout root (images/<city>/imgs_1|imgs_2, labels/<city>/cm).\n"
                    "With --encoder the Siamese U-Net starts from a 'swimdiff pretrain' model (its bands and\n"
                    "normalisation are used); without it from random weights (the baseline). The step and\n"
                    "probability threshold with the best pooled F1 on --val-cities are kept.",
    )
    p.add_argument("--data", required=True, help="OSCD root")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--encoder", default=None, help="a 'swimdiff pretrain' model folder (default: random init)")
    p.add_argument("--cities", default="aguasclaras,bercy,bordeaux,paris,saclay_e,pisa,beihai,beirut",
                   help="comma-separated training cities")
    p.add_argument("--val-cities", default="mumbai,nantes", help="comma-separated validation cities ('' for none)")
    p.add_argument("--bands", default="", help="bands to use without --encoder (default: all both dates share); "
                                              "with --encoder its bands are used")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    p.add_argument("--steps", type=int, default=600, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=8, help="patch pairs per step")
    p.add_argument("--patch-size", type=int, default=96, help="patch side in pixels")
    p.add_argument("--lr", type=float, default=t.lr, help="peak AdamW learning rate")
    p.add_argument("--eval-every", type=int, default=50, help="steps between validations")
    p.add_argument("--device", default=t.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=t.seed, help="seed of patches and initialisation")
    p.set_defaults(run=_run_finetune_change)


def _run_finetune_change(args: argparse.Namespace, reporter: Reporter) -> dict:
    from .config import TrainConfig
    from .data.bands import parse_band_list
    from .finetune import finetune_change

    train = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed)
    with StopOnSignal() as stop:
        result = finetune_change(args.data, args.out, _cities(args.cities), _cities(args.val_cities), train,
                                 encoder_dir=args.encoder, bands=list(parse_band_list(args.bands)) or None,
                                 freeze_encoder=args.freeze_encoder,
                                 patch_size=args.patch_size, eval_every=args.eval_every,
                                 progress=reporter.progress, should_stop=stop, on_metrics=reporter.metric)
    logger.info("best validation F1 %.3f at step %d (threshold %.2f); model in %s",
                result.val_scores.get("f1", float("nan")), result.best_step, result.threshold, result.out_dir)
    return {"model_dir": str(result.out_dir), "best_step": result.best_step, "threshold": result.threshold,
            **{f"val_{k}": v for k, v in result.val_scores.items()}}


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate", formatter_class=_Formatter,
        help="score change detection on labelled OSCD cities (report, previews, JSON)",
        description="Pooled change-class precision, recall, F1 and IoU over all labelled pixels of the chosen\n"
                    "cities, a per-city table, a Markdown report and t1 | t2 | label | prediction previews.",
    )
    p.add_argument("--data", required=True, help="OSCD root")
    p.add_argument("--model", default=None, help="a 'swimdiff finetune-change' model folder")
    p.add_argument("--method", choices=("model", "cva"), default="model", help="the model, or the CVA baseline")
    p.add_argument("--cities", default="", help="comma-separated labelled cities (default: all)")
    p.add_argument("--report", default=None, metavar="DIR", help="write report.md, scores.json and PNG previews")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the scores as JSON here")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, reporter: Reporter) -> dict:
    from .checkpoint import atomic_write_text
    from .evaluate import evaluate_oscd

    result = evaluate_oscd(args.data, _cities(args.cities) or None, args.model, args.method, args.report,
                           args.device, progress=reporter.progress)
    for name, counts in result.cities.items():
        logger.info("%-12s F1 %.3f  precision %.3f  recall %.3f", name, counts.f1, counts.precision, counts.recall)
    scores = result.total.scores()
    logger.info("pooled       F1 %.3f  precision %.3f  recall %.3f  IoU %.3f", scores["f1"], scores["precision"],
                scores["recall"], scores["iou"])
    if args.json:
        atomic_write_text(Path(args.json), result.to_json())
    return {"pooled": scores, **({"report": str(result.report)} if result.report else {})}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swimdiff", formatter_class=_Formatter,
        description="SwiMDiff: self-supervised pre-training and change detection for multi-date satellite rasters.",
    )
    parser.add_argument("--version", action="version", version=f"swimdiff {__version__}")
    parser.add_argument("--events", choices=("none", "jsonl"), default="none",
                        help="jsonl: one JSON event per stdout line (for the QGIS plugin)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_pretrain(commands)
    _add_detect(commands)
    _add_finetune_change(commands)
    _add_evaluate(commands)
    return parser


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept ``--events jsonl`` and ``-v`` after the command too (``swimdiff pretrain ... --events jsonl``)."""
    out, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--events" and i + 1 < len(argv):
            out += argv[i:i + 2]
            i += 2
            continue
        if argv[i].startswith("--events="):
            out.append(argv[i])
        elif argv[i] in ("-v", "--verbose"):
            out.append(argv[i])
        else:
            rest.append(argv[i])
        i += 1
    return out + rest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``swimdiff`` console script."""
    argv = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING
    reporter: Reporter
    if args.events == "jsonl":
        json_reporter = JsonLinesReporter()
        logging.basicConfig(level=level, handlers=[JsonLogHandler(json_reporter)])
        reporter = json_reporter if rank == 0 else Reporter()
    else:
        if rank == 0 and sys.stderr.isatty():
            bar = BarReporter()
            logging.basicConfig(level=level, handlers=[bar.log_handler()])
            reporter = bar
        else:
            logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
            reporter = Reporter()
    from .errors import Cancelled, SwimDiffError

    try:
        outputs = args.run(args, reporter)
        reporter.result(outputs)
        return 0
    except SwimDiffError as error:
        logger.error("%s", error)
        reporter.error(error.kind, str(error))
        return EXIT_USER_ERROR
    except Cancelled as error:
        logger.warning("%s", error)
        reporter.error(error.kind, str(error))
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        reporter.error("Interrupted", "interrupted")
        return EXIT_CANCELLED
    except Exception as error:  # a bug: keep the traceback
        logger.exception("unexpected error (a bug; please report it with this traceback)")
        reporter.error("InternalError", f"{type(error).__name__}: {error}")
        return EXIT_BUG
    finally:
        reporter.close()
        if "torch" in sys.modules:  # only commands that trained can have joined a process group
            from .distributed import leave_process_group

            leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
