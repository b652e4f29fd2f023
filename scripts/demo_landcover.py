"""`make demo-landcover`: train a land-cover classifier on real EuroSAT patches, then map a real scene.

1. ``swimdiff finetune-classify`` on the 100 EuroSAT RGB patches of ../shared/data (10 classes,
   8-bit JPG, 64 px), with a ``swimdiff pretrain`` encoder when ``--encoder`` is given.
2. An 8-bit RGB rendering of a real Sentinel-2 L2A scene (the Boadella reservoir, 2021-06-26), on
   the same scale as EuroSAT's JPGs: digital numbers divided by :data:`EUROSAT_RGB_SCALE`.
3. ``swimdiff classify`` on that rendering -> landcover.tif, then a preview (scene | land cover,
   with the legend).

A 100-patch training set is tiny (see docs/benchmarks.md): the map shows the path from labelled
patches to a georeferenced land-cover layer, not a production classifier.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402

from core.cli import main as swimdiff  # noqa: E402

#: EuroSAT's RGB JPGs are Sentinel-2 digital numbers divided by about this much (measured on
#: ../shared/data: the B04/B03/B02 means of the ms_6 AnnualCrop and Forest GeoTIFFs against the RGB
#: means of the rgb_100 JPGs of the same classes, 8.8-9.7).
EUROSAT_RGB_SCALE = 9.2
SCENE = Path("multitemporal") / "boadella_s2l2a_12dates" / "Boadella_2021-06-26.tif"
SCENE_RGB = (4, 3, 2)  # 1-based bands B04, B03, B02 of the 12-band (no B10) L2A stack


def run(args: list[str]) -> None:
    print("$ swimdiff " + " ".join(args), flush=True)
    if swimdiff(args) != 0:
        sys.exit(f"swimdiff {args[0]} failed (see the message above)")


def render_rgb(scene: Path, out: Path) -> Path:
    """An 8-bit R, G, B GeoTIFF of a Sentinel-2 stack on the EuroSAT JPG scale, georeferencing kept."""
    with rasterio.open(scene) as src:
        rgb = src.read(list(SCENE_RGB)).astype(np.float32)
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=3, dtype="uint8", crs=src.crs,
                       transform=src.transform, nodata=None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.clip(rgb / EUROSAT_RGB_SCALE, 0, 255).astype("uint8"))
        for band, name in enumerate(("B04", "B03", "B02"), 1):
            dst.set_band_description(band, name)
    return out


def save_preview(path: Path, rgb_tif: Path, landcover_tif: Path) -> None:
    """Scene | land cover side by side, the legend listing each class with its share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    with rasterio.open(rgb_tif) as src:
        rgb = src.read().transpose(1, 2, 0)
    with rasterio.open(landcover_tif) as src:
        ids = src.read(1)
        classes = json.loads(src.tags()["CLASS_NAMES"])
        colormap = src.colormap(1)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for value, color in colormap.items():
        palette[value] = color[:3]
    shares = np.bincount(ids[ids < len(classes)].ravel(), minlength=len(classes)) / max(1, (ids < len(classes)).sum())
    figure, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    axes[0].imshow(np.clip(rgb.astype(np.float32) * 1.8, 0, 255).astype(np.uint8))
    axes[0].set_title("Sentinel-2 L2A, Boadella 2021-06-26 (RGB)")
    axes[1].imshow(palette[ids])
    axes[1].set_title("swimdiff classify: land cover")
    for axis in axes:
        axis.set_axis_off()
    handles = [Patch(color=np.array(colormap[i][:3]) / 255, label=f"{name} {shares[i]:.0%}")
               for i, name in enumerate(classes)]
    figure.legend(handles=handles, loc="center right", fontsize=9, frameon=False)
    figure.subplots_adjust(left=0.01, right=0.8, wspace=0.04)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "runs" / "demo-landcover"))
    parser.add_argument("--encoder", default=None, help="a 'swimdiff pretrain' folder (default: random init)")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    patches, scene = data / "classification" / "eurosat_small" / "rgb_100", data / SCENE
    if not patches.is_dir() or not scene.is_file():
        sys.exit(f"{patches} or {scene} not found: this demo needs ../shared/data (see README.md)")
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model"
    if not (model / "config.json").exists():
        run(["finetune-classify", "--data", str(patches), "--out", str(model), "--epochs", str(args.epochs),
             *(["--encoder", args.encoder] if args.encoder else [])])
    rgb = render_rgb(scene, out / "boadella_rgb.tif")
    landcover = out / "landcover.tif"
    run(["classify", "--raster", str(rgb), "--model", str(model), "--out", str(landcover),
         "--probabilities", str(out / "probabilities.tif")])
    preview = out / "preview.png"
    save_preview(preview, rgb, landcover)
    accuracy = json.loads((model / "config.json").read_text())["metrics"].get("accuracy")
    print(f"\nClassifier: {model} (validation accuracy {accuracy:.2f} on 20 EuroSAT patches)")
    print(f"Land-cover map: {landcover}\nPreview: {preview}")
    print("\nOn your own data: swimdiff finetune-classify --data <class folders> --encoder <pretrain folder> "
          "--out model\n                  swimdiff classify --raster scene.tif --model model --out landcover.tif")
    return 0


if __name__ == "__main__":
    sys.exit(main())
