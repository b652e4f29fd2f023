"""`make demo-adapt`: adapt the shipped change model to one place from polygons, then map the rest of it.

On a real OSCD city (mumbai by default), the top half of the city's change label
stands in for the polygons an analyst would draw (change 1 / no change 0, a GeoPackage as QGIS writes it).
``swimdiff adapt`` fine-tunes the shipped model on them; ``swimdiff detect`` then maps the whole pair with the
adapted model and with the shipped one, and both are scored on the bottom half, which no polygon touches.
The shipped model trained on all 10 labelled cities, mumbai included, so the demo shows the workflow, not a fair
gain; ``--model`` starts from another change model (e.g. a cross-validation fold model that never saw the city,
as ``bench/bench_adapt.py --start cv`` does for the fair figures in docs/benchmarks.md).
Without ../shared/data it adapts on a synthetic pair with a planted change so the command still shows the path.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402

from bench.bench_adapt import top_half_polygons, write_label_polygons  # noqa: E402
from core.change.default_model import DEFAULT_CHANGE_MODEL  # noqa: E402
from core.change.metrics import count_changes  # noqa: E402
from core.change.pair import open_pair  # noqa: E402
from core.change.report import rgb_preview, save_comparison  # noqa: E402
from scripts.demo import synthetic_pair  # noqa: E402
from scripts.make_default_model import run  # noqa: E402


def synthetic_labels(t1: Path, out: Path) -> tuple[np.ndarray, int]:
    """The planted block of :func:`scripts.demo.synthetic_pair` as truth; its top rows and two no-change areas
    above the middle as polygons."""
    truth = np.zeros((256, 256), dtype=np.uint8)
    truth[100:140, 80:140] = 1
    half = 128
    drawn = np.full_like(truth, 255)
    drawn[100:half, 80:140] = 1
    drawn[10:60, 10:120] = 0
    drawn[20:90, 160:240] = 0
    write_label_polygons(drawn, t1, out)
    return truth, half


def bottom_half_f1(change: Path, truth: np.ndarray, half: int) -> tuple[np.ndarray, float]:
    with rasterio.open(change) as ds:
        mask = ds.read(1)
    return mask, count_changes(mask[half:] == 1, truth[half:].copy()).f1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--city", default="mumbai", help="labelled OSCD city")
    parser.add_argument("--model", default=None, help="change model to start from (default: the shipped one)")
    parser.add_argument("--out", default=str(REPO / "runs" / "demo-adapt"))
    parser.add_argument("--steps", default="120")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    city = Path(args.data) / "oscd" / "images" / args.city
    labels = out / "drawn.gpkg"
    labels.unlink(missing_ok=True)
    if (city / "imgs_1").is_dir():
        t1, t2 = city / "imgs_1", city / "imgs_2"
        label = next((Path(args.data) / "oscd" / "labels" / args.city / "cm").glob("*.tif"))
        truth, half = top_half_polygons(label, next(t1.glob("*_B02.tif")), labels)
        print(f"Adapting to {args.city}: the top half of its OSCD label as drawn polygons ({labels})")
    else:
        t1, t2 = synthetic_pair(Path(tempfile.mkdtemp(prefix="swimdiff-demo-adapt-")))
        truth, half = synthetic_labels(t1, labels)
        print(f"{city} not found: a synthetic pair with a planted change and three drawn polygons instead")
    model = out / "adapted-model"
    if (model / "config.json").exists():
        for file in model.iterdir():
            file.unlink()
    start = ["--model", args.model] if args.model else []
    run(["adapt", "--t1", str(t1), "--t2", str(t2), "--labels", str(labels), "--out", str(model),
         "--steps", args.steps, *start])
    maps = {}
    for name, extra in (("shipped", start), ("adapted", ["--model", str(model)])):
        change = out / f"change-{name}.tif"
        run(["detect", "--t1", str(t1), "--t2", str(t2), "--out", str(change), *extra])
        maps[name] = bottom_half_f1(change, truth, half)
    starting = "starting" if args.model else "shipped"
    print(f"\nBottom half (no polygon there): F1 {maps['adapted'][1]:.3f} adapted, {maps['shipped'][1]:.3f} with the "
          f"{starting} model")
    trained = json.loads(((Path(args.model) if args.model else DEFAULT_CHANGE_MODEL) / "config.json").read_text())
    if t1.is_dir() and args.city in trained["provenance"].get("train_cities", []):
        print(f"  ({args.city} is a training city of the {starting} model, so it gains little here; the fair "
              "figures (a start that never saw the city) are in docs/benchmarks.md, bench/bench_adapt.py --start cv)")
    rgb = ["B02", "B03", "B04"]
    (x1, _), (x2, _) = (reader.read_all() for reader in open_pair(t1, t2, rgb).readers())
    label = truth.copy()
    label[:half] = 255
    preview = out / "preview.png"
    save_comparison(preview, f"{args.city if t1.is_dir() else 'synthetic'}: adapted, bottom-half F1 "
                             f"{maps['adapted'][1]:.3f} ({starting} {maps['shipped'][1]:.3f})",
                    rgb_preview(x1, rgb), rgb_preview(x2, rgb), label,
                    maps["adapted"][0])
    print(f"Adapted model:  {model}\nChange maps:    {out}/change-adapted.tif, {out}/change-shipped.tif\n"
          f"Preview:        {preview}")
    print("\nOn your own area: draw change (1) / no-change (0) polygons in QGIS (SwiMDiff panel, 'Adapt to this "
          "area'), or:\n  .venv/bin/swimdiff adapt --t1 before.tif --t2 after.tif --labels drawn.gpkg --out my-model\n"
          "  .venv/bin/swimdiff detect --t1 before.tif --t2 after.tif --model my-model --out change.tif")
    return 0


if __name__ == "__main__":
    sys.exit(main())
