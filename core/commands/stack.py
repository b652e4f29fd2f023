"""``swimdiff stack``: one named raster on the 10 m grid from Sentinel-2 band files."""

from __future__ import annotations

import argparse
import logging

from ..events import Reporter
from .common import Formatter, StopOnSignal

logger = logging.getLogger("core.cli")


def add(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "stack", formatter_class=Formatter,
        help="one named multi-band VRT on the 10 m grid from Sentinel-2 band files or a .SAFE product",
        description="Stack the single-band files of one Sentinel-2 acquisition into one raster whose bands are\n"
                    "named B01..B12, B8A (in sensor order), on the grid of the finest band. --source is a folder\n"
                    "of *_Bxx.tif / *_Bxx.jp2 files (OSCD layout, a product's IMG_DATA) or an unzipped .SAFE\n"
                    "product (L1C, or L2A taking each band from R10m, R20m or R60m at its finest resolution).\n"
                    "20 and 60 m bands are interpolated bilinearly, as 'swimdiff detect' does for band folders;\n"
                    "the VRT refers to the band files by absolute path and keeps their nodata. A plain\n"
                    "'gdalbuildvrt -separate' averages the pixel sizes (about 30 m) and names no band.",
        epilog="example: swimdiff stack --source ../shared/data/oscd/images/bercy/imgs_1 --out bercy_1.vrt",
    )
    p.add_argument("--source", required=True, help="folder of *_Bxx band files, IMG_DATA folder or .SAFE folder")
    p.add_argument("--out", required=True,
                   help="the stack: .vrt (refers to the band files), or .tif (a tiled, compressed copy)")
    p.add_argument("--bands", default="", help="comma-separated bands to keep, e.g. B02,B03,B04,B08 (default: all)")
    p.add_argument("--resolution", type=float, default=10.0,
                   help="grid pixel size in metres, 10, 20 or 60: finer bands are averaged onto a 20 or 60 m grid")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(run=_run_stack)


def _run_stack(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..io.bands import parse_band_list
    from ..io.stack import build_stack

    bands = parse_band_list(args.bands) or None
    with StopOnSignal() as stop:
        result = build_stack(args.source, args.out, bands=bands, resolution=args.resolution,
                             overwrite=args.overwrite, progress=reporter.progress, should_stop=stop)
    return {"stack": str(result.path), "bands": list(result.bands), "kind": result.kind, "crs": result.crs,
            "width": result.width, "height": result.height, "resampled": result.resampled}
