"""`make demo`: the main job — a georeferenced change map of two real Sentinel-2 dates.

Runs ``swimdiff detect`` with the default model (resources/models/oscd-change) on a labelled OSCD city
(nantes by default), then scores the written GeoTIFF against the city's change label and draws
t1 | t2 | label | prediction. The default model trained on all 10 labelled cities, so that score is
in-sample; the demo prints the city's cross-validated score beside it (a fold model that never saw it). Without
../shared/data it makes a synthetic pair with a planted change so the command still shows the path.
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

from core.change.default_model import DEFAULT_CHANGE_MODEL  # noqa: E402
from core.change.metrics import count_changes  # noqa: E402
from core.change.oscd import oscd_cities, read_change_mask  # noqa: E402
from core.change.patches import read_city_pair  # noqa: E402
from core.change.report import rgb_preview, save_comparison  # noqa: E402
from core.cli import main as swimdiff  # noqa: E402

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def synthetic_pair(folder: Path) -> tuple[Path, Path]:
    """Two 12-band dates (256 px, UTM) with a bright 40 x 60 px block appearing in t2."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    base = np.kron(rng.normal(size=(12, 33, 33)), np.ones((8, 8)))[:, :256, :256]
    paths = []
    for i in range(2):
        data = 1500 + 400 * base + rng.normal(scale=40, size=base.shape)
        if i == 1:
            data[:, 100:140, 80:140] += 2500
        path = folder / f"synthetic_t{i + 1}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=12, dtype="uint16",
                           crs="EPSG:32631", transform=from_origin(500000, 4600000, 10, 10), nodata=0) as ds:
            ds.write(data.clip(1, 65535).astype("uint16"))
            for band, name in enumerate(S2_BANDS, 1):
                ds.set_band_description(band, name)
        paths.append(path)
    return paths[0], paths[1]


def detect(t1: Path, t2: Path, out: Path) -> tuple[Path, Path]:
    change, probability = out / "change.tif", out / "probability.tif"
    args = ["detect", "--t1", str(t1), "--t2", str(t2), "--out", str(change), "--probability", str(probability)]
    print("$ swimdiff " + " ".join(args), flush=True)
    if swimdiff(args) != 0:
        sys.exit("detection failed (see the message above)")
    return change, probability


def held_out_note(city: str, model: dict) -> str:
    """What the score above means: in-sample when the city trained the model, with its cross-validated figure."""
    metrics, trained = model["metrics"], model["provenance"]["train_cities"]
    if city not in trained:
        return f"  ({city} is not one of the default model's training cities ({', '.join(trained)}): held out)"
    note = f"  ({city} is one of the default model's {len(trained)} training cities, so this score is in-sample."
    if city in metrics.get("cv_per_city", {}):
        note += (f"\n   On a city it never saw, expect the cross-validated figure: F1 "
                 f"{metrics['cv_per_city'][city]:.3f} for {city} from the fold models that held it out "
                 f"(mean over {len(metrics.get('cv_seeds', [0]))} seed(s)), "
                 f"{metrics['cv_f1']:.3f} pooled over all "
                 f"{len(metrics['cv_per_city'])} labelled cities; see docs/benchmarks.md")
    return note + ")"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--city", default="nantes", help="labelled OSCD city to map")
    parser.add_argument("--out", default=str(REPO / "runs" / "demo"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    oscd = Path(args.data) / "oscd"
    real = (oscd / "images" / args.city / "imgs_1").is_dir()
    if real:
        city = oscd_cities(oscd, [args.city])[0]
        t1, t2 = oscd / "images" / args.city / "imgs_1", oscd / "images" / args.city / "imgs_2"
        print(f"Change detection on the real Sentinel-2 pair of {args.city} ({city.dates()[0].source})")
    else:
        t1, t2 = synthetic_pair(Path(tempfile.mkdtemp(prefix="swimdiff-demo-")))
        print(f"{oscd} not found: a synthetic pair with a planted change instead")
    change, probability = detect(t1, t2, out)
    with rasterio.open(change) as ds:
        mask, crs, size, threshold = ds.read(1), ds.crs, (ds.width, ds.height), ds.tags()["threshold"]
    print(f"\nChange map written: {change}  ({size[0]} x {size[1]} px, {crs}, "
          f"{(mask == 1).sum() / max(1, (mask != 255).sum()):.2%} of valid pixels changed, threshold {threshold})")
    print(f"Probability:        {probability}")
    model = json.loads((DEFAULT_CHANGE_MODEL / "config.json").read_text())
    bands = model["bands"]
    if real:
        x1, x2, valid = read_city_pair(city, bands)
        label = read_change_mask(city, *valid.shape)
        label[~valid] = 255
        scores = count_changes(mask == 1, label).scores()
        seen = " (a training city: in-sample)" if args.city in model["provenance"]["train_cities"] else ""
        title = (f"{args.city}{seen}: F1 {scores['f1']:.3f} (precision {scores['precision']:.3f}, "
                 f"recall {scores['recall']:.3f})")
        print(f"Against the OSCD label: F1 {scores['f1']:.3f}, precision {scores['precision']:.3f}, "
              f"recall {scores['recall']:.3f}, IoU {scores['iou']:.3f}")
        print(held_out_note(args.city, model))
    else:
        with rasterio.open(t1) as a, rasterio.open(t2) as b:
            x1, x2 = a.read().astype(np.float32), b.read().astype(np.float32)
        label, title = None, "synthetic pair"
    preview = out / "preview.png"
    save_comparison(preview, title, rgb_preview(x1, bands), rgb_preview(x2, bands), label, mask)
    print(f"Preview:            {preview}")
    print("\nOn your own rasters (two dates of one place: multi-band GeoTIFFs with band descriptions B01..B12,")
    print("or folders of *_Bxx.tif files; t2 is warped onto t1's grid when they differ):")
    print("  .venv/bin/swimdiff detect --t1 before.tif --t2 after.tif --out change.tif --probability prob.tif")
    print("  .venv/bin/swimdiff detect --help    (methods model | features | cva, tiles, device)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
