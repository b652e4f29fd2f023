"""``swimdiff detect``: a change map of two rasters."""

from __future__ import annotations

import argparse
import logging

from ..events import Reporter
from .common import Formatter, StopOnSignal, add_reading_options, kept_covers

logger = logging.getLogger("core.cli")


def add(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "detect", formatter_class=Formatter,
        help="change map of two rasters of the same place (GeoTIFF out)",
        description="Detect changes between two dates. --t1 and --t2 are multi-band rasters (GeoTIFF, VRT...),\n"
                    "folders of *_Bxx.tif band files, or one such file (its sibling bands come with it). Bands are\n"
                    "matched by name (band descriptions, R/G/B or STAC common names, the *_Bxx.tif files a VRT\n"
                    "stacks, file suffixes), else by count and order with a warning (--assume-band-names names\n"
                    "them). Values are put on the model's scale (--value-scale). t2 is warped onto t1's grid\n"
                    "when the grids differ. Outputs keep t1's CRS and transform, are written tile by tile and\n"
                    "appear only when complete.\n"
                    "Methods: model (a 'swimdiff finetune-change' model; without --model the default model\n"
                    "shipped in resources/models/oscd-change), features (no labels: cosine distance of the\n"
                    "encoder features of the two dates, Otsu's threshold; --model may be a 'swimdiff pretrain'\n"
                    "folder) and cva (classic change vector analysis on standardised bands, Otsu's threshold).",
        epilog="example: swimdiff detect --t1 ../shared/data/oscd/images/bercy/imgs_1 "
               "--t2 ../shared/data/oscd/images/bercy/imgs_2 --out change.tif "
               "--probability prob.tif",
    )
    p.add_argument("--t1", required=True, help="the earlier raster (its grid is the output grid)")
    p.add_argument("--t2", required=True, help="the later raster")
    p.add_argument("--out", required=True, help="change mask GeoTIFF: 0 no change, 1 change, 255 nodata")
    p.add_argument("--probability", "--score", dest="probability", default=None,
                   help="also write the change probability (model) or magnitude (cva) as float32 GeoTIFF")
    p.add_argument("--model", default=None,
                   help="a 'swimdiff finetune-change' folder (features: also a 'swimdiff pretrain' folder); "
                        "default: the shipped model")
    p.add_argument("--method", choices=("model", "features", "cva"), default="model", help="how change is scored")
    p.add_argument("--threshold", type=float, default=None,
                   help="threshold (default: the model's validated one; Otsu's for features and cva). On places "
                        "unlike the training cities models are less sure of real changes: a lower value (e.g. "
                        "0.15) finds more of them at the cost of false alarms")
    p.add_argument("--bands", default="", help="cva: comma-separated bands to compare (default: all both share)")
    p.add_argument("--mask-clouds", action="store_true",
                   help="make the cloudy pixels of either date nodata in every output (s2cloudless, on a ~60 m grid) "
                        "and report the cloudy fractions. Needs the Sentinel-2 L1C bands B01, B02, B04, B05, B08, "
                        "B8A, B09, B10, B11, B12 (not L2A: it has no B10); does not find cloud shadows")
    p.add_argument("--cloud-threshold", type=float, default=None, metavar="P",
                   help="with --mask-clouds: the cloud probability above which a pixel is cloudy; not given: 0.4, "
                        "s2cloudless's default (raise it, e.g. to 0.5, when bright roofs or bare soil are masked)")
    p.add_argument("--keep-vegetation", action="store_true",
                   help="model: score pixels that are green at both dates like the others. By default a model that "
                        "carries the stable-vegetation rule (the shipped one does) gives them probability 0: "
                        "fields and woods changing with the seasons are its commonest false alarms, and they are "
                        "not the urban change it learnt. Use it when vegetation change within green areas matters")
    p.add_argument("--keep-water", action="store_true",
                   help="model: score pixels that are open water at both dates like the others. By default a model "
                        "that carries the stable-water rule (the shipped one does) gives them probability 0: a river "
                        "or lake changing colour with its silt is a common false alarm and not urban change. Use it "
                        "when changes on water matter (needs bands B03 and B11)")
    add_reading_options(p)
    p.add_argument("--tile", type=int, default=256, help="tile side in pixels (memory grows with tile x width)")
    p.add_argument("--overlap", type=int, default=32, help="model, features: overlap of neighbouring tiles, blended")
    p.add_argument("--batch-size", type=int, default=8, help="model, features: tiles per forward pass")
    p.add_argument("--device", default="auto", help="model, features: auto, cpu, cuda or cuda:N")
    p.set_defaults(run=_run_detect)


def check_threshold(threshold: float | None, method: str) -> None:
    """Refuse thresholds no map can honour: a probability (``model``) outside [0, 1], a distance
    (``features``: 1 - cosine; ``cva``: a magnitude) below 0, or NaN/infinity for any method.

    Raises:
        ConfigError: naming the value and the allowed range.
    """
    import math

    from ..errors import ConfigError

    if threshold is None:
        return
    if method == "model" and not 0.0 <= threshold <= 1.0:  # also NaN
        raise ConfigError(f"--threshold {threshold} is out of range for --method model: it is a change probability; "
                          "use 0 to 1 (e.g. 0.5, or leave it out for the model's validated threshold)")
    if method != "model" and not (math.isfinite(threshold) and threshold >= 0.0):
        raise ConfigError(f"--threshold {threshold} is out of range for --method {method}: it is a distance; use 0 "
                          "or more (or leave it out for Otsu's threshold)")


def _run_detect(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..change.cva import detect_cva
    from ..change.default_model import change_model_dir
    from ..change.pair import check_pair_outputs, mask_clouds, open_pair
    from ..change.training import CHANGE_KIND
    from ..checkpoint import read_config
    from ..errors import ConfigError
    from ..io.bands import assumed_band_names, parse_band_list
    from ..io.clouds import DEFAULT_THRESHOLD, CloudOptions
    from ..io.normalization import BandStats

    if not 64 <= args.tile <= 8192:
        raise ConfigError(f"--tile {args.tile} is out of range; use 64 to 8192 (e.g. 256)")
    if not 0 <= args.overlap < args.tile:
        raise ConfigError(f"--overlap {args.overlap} is out of range; use 0 up to the tile size (e.g. 32; "
                          "more than half a tile is used as half)")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} is out of range; use 1 or more")
    method = args.method
    check_threshold(args.threshold, method)
    for cover in kept_covers(args):
        if method != "model":
            raise ConfigError(f"--keep-{cover} is only used with --method model (a model's stable-{cover} rule); "
                              f"leave it out for --method {method}")
    if args.cloud_threshold is not None and not args.mask_clouds:
        raise ConfigError(f"--cloud-threshold {args.cloud_threshold} is only used with --mask-clouds; add "
                          "--mask-clouds or leave it out")
    clouds = (CloudOptions(DEFAULT_THRESHOLD if args.cloud_threshold is None else args.cloud_threshold,
                           args.value_scale) if args.mask_clouds else None)
    model = change_model_dir(args.model) if method != "cva" else None
    config = read_config(model, CHANGE_KIND if method == "model" else None) if model is not None else None
    bands = parse_band_list(args.bands) if config is None else config["bands"]
    model_scale = BandStats.from_dict(config["normalization"]).value_scale if config is not None else None
    pair = open_pair(args.t1, args.t2, bands, assumed_band_names(args.assume_band_names), model_scale,
                     args.value_scale)
    logger.info("comparing %d bands: %s", len(pair.bands), ", ".join(pair.bands))
    with StopOnSignal() as stop:
        if clouds is not None:
            check_pair_outputs(pair, args.out, args.probability)  # a bad --out fails before the cloud pass
            pair = mask_clouds(pair, clouds, progress=reporter.progress, should_stop=stop)
        if model is not None:
            from ..change.detection import detect_features, detect_with_model

            options = {"keep": kept_covers(args)} if method == "model" else {}
            run = detect_with_model if method == "model" else detect_features
            result = run(pair, model, args.out, args.probability, tile=args.tile, overlap=args.overlap,
                         batch_size=args.batch_size, threshold=args.threshold, device_name=args.device,
                         progress=reporter.progress, should_stop=stop, **options)
        else:
            result = detect_cva(pair, args.out, args.probability, tile=args.tile, threshold=args.threshold,
                                progress=reporter.progress, should_stop=stop)
    logger.info("change mask %s (%.2f %% changed, threshold %.4g, %.2f Mpx/s)%s", result.change,
                100 * result.changed_fraction, result.threshold, result.megapixels_per_second,
                "; t2 was warped onto t1's grid" if result.warped else "")
    outputs = {"change": str(result.change), "method": method, **({"model": str(model)} if model else {}),
               "threshold": result.threshold, "changed_fraction": result.changed_fraction, "warped": result.warped}
    if result.score:
        outputs["probability"] = str(result.score)
    if pair.clouds is not None:
        outputs.update(pair.clouds.fractions(), cloud_threshold=pair.clouds.options.threshold)
    return outputs
