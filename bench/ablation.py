"""Ablation at equal budget: which part of SwiMDiff helps change detection?

Run with ``make bench-ablation``. Five arms share everything but the pre-training objective:

- random init (no pre-training),
- MoCo v2 (``--swm-mode off --lambda-diffusion 0``),
- MoCo + SwM (``--lambda-diffusion 0``),
- MoCo + diffusion (``--swm-mode off``),
- full SwiMDiff (defaults).

Every pre-training arm runs the same steps, batch and patches on the same unlabelled scenes (the 10
unlabelled OSCD cities and the Boadella and Jaca series); every arm is then fine-tuned with the same
steps on eight training cities, its step and threshold chosen on the bottom quarter of every
training city's rows (never in a training patch), and scored once on the two test cities, which
nothing else sees. Stages whose output exists are skipped, so an
interrupted run continues where it stopped. Results: ``OUT/ablation.json`` and ``OUT/ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.scenes import unlabelled_scenes  # noqa: E402

ARMS: dict[str, list[str] | None] = {
    "random init": None,
    "MoCo v2": ["--swm-mode", "off", "--lambda-diffusion", "0"],
    "MoCo + SwM": ["--lambda-diffusion", "0"],
    "MoCo + diffusion": ["--swm-mode", "off"],
    "SwiMDiff (full)": [],
}
TRAIN_CITIES = "aguasclaras,bercy,bordeaux,paris,saclay_e,pisa,beihai,beirut"
VAL_FRACTION = "0.25"  # validation: the bottom quarter of every training city's rows, never in a training patch
TEST_CITIES = "mumbai,nantes"
BANDS = "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12"  # what L1C and L2A scenes share


def slug(arm: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in arm.lower()).strip("-").replace("--", "-")


def swimdiff(args: list[str], log: Path) -> None:
    """Run one ``swimdiff`` command, its output in ``log``; stop the ablation if it fails."""
    command = [sys.executable, "-m", "core.cli", *args]
    print("$ swimdiff " + " ".join(args), flush=True)
    with log.open("w") as handle:
        code = subprocess.call(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"failed (exit {code}); see {log}")


def pretrain(arm: str, flags: list[str], args: argparse.Namespace, out: Path) -> Path:
    model = out / f"pretrain-{slug(arm)}"
    if not (model / "config.json").exists():
        swimdiff(["pretrain", "--data", *unlabelled_scenes(Path(args.data)), "--assume-band-names", "l2a",
                  "--bands", BANDS, "--out", str(model), "--steps", str(args.pretrain_steps), "--batch-size", "32",
                  "--patch-size", "64", "--queue-size", "1024", "--seed", "0", "--checkpoint-every", "100",
                  "--log-every", "25", "--overwrite", *flags], out / f"pretrain-{slug(arm)}.log")
    return model


def finetune(arm: str, encoder: Path | None, seed: int, args: argparse.Namespace, out: Path) -> Path:
    model = out / f"change-{slug(arm)}-s{seed}"
    if not (model / "config.json").exists():
        start = ["--encoder", str(encoder)] if encoder else ["--bands", BANDS]
        swimdiff(["finetune-change", "--data", str(Path(args.data) / "oscd"), "--out", str(model), *start,
                  "--cities", TRAIN_CITIES, "--val-fraction", VAL_FRACTION, "--steps", str(args.finetune_steps),
                  "--eval-every", "100", "--seed", str(seed)], out / f"change-{slug(arm)}-s{seed}.log")
    return model


def test_f1(model: Path, args: argparse.Namespace) -> dict[str, float]:
    scores = model / "test-scores.json"
    if not scores.exists():
        swimdiff(["evaluate", "--data", str(Path(args.data) / "oscd"), "--model", str(model), "--cities", TEST_CITIES,
                  "--json", str(scores)], model.parent / f"{model.name}-evaluate.log")
    pooled = json.loads(scores.read_text())["pooled"]
    val = json.loads((model / "config.json").read_text())["metrics"]["val_f1"]
    return {"val_f1": val, "test_f1": pooled["f1"], "test_iou": pooled["iou"]}


def table(results: dict[str, dict[int, dict[str, float]]], args: argparse.Namespace) -> str:
    seeds = sorted({s for arm in results.values() for s in arm})
    lines = ["| arm | val F1 (bottom quarters) | " + " | ".join(f"test F1 seed {s}" for s in seeds)
             + f" | test F1 mean ({TEST_CITIES}) |", "|---" * (3 + len(seeds)) + "|"]
    for arm, runs in results.items():
        tests = [runs[s]["test_f1"] for s in seeds if s in runs]
        vals = [runs[s]["val_f1"] for s in seeds if s in runs]
        spread = f" ± {statistics.stdev(tests):.3f}" if len(tests) > 1 else ""
        cells = [f"{runs[s]['test_f1']:.3f}" if s in runs else "–" for s in seeds]
        lines.append(f"| {arm} | {statistics.mean(vals):.3f} | " + " | ".join(cells)
                     + f" | **{statistics.mean(tests):.3f}**{spread} |")
    return "\n".join(lines) + (f"\n\nPre-training {args.pretrain_steps} steps (batch 32, 64 px) per arm; "
                               f"fine-tuning {args.finetune_steps} steps (batch 8, 96 px) per seed; "
                               f"train cities {TRAIN_CITIES}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument("--out", default=str(REPO / "runs" / "ablation"))
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1", help="fine-tuning seeds")
    parser.add_argument("--stage", choices=("all", "pretrain"), default="all")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    encoders = {arm: pretrain(arm, flags, args, out) if flags is not None else None for arm, flags in ARMS.items()}
    if args.stage == "pretrain":
        return
    results: dict[str, dict[int, dict[str, float]]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm, encoder in encoders.items():
            results.setdefault(arm, {})[seed] = test_f1(finetune(arm, encoder, seed, args, out), args)
            (out / "ablation.json").write_text(json.dumps(results, indent=2))  # after every run: partial results
            (out / "ablation.md").write_text(table(results, args))
    print(table(results, args))
    print(f"{time.perf_counter() - started:.0f} s; results in {out}/ablation.md")


if __name__ == "__main__":
    main()
