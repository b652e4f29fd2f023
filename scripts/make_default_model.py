"""Re-create the default change model shipped in ``resources/models/oscd-change`` (``make default-model``).

1. SwiMDiff pre-training on every unlabelled scene in ../shared/data (the 10 unlabelled OSCD cities,
   the Boadella and Jaca series), 1500 steps.
2. Cross-validation of the fine-tuning recipe (``bench/bench_cv.py``: 5 folds, two labelled cities held out
   in each, seeds 0 and 1): every labelled city scored by a model that never saw it. Its mean over the seeds is
   the model's quality claim, and seed 0 chooses the threshold: the best pooled F1 over the out-of-fold
   predictions.
3. The same recipe fine-tuned on all 10 labelled cities (the teacher).
4. Self-training: the teacher labels the 10 unlabelled OSCD cities where it is confident (1 at probability
   >= 0.5, 0 below 0.05, ignored between) and the recipe is fine-tuned again on labelled + pseudo-labelled
   cities (``--no-self-training``: ship the teacher). Cross-validated the same way, each fold's student
   learning from its own fold's teacher, so no held-out label leaks.
5. fp16 safetensors with the cross-validated threshold and stable-cover cuts (``core/change/stable_cover.py``:
   probability 0 where both dates are green, or both are open water), chosen together. config.json records the
   recipe, the cross-validated scores (pooled and per city) and how the threshold and cuts were chosen;
   training-scores.json the fp16 model's scores on its own cities (in-sample, not a quality claim).

About 30 + 45 + 10 minutes on 2 CPU cores. Existing stages in --work (and folds in --cv) are reused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ablation import BANDS  # noqa: E402
from bench.bench_cv import CITIES, SHIPPED_RECIPE  # noqa: E402
from core.change.default_model import DEFAULT_CHANGE_MODEL  # noqa: E402
from core.change.pseudo import label_unlabelled_cities  # noqa: E402
from core.change.stable_cover import COVERS, VEGETATION, WATER  # noqa: E402
from core.change.training import CHANGE_KIND, load_change_model  # noqa: E402
from core.checkpoint import load_model, save_model  # noqa: E402
from core.cli import main as swimdiff  # noqa: E402
from scripts.scenes import unlabelled_scenes  # noqa: E402

FINETUNE_STEPS = 600


def run(args: list[str]) -> None:
    print("$ swimdiff " + " ".join(args), flush=True)
    if swimdiff(args) != 0:
        sys.exit(f"swimdiff {args[0]} failed")


def cross_validate(encoder: Path, args: argparse.Namespace, name: str, flags: str, teacher: str = "") -> dict:
    """A recipe's cross-validation summary (``bench_cv.py``'s cv.json entry), run or reused."""
    command = [sys.executable, str(REPO / "bench" / "bench_cv.py"), "--data", args.data, "--encoder", str(encoder),
               "--out", args.cv, "--seeds", args.seeds, "--steps", str(FINETUNE_STEPS), "--recipe", f"{name}={flags}",
               *(["--teacher", teacher] if teacher else [])]
    print("$ " + " ".join(command), flush=True)
    if subprocess.call(command, cwd=REPO) != 0:
        sys.exit("cross-validation failed")
    return json.loads((Path(args.cv) / "cv.json").read_text())["recipes"][name]


def self_trained(teacher: Path, encoder: Path, args: argparse.Namespace) -> Path:
    """The recipe fine-tuned again on the labelled cities plus the unlabelled OSCD cities as ``teacher`` labels
    them where it is confident (the cross-validated self-training row of docs/benchmarks.md)."""
    pseudo = teacher / "pseudo"
    if not (pseudo / "done").exists():
        label_unlabelled_cities(*load_change_model(teacher, torch.device("cpu")), Path(args.data) / "oscd", pseudo)
        (pseudo / "done").touch()
    student = Path(args.work) / "self-trained-all-cities"
    if not (student / "config.json").exists():
        run(["finetune-change", "--data", str(Path(args.data) / "oscd"), "--out", str(student), "--encoder",
             str(encoder), "--cities", ",".join(CITIES), "--steps", str(FINETUNE_STEPS), *shlex.split(args.recipe),
             "--pseudo-labels", str(pseudo)])
    return student


def model_card(cv: dict, recipe: str) -> dict:
    """What config.json's metrics say about quality: the cross-validated scores (mean over the seeds, and each
    seed's) with the stable-cover rules and threshold chosen out of fold, and the origin of the shipped
    rules and threshold (seed 0's out-of-fold predictions: the shipped model is seed 0)."""
    shipping = cv["shipping"][0]
    f1s = cv["oof_cover_f1"]
    per_city = cv["oof_cover_per_city"]
    return {
        "cv_recipe": recipe, "cv_folds": "5 folds, 2 of the 10 labelled OSCD cities held out in each",
        "cv_seeds": cv["seeds"], "cv_f1": round(statistics.mean(f1s), 4),
        "cv_f1_sd": round(statistics.stdev(f1s), 4) if len(f1s) > 1 else None,
        "cv_f1_per_seed": [round(f, 4) for f in f1s],
        "cv_f1_without_stable_cover_rules": round(statistics.mean(cv["oof_threshold_f1"]), 4),
        "cv_f1_with_vegetation_rule_only": round(statistics.mean(cv["oof_vegetation_f1"]), 4),
        "cv_per_city": {c: round(statistics.mean(seed[c]["f1"] for seed in per_city), 4) for c in per_city[0]},
        "cv_f1_at_threshold": shipping["pooled"]["f1"],
        "threshold_rule": "the stable-vegetation and stable-water cuts and the threshold with the best pooled F1 over "
                          "the 10 cities' out-of-fold predictions of seed 0 (cv_f1 chooses each fold's cuts and "
                          "threshold on the other folds' cities only: the honest figure)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--work", default=str(REPO / "runs" / "default-model"), help="folder for the stages")
    parser.add_argument("--encoder", default=None, help="use this pre-trained model instead of stage 1")
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--recipe", default=SHIPPED_RECIPE, help="finetune-change flags of the recipe")
    parser.add_argument("--recipe-name", default="match", help="its name in the cross-validation folder")
    parser.add_argument("--cv", default=None, help="cross-validation folder (default: WORK/cv)")
    parser.add_argument("--no-self-training", dest="self_training", action="store_false",
                        help="ship the recipe's model itself, not the one self-trained from it")
    parser.add_argument("--seeds", default="0,1", help="cross-validation seeds (the shipped model is seed 0)")
    parser.add_argument("--out", default=str(DEFAULT_CHANGE_MODEL))
    args = parser.parse_args()
    data, work = Path(args.data), Path(args.work)
    args.cv = args.cv or str(work / "cv")
    encoder = Path(args.encoder) if args.encoder else work / "pretrain"
    if not (encoder / "config.json").exists():
        run(["pretrain", "--data", *unlabelled_scenes(data), "--assume-band-names", "l2a", "--bands", BANDS,
             "--out", str(encoder), "--steps", str(args.pretrain_steps), "--batch-size", "32", "--patch-size", "64",
             "--queue-size", "1024", "--checkpoint-every", "100", "--log-every", "25", "--resume"
             if (encoder / "train_state.safetensors").exists() else "--overwrite"])
    cv = cross_validate(encoder, args, args.recipe_name, args.recipe)
    change = work / "change-all-cities"
    if not (change / "config.json").exists():
        run(["finetune-change", "--data", str(data / "oscd"), "--out", str(change), "--encoder", str(encoder),
             "--cities", ",".join(CITIES), "--steps", str(FINETUNE_STEPS), *shlex.split(args.recipe)])
    recipe = args.recipe
    if args.self_training:
        recipe = f"{args.recipe} --pseudo-labels {{pseudo}}"
        cv = cross_validate(encoder, args, f"{args.recipe_name}-self-train", recipe, teacher=args.recipe_name)
        change = self_trained(change, encoder, args)
    weights, config = load_model(change, kind=CHANGE_KIND)
    config.pop("format_version")
    config["provenance"]["recreate"] = "make default-model (scripts/make_default_model.py)"
    config["metrics"].update(model_card(cv, recipe))
    config["threshold"] = cv["shipping"][0]["threshold"]
    for cover in COVERS:
        config.pop(cover.config_key, None)
        if cv["shipping"][0].get(cover.config_key) is not None:
            config[cover.config_key] = cv["shipping"][0][cover.config_key]
    out = Path(args.out)
    staging = out.with_name(out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_model(staging, {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, config)
    shutil.copy(change / "history.csv", staging / "history.csv")
    scores = staging / "training-scores.json"  # the shipped fp16 weights on their own cities: in-sample
    run(["evaluate", "--data", str(data / "oscd"), "--model", str(staging), "--include-training-cities",
         "--json", str(scores), "--report", str(work / "training-report")])
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    size = (out / "model.safetensors").stat().st_size / 2**20
    print(f"default model in {out} ({size:.1f} MB), trained on all {len(CITIES)} labelled cities; cross-validated "
          f"F1 {config['metrics']['cv_f1']:.3f} (out-of-fold, pooled, mean over seeds {args.seeds}), "
          f"threshold {config['threshold']:.2f}, stable vegetation above NDVI {config.get(VEGETATION.config_key)}, "
          f"stable water above MNDWI {config.get(WATER.config_key)}")


if __name__ == "__main__":
    main()
