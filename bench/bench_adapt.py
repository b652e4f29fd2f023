"""make bench-adapt: does adapting the shipped change model to drawn polygons help on the rest of the city?

For each labelled OSCD city: the top half of its change label becomes change 1 / no-change 0 polygons (what an
analyst would draw, only far more of it), ``swimdiff adapt`` fine-tunes the shipped model on them, and the
bottom half — which no polygon touches — is scored by the adapted model and, zero-shot, by the shipped model.
The shipped model trained on 8 of these cities (all but mumbai and nantes): for those the zero-shot column
is not a held-out score. Counts are pooled over cities for the headline F1.

    .venv/bin/python bench/bench_adapt.py --data ../shared/data [--cities nantes,mumbai] [--steps 120]
        [--start shipped|encoder|random|cv] [--encoder runs/pretrain-1500] [--cv runs/cv/default]

``--start`` compares starting points at the same budget: the shipped change model (default), a pre-trained
encoder with a new decoder (``--encoder``), the same network from random weights (``random``: the encoder
folder's bands and normalisation, fresh weights), or, fairest for all 10 cities, the leave-two-cities-out
model of ``make bench-cv`` that never saw the city (``cv``; zero-shot is then that model too).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import shapes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core.change.adapt as adapting  # noqa: E402
from bench.bench_cv import FOLDS  # noqa: E402
from core.change.adapt import ADAPT_TRAIN, LabelledPair, adapt_change_model  # noqa: E402
from core.change.default_model import DEFAULT_CHANGE_MODEL  # noqa: E402
from core.change.detection import detect_with_model  # noqa: E402
from core.change.metrics import ChangeCounts, count_changes  # noqa: E402
from core.change.oscd import oscd_cities  # noqa: E402
from core.change.pair import open_pair  # noqa: E402
from core.change.stable_cover import VEGETATION, WATER  # noqa: E402
from core.io.normalization import BandStats  # noqa: E402

SHIPPED_TEST_CITIES = ("mumbai", "nantes")


def write_label_polygons(drawn: np.ndarray, raster: Path, out: Path) -> None:
    """Write the regions of ``drawn`` (1 change, 0 no change, 255 none) as polygons with an integer field
    ``change``, in ``raster``'s CRS, to the GeoPackage ``out`` (what QGIS would hand over)."""
    from osgeo import ogr, osr

    with rasterio.open(raster) as ds:
        transform, crs = ds.transform, ds.crs
    srs = osr.SpatialReference()
    srs.ImportFromWkt(crs.to_wkt())
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(out))
    layer = source.CreateLayer("labels", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("change", ogr.OFTInteger))
    for geometry, value in shapes(drawn, mask=drawn != 255, transform=transform):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("change", int(value))
        feature.SetGeometry(ogr.CreateGeometryFromJson(json.dumps(geometry)))
        layer.CreateFeature(feature)
    source = None  # closes the GeoPackage


def top_half_polygons(label_path: Path, t1_band: Path, out: Path) -> tuple[np.ndarray, int]:
    """Write the top half of a city's change label as change 1/0 polygons (GeoPackage on t1's CRS).

    Returns:
        The whole label as 0/1 (H, W), and the first row of the bottom half.
    """
    with rasterio.open(label_path) as ds:
        truth = (ds.read(1) == 2).astype(np.uint8)  # OSCD: 1 no change, 2 change
    half = truth.shape[0] // 2
    top = truth.copy()
    top[half:] = 255
    write_label_polygons(top, t1_band, out)
    return truth, half


def bottom_half_counts(model: Path, t1: Path, t2: Path, truth: np.ndarray, half: int, out: Path) -> ChangeCounts:
    config = json.loads((model / "config.json").read_text())
    pair = open_pair(t1, t2, config["bands"], (), BandStats.from_dict(config["normalization"]).value_scale)
    detect_with_model(pair, model, out)
    with rasterio.open(out) as ds:
        mask = ds.read(1)
    return count_changes(mask[half:] == 1, truth[half:])


def start_model(city: str, args: argparse.Namespace, scratch: Path, rules: dict[str, float] | None = None
                ) -> Path | None:
    """The change model adapting starts from: None (the shipped one, or a new decoder on ``--encoder``), or with
    ``--start cv`` the fold model that held ``city`` out — with ``rules`` (config key -> cut, see
    :func:`stable_rules`) a copy of it that carries those stable-cover rules (:mod:`core.change.stable_cover`)."""
    if args.start != "cv":
        return None
    fold = next(i for i, cities in enumerate(FOLDS) if city in cities)
    model = Path(args.cv) / f"fold{fold}-s{args.seed}"
    if not rules:
        return model
    ruled = scratch / "start"
    shutil.copytree(model, ruled, ignore=shutil.ignore_patterns("prob-*.npy", "pseudo-*"))
    config = json.loads((ruled / "config.json").read_text())
    (ruled / "config.json").write_text(json.dumps({**config, **rules}))
    return ruled


def stable_rules(args: argparse.Namespace) -> dict[str, float]:
    """``--vegetation`` and ``--water`` as config keys -> cuts (the ones given)."""
    return {cover.config_key: cut for cover, cut in ((VEGETATION, args.vegetation), (WATER, args.water))
            if cut is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--cities", default="", help="comma-separated (default: all labelled cities)")
    parser.add_argument("--steps", type=int, default=ADAPT_TRAIN.steps)
    parser.add_argument("--start", choices=("shipped", "encoder", "random", "cv"), default="shipped")
    parser.add_argument("--encoder", default="runs/pretrain-1500", help="--start encoder/random: the encoder folder")
    parser.add_argument("--cv", default="runs/cv/default", help="--start cv: the folder of bench_cv's fold models")
    parser.add_argument("--seed", type=int, default=0, help="fold models' seed (--start cv)")
    parser.add_argument("--vegetation", type=float, default=None, metavar="CUT",
                        help="--start cv: give the fold models the stable-vegetation rule at this NDVI cut (as the "
                             "shipped model has it; bench_cv chose 0.15 out of fold)")
    parser.add_argument("--water", type=float, default=None, metavar="CUT",
                        help="--start cv: give the fold models the stable-water rule at this MNDWI cut")
    args = parser.parse_args()
    if args.start == "random":  # the encoder folder's network, bands and normalisation, without its weights
        pretrained = adapting.encoder_network
        adapting.encoder_network = lambda arch, chans, weights, folder: pretrained(arch, chans, None, folder)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.data) / "oscd"
    cities = oscd_cities(root, [c for c in args.cities.split(",") if c] or None)
    rows, pooled = [], {"shipped": ChangeCounts(), "adapted": ChangeCounts()}
    with tempfile.TemporaryDirectory() as scratch:
        for city in cities:
            folder = Path(scratch) / city.name
            folder.mkdir()
            t1, t2 = city.t1, city.t2
            assert city.label is not None  # oscd_cities gives labelled cities
            truth, half = top_half_polygons(city.label, next(t1.glob("*_B02.tif")), folder / "top.gpkg")
            start = start_model(city.name, args, folder, stable_rules(args))
            started = time.perf_counter()
            result = adapt_change_model([LabelledPair(str(t1), str(t2), str(folder / "top.gpkg"))], folder / "model",
                                        model_dir=start, train=replace(ADAPT_TRAIN, steps=args.steps),
                                        encoder_dir=args.encoder if args.start in ("encoder", "random") else None)
            seconds = time.perf_counter() - started
            zero_shot = start or DEFAULT_CHANGE_MODEL
            counts = {"shipped": bottom_half_counts(zero_shot, t1, t2, truth, half, folder / "s.tif"),
                      "adapted": bottom_half_counts(folder / "model", t1, t2, truth, half, folder / "a.tif")}
            for name, c in counts.items():
                pooled[name] = pooled[name] + c
            seen = "held out" if city.name in SHIPPED_TEST_CITIES or args.start == "cv" else "trained on"
            rows.append(f"| {city.name} | {seen} | {counts['shipped'].f1:.3f} | {counts['adapted'].f1:.3f} | "
                        f"{result.best_step} | {result.threshold:.2f} | {seconds:.0f} |")
            print(rows[-1], flush=True)
    print(f"\nstart: {args.start}" + (f" ({args.encoder})" if args.start in ("encoder", "random") else "")
          + (f", stable-vegetation rule at NDVI {args.vegetation}" if args.vegetation is not None else "")
          + (f", stable-water rule at MNDWI {args.water}" if args.water is not None else ""))
    print("\n| city | zero-shot model on it | bottom-half F1 zero-shot | adapted | best step | threshold | adapt s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"| **pooled** | | **{pooled['shipped'].f1:.3f}** | **{pooled['adapted'].f1:.3f}** | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
