"""Is the ranking or the threshold the limit? Ceilings over ``make bench-cv``'s cached out-of-fold predictions.

For each recipe and seed (``RECIPE:SEED``, its fold models under ``--cv``): the pooled F1 over the 10 cities at
the OOF threshold (as ``bench_cv.py``), at the best single threshold chosen on all 10 cities' labels, and at the
best threshold *per city* chosen on that city's own labels (a ceiling that no threshold rule or calibration can
pass); then the average of the listed predictions (an ensemble) at the OOF threshold. Reads only the cached
``prob-<city>.npy`` files that ``bench_cv.py`` wrote; trains nothing.

    .venv/bin/python bench/cv_ceiling.py match-self-train:0 match-self-train:1 [--cv runs/cv]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_cv import FOLDS, counts_at, labels, oof_thresholds, pooled  # noqa: E402
from core.change.training import THRESHOLDS  # noqa: E402


def fold_probabilities(cv: Path, recipe: str, seed: int) -> dict[str, np.ndarray]:
    """Every city's probability map from the fold model that never saw it."""
    return {city: np.load(cv / recipe / f"fold{fold}-s{seed}" / f"prob-{city}.npy").astype(np.float32)
            for fold, cities in enumerate(FOLDS) for city in cities}


def ceilings(prob: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, tuple[float, dict[str, float]]]:
    """Pooled F1 and per-city F1 at the OOF threshold, the best global threshold and the best per-city ones."""
    def best_for(cities: list[str]) -> float:
        return float(max(THRESHOLDS, key=lambda t: pooled(counts_at({c: prob[c] for c in cities}, truth,
                                                                   dict.fromkeys(cities, t))).f1))
    rules = {"OOF threshold": oof_thresholds(prob, truth),
             "best global threshold": dict.fromkeys(prob, best_for(list(prob))),
             "best threshold per city": {c: best_for([c]) for c in prob}}
    out = {}
    for name, threshold in rules.items():
        per_city = counts_at(prob, truth, threshold)
        out[name] = (pooled(per_city).f1, {c: per_city[c].f1 for c in prob})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RECIPE:SEED of bench_cv fold models")
    parser.add_argument("--cv", default=str(REPO / "runs" / "cv"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    truth = labels(args)
    probs = {}
    for run in args.runs:
        recipe, seed = run.rsplit(":", 1)
        probs[run] = fold_probabilities(Path(args.cv), recipe, int(seed))
    if len(probs) > 1:
        probs["average of " + " + ".join(args.runs)] = {c: np.mean([p[c] for p in probs.values()], axis=0)
                                                        for c in truth}
    cities = [c for fold in FOLDS for c in fold]
    print("| predictions | threshold | pooled F1 | " + " | ".join(cities) + " |")
    print("|---|---|---:|" + "---:|" * len(cities))
    for name, prob in probs.items():
        for rule, (f1, per_city) in ceilings(prob, truth).items():
            print(f"| {name} | {rule} | {f1:.3f} | " + " | ".join(f"{per_city[c]:.2f}" for c in cities) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
