"""How far can a better threshold or an ensemble take change models on unseen cities? A diagnostic.

``python bench/threshold_ceiling.py MODEL_DIR [MODEL_DIR ...] [--data OSCD] [--cities mumbai,nantes]``

For every change model: the pooled F1 at the model's own (validated) threshold, and at the threshold
that is best *on the scored cities themselves*; then the same for the models' average probability.
The best-threshold figures are upper bounds that use the labels being scored — never report them as
a model's score. They answer one question: is the threshold or the model the limit?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ablation import TEST_CITIES  # noqa: E402
from core.change.oscd import oscd_cities  # noqa: E402
from core.change.patches import load_city  # noqa: E402
from core.change.predict import predict_probability  # noqa: E402
from core.change.training import best_threshold, load_change_model, pooled_counts  # noqa: E402
from core.io.normalization import BandStats  # noqa: E402


def city_probabilities(model_dir: Path, data: Path, cities: list[str]) -> tuple[list[np.ndarray], list[np.ndarray],
                                                                                  float]:
    """One model's change probabilities and the labels of the cities, and the model's threshold."""
    device = torch.device("cpu")
    model, config = load_change_model(model_dir, device)
    stats = BandStats.from_dict(config["normalization"])
    stacks = [load_city(c, config["bands"], stats) for c in oscd_cities(data, cities)]
    probabilities = [predict_probability(model, s.x1, s.x2, device=device) for s in stacks]
    return probabilities, [s.label for s in stacks], float(config["threshold"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="change model folders")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "oscd", help="OSCD root")
    parser.add_argument("--cities", default=TEST_CITIES, help="comma-separated labelled cities to score")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    cities = [c.strip() for c in args.cities.split(",") if c.strip()]
    rows, total, labels = [], None, []
    for model_dir in args.models:
        probabilities, labels, threshold = city_probabilities(model_dir, args.data, cities)
        best, counts = best_threshold(probabilities, labels)
        rows.append({"model": str(model_dir), "threshold": threshold,
                     "f1": pooled_counts(probabilities, labels, threshold).f1,
                     "best_threshold": best, "best_f1": counts.f1})
        print(f"{model_dir}: F1 {rows[-1]['f1']:.3f} at its threshold {threshold:.2f}; "
              f"{counts.f1:.3f} at the best one on these cities ({best:.2f})", flush=True)
        total = probabilities if total is None else [a + b for a, b in zip(total, probabilities)]
    result: dict = {"cities": cities, "models": rows}
    if len(rows) > 1 and total is not None:
        mean = [p / len(rows) for p in total]
        best, counts = best_threshold(mean, labels)
        result["ensemble"] = {"best_threshold": best, "best_f1": counts.f1}
        print(f"average of {len(rows)} models: {counts.f1:.3f} at the best threshold on these cities ({best:.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
