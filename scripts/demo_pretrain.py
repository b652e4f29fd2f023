"""`make demo-pretrain`: a short SwiMDiff pre-training on real Sentinel-2 scenes, then where the results are.

Uses the unlabelled OSCD city pairs plus the Boadella and Jaca time series from ../shared/data
when they are there (12 bands shared by L1C and L2A: B01..B12 without B10); otherwise it makes a
small synthetic scene so the command still shows the whole path.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from core.cli import main as swimdiff  # noqa: E402
from core.history import read_csv  # noqa: E402
from scripts.scenes import unlabelled_scenes  # noqa: E402


def synthetic_scene() -> list[str]:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    folder = Path(tempfile.mkdtemp(prefix="swimdiff-demo-"))
    rng = np.random.default_rng(0)
    base = np.kron(rng.normal(size=(12, 33, 33)), np.ones((8, 8)))[:, :256, :256]
    for i in range(3):
        data = (1500 + 400 * base + rng.normal(scale=50, size=base.shape)).astype("uint16")
        with rasterio.open(folder / f"synthetic_{i}.tif", "w", driver="GTiff", width=256, height=256, count=12,
                           dtype="uint16", crs="EPSG:32631", transform=from_origin(500000, 4600000, 10, 10)) as ds:
            ds.write(data)
    return [str(folder)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "runs" / "demo-pretrain"))
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    data = Path(args.data)
    if (data / "oscd" / "unlabelled_cities.txt").is_file():
        scenes = unlabelled_scenes(data)
        print(f"Pre-training on {len(scenes)} real Sentinel-2 scenes from {data}")
    else:
        scenes = synthetic_scene()
        print(f"{data} not found: pre-training on a synthetic scene instead")
    code = swimdiff(["pretrain", "--data", *scenes, "--assume-band-names", "l2a", "--out", args.out,
                     "--steps", str(args.steps), "--batch-size", "32", "--queue-size", "1024", "--patch-size", "64",
                     "--log-every", "5",
                     "--checkpoint-every", "50", "--overwrite"])
    if code != 0:
        return code
    rows = read_csv(Path(args.out) / "history.csv")
    first, last = rows[0], rows[-1]
    print("\nSwiMDiff pre-training finished.")
    print(f"  contrastive {first['loss_contrastive']:.3f} (step {first['step']:.0f}) -> {last['loss_contrastive']:.3f} "
          f"(step {last['step']:.0f}); a uniform guess over the filled queue scores {np.log1p(last['negatives']):.3f}")
    print(f"  diffusion   {first['loss_diffusion']:.3f} -> {last['loss_diffusion']:.3f}  (1.0 = predicting no noise)")
    print(f"  accuracy    {first['accuracy']:.2f} -> {last['accuracy']:.2f}  (own other-date view ranked first "
          f"among 32; chance 0.03)")
    print(f"  model       {args.out}/model.safetensors + config.json")
    print(f"  loss plot   {args.out}/loss.png")
    print("\nOn your own rasters:")
    print("  .venv/bin/swimdiff pretrain --data /path/to/dated_geotiffs_folder --out runs/mine --steps 1000")
    print("  (.venv/bin/swimdiff pretrain --help lists every option and its default)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
