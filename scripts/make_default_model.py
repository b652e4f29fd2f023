"""Re-create the default change model shipped in ``resources/models/oscd-change`` (``make default-model``).

1. SwiMDiff pre-training on every unlabelled scene in ../shared/data (the 10 unlabelled OSCD cities,
   the Boadella and Jaca series), 1500 steps.
2. Fine-tuning a Siamese U-Net on eight labelled OSCD cities; step and threshold chosen on the bottom
   quarter of every training city's rows, which no training patch touches.
3. Scoring on the two held-out test cities (mumbai, nantes), which neither step saw.
4. Weights stored as fp16 safetensors (the fp16 model is what gets scored); config.json records
   the cities, steps and scores, test-scores.json the per-city test scores.

About 30 + 15 minutes on 2 CPU cores. Existing stages in --work are reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ablation import BANDS, TEST_CITIES, TRAIN_CITIES, VAL_FRACTION  # noqa: E402
from core.change.default_model import DEFAULT_CHANGE_MODEL  # noqa: E402
from core.change.training import CHANGE_KIND  # noqa: E402
from core.checkpoint import FORMAT_VERSION, atomic_write_text, load_model, save_model  # noqa: E402
from core.cli import main as swimdiff  # noqa: E402
from scripts.scenes import unlabelled_scenes  # noqa: E402


def run(args: list[str]) -> None:
    print("$ swimdiff " + " ".join(args), flush=True)
    if swimdiff(args) != 0:
        sys.exit(f"swimdiff {args[0]} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--work", default=str(REPO / "runs" / "default-model"), help="folder for both stages")
    parser.add_argument("--encoder", default=None, help="use this pre-trained model instead of stage 1")
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--finetune-steps", type=int, default=600)
    parser.add_argument("--out", default=str(DEFAULT_CHANGE_MODEL))
    args = parser.parse_args()
    data, work = Path(args.data), Path(args.work)
    encoder = Path(args.encoder) if args.encoder else work / "pretrain"
    if not (encoder / "config.json").exists():
        run(["pretrain", "--data", *unlabelled_scenes(data), "--assume-band-names", "l2a", "--bands", BANDS,
             "--out", str(encoder), "--steps", str(args.pretrain_steps), "--batch-size", "32", "--patch-size", "64",
             "--queue-size", "1024", "--checkpoint-every", "100", "--log-every", "25", "--resume"
             if (encoder / "train_state.safetensors").exists() else "--overwrite"])
    change = work / "change"
    if not (change / "config.json").exists():
        run(["finetune-change", "--data", str(data / "oscd"), "--out", str(change), "--encoder", str(encoder),
             "--cities", TRAIN_CITIES, "--val-fraction", VAL_FRACTION, "--steps", str(args.finetune_steps),
             "--eval-every", "50"])
    weights, config = load_model(change, kind=CHANGE_KIND)
    config.pop("format_version")
    config["provenance"]["recreate"] = "make default-model (scripts/make_default_model.py)"
    out = Path(args.out)
    staging = out.with_name(out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_model(staging, {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, config)
    shutil.copy(change / "history.csv", staging / "history.csv")
    scores = staging / "test-scores.json"  # the shipped fp16 weights are what gets scored
    run(["evaluate", "--data", str(data / "oscd"), "--model", str(staging), "--cities", TEST_CITIES,
         "--json", str(scores), "--report", str(work / "test-report")])
    config["metrics"]["test_cities"] = TEST_CITIES.split(",")
    config["metrics"].update({f"test_{k}": v for k, v in json.loads(scores.read_text())["pooled"].items()})
    atomic_write_text(staging / "config.json", json.dumps({"format_version": FORMAT_VERSION, **config}, indent=2,
                                                          sort_keys=True))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    size = (out / "model.safetensors").stat().st_size / 2**20
    print(f"default model in {out} ({size:.1f} MB): validation F1 {config['metrics']['val_f1']:.3f} "
          f"(bottom quarters), test F1 {config['metrics']['test_f1']:.3f} ({TEST_CITIES})")


if __name__ == "__main__":
    main()
