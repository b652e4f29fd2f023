"""``swimdiff threshold``: a change mask cut from a saved change probability at another threshold."""

from __future__ import annotations

import argparse
import logging

from ..events import Reporter
from .common import Formatter, StopOnSignal

logger = logging.getLogger("core.cli")


def add(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "threshold", formatter_class=Formatter,
        help="change mask of a saved change probability at a chosen threshold (no model run)",
        description="Cut a change mask from the change probability that 'swimdiff detect --probability' wrote,\n"
                    "at a threshold of your choice: change where the probability is above it. The mask is the\n"
                    "one 'detect' writes at that threshold (uint8: 0 no change, 1 change, 255 where the\n"
                    "probability is NaN; same grid, CRS and colour table), with the threshold and the\n"
                    "probability file in its tags. It is written strip by strip and appears only when complete.",
        epilog="example: swimdiff threshold --probability prob.tif --threshold 0.15 --out change_015.tif",
    )
    p.add_argument("--probability", required=True, help="1-band float GeoTIFF of change probability (0 to 1)")
    p.add_argument("--threshold", type=float, required=True,
                   help="change probability threshold, 0 to 1 (the shipped model's validated one is 0.3)")
    p.add_argument("--out", required=True, help="change mask GeoTIFF: 0 no change, 1 change, 255 nodata")
    p.set_defaults(run=_run_threshold)


def _run_threshold(args: argparse.Namespace, reporter: Reporter) -> dict:
    from ..change.threshold import METHOD, threshold_probability

    with StopOnSignal() as stop:
        result = threshold_probability(args.probability, args.threshold, args.out, progress=reporter.progress,
                                       should_stop=stop)
    return {"change": str(result.change), "probability": str(result.probability), "method": METHOD,
            "threshold": result.threshold, "changed_fraction": result.changed_fraction}
