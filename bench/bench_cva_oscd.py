"""Baseline: classic change vector analysis + Otsu on the labelled OSCD cities.

Every date is read onto the B02 grid of ``imgs_1`` (13 bands, t2 warped), each band is
standardised per date, the change magnitude is the length of the difference vector, and Otsu's
threshold is chosen per city. Scores are pooled over all labelled pixels of all cities.
Run: ``.venv/bin/python bench/bench_cva_oscd.py [--data ../shared/data/oscd]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.data.bands import SENTINEL2_BANDS
from core.data.oscd import OscdCity, oscd_cities, read_change_mask
from core.data.raster import StackReader
from core.evaluate import ChangeCounts, count_changes
from core.unsupervised import cva_change


def evaluate_city(city: OscdCity) -> ChangeCounts:
    t1, t2 = city.dates()
    grid = t1.grid
    x1, v1 = StackReader(t1, grid, SENTINEL2_BANDS).read_all()
    x2, v2 = StackReader(t2, grid, SENTINEL2_BANDS).read_all()
    valid = v1 & v2
    magnitude, threshold = cva_change(x1, x2, valid)
    label = read_change_mask(city, grid.height, grid.width)
    label[~valid] = 255
    return count_changes(magnitude > threshold, label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd"))
    args = parser.parse_args()
    started = time.perf_counter()
    total = ChangeCounts()
    print("| city | F1 | precision | recall |")
    print("|---|---:|---:|---:|")
    for city in oscd_cities(args.data):
        counts = evaluate_city(city)
        total = total + counts
        print(f"| {city.name} | {counts.f1:.3f} | {counts.precision:.3f} | {counts.recall:.3f} |")
    print(f"| **pooled** | **{total.f1:.3f}** | {total.precision:.3f} | {total.recall:.3f} |")
    print(f"IoU {total.iou:.3f}, changed pixels {total.scores()['changed_fraction']:.2%}, "
          f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
