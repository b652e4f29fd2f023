"""Benchmark: streamed model detection on large 13-band rasters (``make bench-detect``).

For each size (default 2048 and 8192 px a side) it writes a synthetic two-date 13-band uint16
GeoTIFF pair (tiled, uncompressed), runs ``swimdiff detect --model`` in a fresh process, and
reports throughput (Mpx/s), peak resident memory of that process, and the model's achieved FLOP/s
as a fraction of the float32 matmul FLOP/s measured in the same run. The model is a randomly
initialised ResNet-18 Siamese U-Net: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch.utils.flop_counter import FlopCounterMode

from core.change.training import CHANGE_KIND
from core.checkpoint import save_model
from core.io.bands import SENTINEL2_BANDS
from core.models.siamese import SiameseUNet

REPO = Path(__file__).resolve().parents[1]


def write_pair(folder: Path, size: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    paths = []
    for date in ("t1", "t2"):
        path = folder / f"{date}_{size}.tif"
        profile = dict(driver="GTiff", width=size, height=size, count=13, dtype="uint16", crs="EPSG:32631",
                       transform=from_origin(500000, 4600000, 10, 10), tiled=True, blockxsize=256, blockysize=256)
        with rasterio.open(path, "w", **profile) as ds:
            for i, band in enumerate(SENTINEL2_BANDS, 1):
                ds.set_band_description(i, band)
            block = rng.integers(500, 3000, size=(13, 256, size), dtype=np.uint16)
            for top in range(0, size, 256):
                ds.write(block[:, : min(256, size - top)], window=Window(0, top, size, min(256, size - top)))
        paths.append(path)
    return paths[0], paths[1]


def make_model(folder: Path) -> Path:
    torch.manual_seed(0)
    model = SiameseUNet("resnet18", 13)
    architecture = {"arch": "resnet18", "in_chans": 13, "decoder_channels": [128, 64, 48, 32]}
    save_model(folder / "model", model.state_dict(), {
        "kind": CHANGE_KIND, "architecture": architecture,
        "bands": list(SENTINEL2_BANDS), "normalization": {"bands": list(SENTINEL2_BANDS), "mean": [1750.0] * 13,
                                                          "std": [720.0] * 13},
        "patch_size": 256, "threshold": 0.5, "metrics": {}, "provenance": {"note": "random weights for benchmarking"}})
    return folder / "model"


def matmul_flops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    return 10 * 2 * 2048**3 / (time.perf_counter() - start)


def model_flops_per_pixel(tile: int) -> float:
    model = SiameseUNet("resnet18", 13).eval()
    x = torch.randn(1, 13, tile, tile)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, x)
    return counter.get_total_flops() / tile**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2048,8192")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    peak_flops = matmul_flops()
    per_pixel = model_flops_per_pixel(args.tile)
    stride = args.tile - args.overlap
    print(f"threads={torch.get_num_threads()} matmul {peak_flops / 1e9:.1f} GFLOP/s; model "
          f"{per_pixel / 1e3:.1f} kFLOP per tile pixel; tile {args.tile}, overlap {args.overlap}")
    print("| raster | seconds | Mpx/s | model GFLOP/s | share of matmul FLOP/s | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=REPO / "runs" if (REPO / "runs").is_dir() else None) as tmp:
        folder = Path(tmp)
        model = make_model(folder)
        for size in (int(s) for s in args.sizes.split(",")):
            t1, t2 = write_pair(folder, size)
            command = [sys.executable, "-c", (
                "import json, resource, sys, time; from core.cli import main; t = time.perf_counter(); "
                "code = main(sys.argv[1:]); print(json.dumps({'code': code, 'seconds': time.perf_counter() - t, "
                "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"),
                "detect", "--t1", str(t1), "--t2", str(t2), "--model", str(model), "--out",
                str(folder / f"change_{size}.tif"), "--tile", str(args.tile), "--overlap", str(args.overlap),
                "--batch-size", str(args.batch_size)]
            run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            stats = json.loads(run.stdout.strip().splitlines()[-1])
            if stats["code"] != 0:
                raise SystemExit(run.stderr[-2000:])
            tiles_per_side = max(1, int(np.ceil((size - args.tile) / stride)) + 1)
            flops = per_pixel * (tiles_per_side * args.tile) ** 2
            achieved = flops / stats["seconds"]
            print(f"| {size}x{size}x13 | {stats['seconds']:.1f} | {size * size / 1e6 / stats['seconds']:.2f} | "
                  f"{achieved / 1e9:.1f} | {achieved / peak_flops:.0%} | {stats['rss_mb']:.0f} |")
            for path in (t1, t2):
                path.unlink()


if __name__ == "__main__":
    main()
