"""A picture of what the stable-cover rules do on one city, from the cross-validation's out-of-fold predictions.

t1 | t2 | errors with the stable-vegetation rule alone | errors with both rules (vegetation and water): the fold
model that never saw the city, each panel at the cuts and threshold its fold chose on the other folds' cities
(``bench_cv.py``'s cv.json). Hits red, false alarms orange, misses cyan. Trains nothing.

    .venv/bin/python bench/cv_figure.py --recipe match-self-train --seed 0 --city bordeaux \
        --out docs/images/cv-bordeaux-water.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_cv import FOLDS  # noqa: E402
from core.change.metrics import count_changes  # noqa: E402
from core.change.oscd import oscd_cities, read_change_mask  # noqa: E402
from core.change.patches import read_city_pair  # noqa: E402
from core.change.report import rgb_preview  # noqa: E402
from core.change.stable_cover import COVERS, stable_cover  # noqa: E402
from core.checkpoint import save_png  # noqa: E402

BANDS = ["B02", "B03", "B04", "B08", "B11"]
COLOURS = {"hit": (0.9, 0.1, 0.1), "false alarm": (1.0, 0.65, 0.0), "miss": (0.0, 0.85, 0.95)}


def errors_rgb(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(H, W, 3): hits, false alarms and misses in their colours on black; unlabelled pixels grey."""
    out = np.zeros((*label.shape, 3), dtype=np.float32)
    out[label > 1] = 0.3
    for name, where in (("hit", prediction & (label == 1)), ("false alarm", prediction & (label == 0)),
                        ("miss", ~prediction & (label == 1))):
        out[where] = COLOURS[name]
    return out


def ruled_prediction(prob: np.ndarray, x1: np.ndarray, x2: np.ndarray, rule: list) -> np.ndarray:
    """``prob`` with the fold's cuts (None: no rule), above the fold's threshold."""
    config = {cover.config_key: cut for cover, cut in zip(COVERS, rule[:-1]) if cut is not None}
    stable = stable_cover(config, BANDS)
    return (stable.apply(prob, x1, x2) if stable is not None else prob) > rule[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--cv", default=str(REPO / "runs" / "cv"), help="bench_cv.py's folder (with cv.json)")
    parser.add_argument("--recipe", default="match-self-train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--city", default="bordeaux")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    summary = json.loads((Path(args.cv) / "cv.json").read_text())["recipes"].get(args.recipe)
    if summary is None or args.seed not in summary["seeds"]:
        sys.exit(f"no recipe '{args.recipe}' with seed {args.seed} in {args.cv}/cv.json; run bench_cv.py for it")
    fold = next(i for i, cities in enumerate(FOLDS) if args.city in cities)
    seed = summary["seeds"].index(args.seed)
    prob = np.load(Path(args.cv) / args.recipe / f"fold{fold}-s{args.seed}" / f"prob-{args.city}.npy")
    city = oscd_cities(Path(args.data) / "oscd", [args.city])[0]
    x1, x2, valid = read_city_pair(city, BANDS)
    label = read_change_mask(city, *valid.shape)
    label[~valid] = 255
    panels = [("t1", rgb_preview(x1, BANDS)), ("t2", rgb_preview(x2, BANDS))]
    for name, key in (("vegetation rule", "oof_vegetation_rules"), ("vegetation and water rules", "oof_cover_rules")):
        rule = summary[key][seed][fold]
        prediction = ruled_prediction(prob.astype(np.float32), x1, x2, rule)
        f1 = count_changes(prediction, label).f1
        cuts = ", ".join(f"{c.index} {cut:g}" for c, cut in zip(COVERS, rule[:-1]) if cut is not None)
        panels.append((f"{name} (F1 {f1:.2f})\n{cuts}, threshold {rule[-1]:g}", errors_rgb(prediction, label)))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 4.2), dpi=110)
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{args.city}, scored by the fold model that never saw it ({args.recipe}, seed {args.seed}): "
                 "hits red, false alarms orange, misses cyan", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    save_png(Path(args.out), fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
