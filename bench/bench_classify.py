"""Land-cover classification on the small real samples: random init vs the SwiMDiff encoder.

Run with ``make bench-classify``. Four arms, {random init, SwiMDiff encoder} x {linear probe,
fine-tuning}, each trained by ``finetune_classify`` (the code behind ``swimdiff finetune-classify``)
with the same epochs, batch size and learning rates, on the three samples in
../shared/data/classification:

- ``eurosat_small/rgb_100``: 100 RGB JPGs, 10 classes x 10. The command's seeded split, stratified per
  class (2 of every 10 held out: 20 validation patches per run), once per seed; accuracy.
- ``eurosat_small/ms_6``: 6 13-band GeoTIFFs, 2 classes x 3. A split would leave 2 validation patches
  (accuracy 0, 0.5 or 1), so leave-one-out: each patch is predicted by a model trained on the other
  5; accuracy over the 6 predictions, once per seed.
- ``BigEarthNet-S2-Example``: 6 multi-label patches, 12 bands. Leave-one-out as above; micro mAP over
  the pooled 6 x K predictions, next to a reference that looks at no image and scores every class by
  its frequency in the 5 training patches (a class seen in no training patch scores 0 in every arm).

A seed sets the split, the initialisation, the batches and the augmentations. The SwiMDiff encoder
is ``--encoder DIR`` (a ``swimdiff pretrain`` folder) or else pre-trained here on the unlabelled
scenes (the recipe of runs/swimdiff-1500 in docs/benchmarks.md, ~30 min on 2 CPU cores), reused if
present. Runs whose results exist in OUT are skipped, so an interrupted run continues where it
stopped. Results: ``OUT/bench-classify.json`` and ``OUT/bench-classify.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.config import ClassifyConfig  # noqa: E402
from core.io.normalization import BandStats  # noqa: E402
from core.landcover.metrics import micro_map  # noqa: E402
from core.landcover.patches import PatchSet, load_patches  # noqa: E402
from core.landcover.training import finetune_classify, load_classifier, normalise, predict_logits  # noqa: E402
from scripts.scenes import unlabelled_scenes  # noqa: E402


@dataclass(frozen=True)
class Task:
    """One labelled sample and how it is validated ("split": the command's split; "loo": leave-one-out)."""

    name: str
    folder: str
    protocol: str
    metric: str


TASKS = (
    Task("EuroSAT RGB (rgb_100)", "eurosat_small/rgb_100", "split", "accuracy"),
    Task("EuroSAT MS (ms_6)", "eurosat_small/ms_6", "loo", "accuracy"),
    Task("BigEarthNet (6 patches)", "BigEarthNet-S2-Example", "loo", "micro mAP"),
)
ENCODERS = ("random init", "SwiMDiff")
MODES = {"linear probe": True, "fine-tuning": False}
PRIOR = "class frequency (no image)"
WEIGHTS = "model.safetensors"


def slug(*parts: object) -> str:
    text = "-".join(str(p) for p in parts).lower()
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").replace("--", "-")


def pretrain(args: argparse.Namespace) -> Path:
    """The SwiMDiff encoder: ``--encoder``, or one pre-trained into ``--encoder-out`` (reused, resumed)."""
    if args.encoder:
        return Path(args.encoder)
    encoder = Path(args.encoder_out)
    if not (encoder / "config.json").exists():
        resume = (encoder / "train_state.safetensors").exists()
        command = ["pretrain", "--data", *unlabelled_scenes(Path(args.data)), "--assume-band-names", "l2a",
                   "--out", str(encoder), "--steps", str(args.pretrain_steps), "--batch-size", "32",
                   "--patch-size", "64", "--seed", "0", "--checkpoint-every", "100", "--log-every", "25",
                   "--resume" if resume else "--overwrite"]
        print("$ swimdiff " + " ".join(command), flush=True)
        encoder.parent.mkdir(parents=True, exist_ok=True)
        with (encoder.parent / f"{encoder.name}.log").open("a") as log:
            code = subprocess.call([sys.executable, "-m", "core.cli", *command], cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT)
        if code != 0:
            sys.exit(f"pre-training failed (exit {code}); see {encoder.parent / f'{encoder.name}.log'}")
    return encoder


def train(data: Path, out: Path, encoder: Path | None, linear_probe: bool, seed: int, val_fraction: float,
          args: argparse.Namespace) -> dict:
    """One ``finetune_classify`` run into ``out`` unless it is there already; returns its config.json."""
    if not (out / "config.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        config = ClassifyConfig(linear_probe=linear_probe, epochs=args.epochs, seed=seed, val_fraction=val_fraction,
                                device=args.device)
        finetune_classify(data, out, config, encoder_dir=encoder)
    return finished_run(out, encoder, args)


def finished_run(out: Path, encoder: Path | None, args: argparse.Namespace) -> dict:
    """The config.json of a run, after checking that it used this encoder and number of epochs."""
    config = json.loads((out / "config.json").read_text())
    expected = (str(encoder) if encoder else None, args.epochs)
    found = (config["provenance"]["encoder"], config["train"]["epochs"])
    if found != expected:
        sys.exit(f"'{out}' holds a run with encoder {found[0]} and {found[1]} epochs, not {expected[0]} and "
                 f"{expected[1]}: choose another --out")
    return config


def subset_folder(patches: PatchSet, keep: np.ndarray, dest: Path) -> Path:
    """A folder of symbolic links to the patches ``keep`` indexes, in the same layout as the original."""
    shutil.rmtree(dest, ignore_errors=True)
    for i in keep:
        source = Path(patches.sources[i])
        link = dest / source.parent.name / source.name if patches.layout == "eurosat" else dest / source.name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source.resolve(), link)
    return dest


def heldout_scores(model_dir: Path, patches: PatchSet, index: int) -> np.ndarray:
    """Class probabilities (K,) of patch ``index`` on ``patches.classes``; a class the model never saw gets 0.

    Softmax over the model's classes for single-label patches, sigmoid per class for multi-label ones.
    """
    model, config = load_classifier(model_dir, torch.device("cpu"))
    stats = BandStats.from_dict(config["normalization"])
    channels = [patches.bands.index(b) for b in config["bands"]]
    x = normalise(patches.x[index:index + 1, channels], patches.valid[index:index + 1], stats)  # (1, C, H, W)
    logits = predict_logits(model, x, torch.device("cpu"))[0]  # (K_model,)
    probability = torch.sigmoid(logits) if config["multi_label"] else torch.softmax(logits, dim=0)
    scores = np.zeros(len(patches.classes))  # (K,)
    for name, p in zip(config["classes"], probability.tolist()):
        scores[patches.classes.index(name)] = p
    return scores


def loo_value(patches: PatchSet, scores: np.ndarray) -> float:
    """Accuracy (single-label) or micro mAP (multi-label) of pooled held-out scores (N, K)."""
    if patches.multi_label:
        return micro_map(scores, patches.y)
    return float((scores.argmax(axis=1) == patches.y).mean())


def prior_scores(patches: PatchSet) -> np.ndarray:
    """Leave-one-out class frequencies (N, K): each patch scored by how often each class occurs in the others."""
    y = np.asarray(patches.y, dtype=np.float64)  # (N, K) multi-hot
    return (y.sum(axis=0, keepdims=True) - y) / (len(y) - 1)  # (N, K)


def run_split(task: Task, patches: PatchSet, encoder: Path | None, mode: str, seed: int,
              args: argparse.Namespace, out: Path) -> dict:
    """The command's own seeded split: its validation score and how many patches it was measured on."""
    run = out / slug(task.folder, "swimdiff" if encoder else "random", mode, f"s{seed}")
    config = train(Path(args.data) / "classification" / task.folder, run, encoder, MODES[mode], seed,
                   args.val_fraction, args)
    (run / WEIGHTS).unlink(missing_ok=True)
    metrics = config["metrics"]
    return {"value": metrics["micro_map" if patches.multi_label else "accuracy"], "val_patches": metrics["patches"],
            "seconds": config["provenance"]["seconds"]}


def run_loo(task: Task, patches: PatchSet, encoder: Path | None, mode: str, seed: int,
            args: argparse.Namespace, out: Path) -> dict:
    """Leave-one-out: one model per patch, trained on the others; the score of the pooled held-out predictions."""
    scores, seconds = np.zeros((len(patches), len(patches.classes))), 0.0  # (N, K)
    for fold in range(len(patches)):
        run = out / slug(task.folder, "swimdiff" if encoder else "random", mode, f"s{seed}", f"loo{fold}")
        saved = run / "heldout.json"
        if not saved.exists():
            shutil.rmtree(run, ignore_errors=True)
            data = subset_folder(patches, np.setdiff1d(np.arange(len(patches)), [fold]), out / "subsets" / run.name)
            train(data, run, encoder, MODES[mode], seed, 0.0, args)
            saved.write_text(json.dumps({"patch": patches.sources[fold],
                                         "scores": heldout_scores(run, patches, fold).tolist()}))
        seconds += finished_run(run, encoder, args)["provenance"]["seconds"]
        (run / WEIGHTS).unlink(missing_ok=True)
        scores[fold] = json.loads(saved.read_text())["scores"]
    return {"value": loo_value(patches, scores), "val_patches": len(patches), "seconds": round(seconds, 1),
            "scores": scores.tolist()}


def mean_std(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"**{statistics.mean(values):.3f}**{spread}"


def table(results: dict, epochs: int, encoder: Path) -> str:
    """Markdown: one row per task and arm, one column per seed, mean ± sample std over seeds."""
    seeds = sorted({int(s) for task in results.values() for arm in task["arms"].values() for s in arm})
    lines = ["| sample | arm | validation patches per run | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean ± std |", "|---|---|---:|" + "---:|" * (len(seeds) + 1)]
    for name, task in results.items():
        for arm, runs in task["arms"].items():
            cells = [f"{runs[str(s)]['value']:.3f}" if str(s) in runs else "–" for s in seeds]
            patches = ", ".join(sorted({str(r["val_patches"]) for r in runs.values()}))
            lines.append(f"| {name} ({task['metric']}) | {arm} | {patches}{' (LOO)' if task['loo'] else ''} | "
                         + " | ".join(cells) + f" | {mean_std([r['value'] for r in runs.values()])} |")
        if task.get("prior") is not None:
            lines.append(f"| {name} ({task['metric']}) | {PRIOR} | {task['patches']} (LOO) | "
                         + " | ".join("" for _ in seeds) + f" | {task['prior']:.3f} |")
    return "\n".join(lines) + (f"\n\n{epochs} epochs, batch 32, AdamW (1e-2 linear probe, 3e-4 fine-tuning), flips "
                               f"and 90° rotations; SwiMDiff encoder {encoder}; ± is the sample std over seeds.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-classify"))
    parser.add_argument("--encoder", default=None, metavar="DIR", help="an existing 'swimdiff pretrain' folder")
    parser.add_argument("--encoder-out", default=str(REPO / "runs" / "bench-classify-encoder"),
                        help="where to pre-train the encoder without --encoder (reused if present)")
    parser.add_argument("--pretrain-steps", type=int, default=1500, help="steps of that pre-training")
    parser.add_argument("--epochs", type=int, default=20, help="classifier epochs, every arm")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the split runs (rgb_100)")
    parser.add_argument("--loo-seeds", default="0,1", help="seeds of the leave-one-out runs (6 trainings each)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held-out share per class in split runs")
    parser.add_argument("--tasks", default=",".join(t.folder for t in TASKS), help="which samples")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads; on shared cores a second one mostly adds synchronisation to these small "
                             "batches (10-40x slower under load, see tests/test_landcover_training.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("core.landcover.training").setLevel(logging.ERROR)  # leave-one-out trains without a split
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    encoder = pretrain(args)
    results: dict[str, dict] = {}
    for task in (t for t in TASKS if t.folder in args.tasks.split(",")):
        patches = load_patches(Path(args.data) / "classification" / task.folder)
        loo = task.protocol == "loo"
        entry = results[task.name] = {"metric": task.metric, "loo": loo, "patches": len(patches),
                                      "classes": len(patches.classes), "bands": list(patches.bands),
                                      "encoder": str(encoder), "arms": {},
                                      "prior": loo_value(patches, prior_scores(patches)) if patches.multi_label
                                      else None}
        for seed in (int(s) for s in (args.loo_seeds if loo else args.seeds).split(",")):
            for name in ENCODERS:
                for mode in MODES:
                    run = (run_loo if loo else run_split)(task, patches, encoder if name == "SwiMDiff" else None,
                                                          mode, seed, args, out)
                    entry["arms"].setdefault(f"{name}, {mode}", {})[str(seed)] = run
                    print(f"{task.name:24s} {name:11s} {mode:12s} seed {seed}: {task.metric} {run['value']:.3f} "
                          f"on {run['val_patches']} patches ({run['seconds']:.0f} s)", flush=True)
                    (out / "bench-classify.json").write_text(json.dumps(results, indent=2))  # partial results
                    (out / "bench-classify.md").write_text(table(results, args.epochs, encoder))
    shutil.rmtree(out / "subsets", ignore_errors=True)
    print(table(results, args.epochs, encoder))
    print(f"{time.perf_counter() - started:.0f} s; results in {out}/bench-classify.md")


if __name__ == "__main__":
    main()
