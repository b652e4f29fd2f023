"""``swimdiff detect``: a change map of two rasters."""

from __future__ import annotations

import argparse
import logging

from ..events import Reporter
from .common import Formatter, StopOnSignal

logger = logging.getLogger("core.cli")


def add(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "detect", formatter_class=Formatter,
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
    from ..data.bands import parse_band_list
    from ..errors import ConfigError
    from ..infer import detect_cva, open_pair

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
