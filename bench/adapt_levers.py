"""Levers of adapting, side by side on the same cities (an experiment for issue 13; results in docs/benchmarks.md).

For each labelled city: polygons from its top half (as ``make bench-adapt``), one start model, several training
recipes; every recipe's final weights and val-selected weights are scored on the bottom half at several
threshold policies (chosen on the held-out polygons, on all labelled pixels, the model's own, the oracle, and
steadier rules on the held-out polygons: the middle of the thresholds within 0.02 of the best F1 (``plateau``),
or the starting model's own unless the best beats it by 0.05 (``guard``)). ``--start cv`` starts each city from
the ``make bench-cv`` fold model that never saw it (``--cv``, ``--seed``). ``--wise``: also score the weights
interpolated between the start and each recipe's final weights (WiSE-FT, Wortsman et al. 2022: a fine-tune that
forgets less) at ``ALPHAS``, and the one of {start, interpolations, final, selected} with the best held-out F1.

    .venv/bin/python bench/adapt_levers.py --data ../shared/data --variants base,frozen-bn [--cities a,b]
        [--start shipped|random|cv|ENCODER_DIR] [--cv runs/cv/match-self-train]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_adapt import start_model, top_half_polygons  # noqa: E402
from core.change.adapt import (  # noqa: E402
    ADAPT_TRAIN,
    GUARD,
    LabelledPair,
    LabelledPatchDataset,
    _read_pair,
    starting_model,
)
from core.change.losses import change_loss  # noqa: E402
from core.change.matching import uses_matching  # noqa: E402
from core.change.metrics import ChangeCounts, count_changes  # noqa: E402
from core.change.oscd import oscd_cities  # noqa: E402
from core.change.patches import CityStack, load_city  # noqa: E402
from core.change.predict import predict_probability  # noqa: E402
from core.change.training import (  # noqa: E402
    THRESHOLDS,
    WeightAverage,
    best_threshold,
    parameter_groups,
    pooled_counts,
)
from core.io.normalization import BandStats  # noqa: E402
from core.models.siamese import SiameseUNet  # noqa: E402
from core.pretrain.training import learning_rate  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    steps: int = 120
    lr: float = 2e-4
    frozen_bn: bool = False
    ema: float = 0.9
    batch: int = 8
    decoder_only: bool = False
    encoder_lr: float = 1.0  # the encoder's learning rate as a share of lr (finetune-change --encoder-lr-scale)


RECIPES = {
    "base": Recipe(),
    "frozen-bn": Recipe(frozen_bn=True),
    "frozen-bn-long": Recipe(frozen_bn=True, steps=300, lr=4e-4),
    "long": Recipe(steps=300, lr=4e-4),
    "decoder": Recipe(frozen_bn=True, decoder_only=True, steps=300, lr=1e-3),
    "enclr": Recipe(encoder_lr=0.1),
    "enclr-long": Recipe(encoder_lr=0.1, steps=300, lr=4e-4),
}


def bn_eval(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def train(model: torch.nn.Module, stacks: list[CityStack], recipe: Recipe, val: list[CityStack],
          seed: int) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    """(final EMA model, val-selected model, its threshold)."""
    torch.manual_seed(seed)
    side = min(96, *(min(t.shape) for t in stacks)) // 16 * 16
    loader = DataLoader(LabelledPatchDataset(stacks, side, recipe.steps * recipe.batch, seed=seed),
                        batch_size=recipe.batch, num_workers=0)
    model.encoder.requires_grad_(not recipe.decoder_only)
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe.encoder_lr), lr=recipe.lr, weight_decay=1e-4)
    average = WeightAverage(model, recipe.ema)
    cfg = replace(ADAPT_TRAIN, steps=recipe.steps, lr=recipe.lr)
    t0, c0 = validate(model, val)
    best = (c0.f1, 0, t0, {k: v.clone() for k, v in model.state_dict().items()})
    for step, batch in enumerate(loader, 1):
        model.train()
        if recipe.frozen_bn:
            bn_eval(model)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - 1, recipe.steps, cfg) * group["lr_scale"]
        loss = change_loss(model(batch["x1"], batch["x2"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        average.update(model)
        if step % 20 == 0 or step == recipe.steps:
            t, counts = validate(average.model, val)
            if counts.f1 > best[0]:
                best = (counts.f1, step, t, {k: v.clone() for k, v in average.model.state_dict().items()})
    selected = copy.deepcopy(average.model)
    selected.load_state_dict(best[3])
    return average.model.eval(), selected.eval(), best[2]


def validate(model: torch.nn.Module, val: list[CityStack]) -> tuple[float, ChangeCounts]:
    model.eval()
    probs = [predict_probability(model, v.x1, v.x2) for v in val]
    return best_threshold(probs, [v.label for v in val])


ALPHAS = (0.25, 0.5, 0.75)  # --wise: the share of the fine-tuned weights


def interpolate(start: dict[str, torch.Tensor], end: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """A copy of ``end`` with weights ``(1 - alpha) * start + alpha * end`` (integer buffers from ``end``)."""
    mixed = copy.deepcopy(end)
    mixed.load_state_dict({k: ((1 - alpha) * start[k] + alpha * v) if v.is_floating_point() else v
                           for k, v in end.state_dict().items()})
    return mixed.eval()


PLATEAU = 0.02  # F1 within this of the best counts as the same; GUARD: the one `adapt` uses


def steady_thresholds(probs: list[np.ndarray], labels: list[np.ndarray], own: float) -> dict[str, float]:
    """The held-out rules on the held-out pixels' probabilities: best F1 (``val``), the middle of the near-best
    plateau, the guarded own threshold."""
    f1 = np.array([pooled_counts(probs, labels, float(t)).f1 for t in THRESHOLDS])
    best = float(THRESHOLDS[int(np.argmax(f1))])
    near = THRESHOLDS[f1 >= f1.max() - PLATEAU]
    gain = f1.max() - pooled_counts(probs, labels, own).f1
    return {"val": best, "plateau": float(np.median(near)), "guard": best if gain >= GUARD else own}


def labelled_probs(model: torch.nn.Module, stacks: list[CityStack]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [predict_probability(model, s.x1, s.x2) for s in stacks], [s.label for s in stacks]


def score_model(tag: str, m: torch.nn.Module, t_val: float, full: CityStack, half: int, trainset: CityStack,
                val: CityStack, own: float, row: dict, bottom: np.ndarray, add) -> None:
    """Bottom-half counts of ``m`` at the val-chosen (the step's, and the steadier rules'), all-labelled-chosen,
    own and oracle thresholds."""
    m.eval()
    p = predict_probability(m, full.x1, full.x2)[half:]
    probs, labels = labelled_probs(m, [trainset, val])  # the held-out part last
    t_all, _ = best_threshold(probs, labels)
    valid = full.label[half:] != 255
    truth = bottom * valid
    steady = steady_thresholds(probs[1:], labels[1:], own)
    row[f"{tag}/thresholds"] = {"val": t_val, **steady, "all": t_all}
    for name, t in (("val", t_val), ("plateau", steady["plateau"]), ("guard", steady["guard"]), ("all", t_all),
                    ("own", own)):
        row[f"{tag}/{name}"] = add(f"{tag}/{name}", count_changes((p > t) & valid, truth))
    best = max(THRESHOLDS, key=lambda t: count_changes((p > t) & valid, truth).f1)
    row[f"{tag}/oracle"] = add(f"{tag}/oracle", count_changes((p > best) & valid, truth))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--cities", default="")
    parser.add_argument("--variants", default="base,frozen-bn")
    parser.add_argument("--start", default="shipped", help="shipped, random, cv, or an encoder folder")
    parser.add_argument("--cv", default="runs/cv/match-self-train", help="--start cv: bench_cv's fold models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    parser.add_argument("--wise", action="store_true", help="also score start/final weight interpolations")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    cities = oscd_cities(Path(args.data) / "oscd", [c for c in args.cities.split(",") if c] or None)
    pooled: dict[str, ChangeCounts] = {}
    rows = []

    def add(key: str, counts: ChangeCounts) -> float:
        pooled[key] = pooled.get(key, ChangeCounts()) + counts
        row_counts[key] = [counts.tp, counts.fp, counts.fn]  # so runs over several invocations can be pooled
        return counts.f1

    with tempfile.TemporaryDirectory() as scratch:
        for city in cities:
            started = time.perf_counter()
            gpkg = Path(scratch) / f"{city.name}.gpkg"
            truth, half = top_half_polygons(city.label, next(city.t1.glob("*_B02.tif")), gpkg)
            encoder = None if args.start in ("shipped", "random", "cv") else args.start
            start = start_model(city.name, args, Path(scratch))
            model, config, _ = starting_model(start, encoder, torch.device("cpu"))
            if args.start == "random":  # the shipped model's bands and normalisation, fresh weights
                torch.manual_seed(args.seed)
                model = SiameseUNet(config["architecture"]["arch"], config["architecture"]["in_chans"])
            trainset, val, _ = _read_pair(LabelledPair(str(city.t1), str(city.t2), str(gpkg)), config, "change", 96,
                                          args.seed, (), "auto")
            full = load_city(city, config["bands"], BandStats.from_dict(config["normalization"]), uses_matching(config))
            bottom = truth[half:]
            own = float(config.get("threshold", 0.5))
            row_counts: dict[str, list[int]] = {}
            row = {"city": city.name, "counts": row_counts}

            def score(tag: str, m: torch.nn.Module, t_val: float, ctx: tuple = (full, half, trainset, val, own, row,
                                                                                bottom)) -> None:
                score_model(tag, m, t_val, *ctx, add)

            if args.start in ("shipped", "cv"):
                t0, _ = validate(model, [val])
                score("start", model, t0)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            for name in args.variants.split(","):
                model.load_state_dict(state)
                final, selected, t_sel = train(model, [trainset], RECIPES[name], [val], args.seed)
                final_val = validate(final, [val])
                score(f"{name}:final", final, final_val[0])
                score(f"{name}:sel", selected, t_sel)
                if args.wise:  # (held-out threshold and counts, model, label) of every candidate; alpha 0 = start
                    candidates = []
                    for alpha in (0.0, *ALPHAS):
                        mixed = interpolate(state, final, alpha)
                        candidates.append((validate(mixed, [val]), mixed, f"wise{alpha:g}" if alpha else "start"))
                        if alpha:
                            score(f"{name}:wise{alpha:g}", mixed, candidates[-1][0][0])
                    candidates += [(final_val, final, "final"), (validate(selected, [val]), selected, "sel")]
                    (t_best, _), chosen, label = max(candidates, key=lambda c: c[0][1].f1)
                    row[f"{name}:wise-chosen"] = label
                    score(f"{name}:wise-val", chosen, t_best)
            row["seconds"] = round(time.perf_counter() - started)
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    print("\npooled bottom-half F1:")
    for key, counts in sorted(pooled.items()):
        print(f"  {key:32s} {counts.f1:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "pooled": {k: c.f1 for k, c in pooled.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
