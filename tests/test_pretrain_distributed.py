"""Pre-training under torchrun: 2 CPU processes with gloo share one queue; rank 0 alone writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.checkpoint import load_model, load_train_state

REPO = Path(__file__).resolve().parents[1]


def test_two_process_gloo_pretraining(make_geotiff, tmp_path) -> None:
    for i in range(2):
        make_geotiff(f"d{i}.tif", bands=3, size=64, seed=i, descriptions=["B02", "B03", "B04"])
    out = tmp_path / "ddp"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "core.cli",
         "pretrain", "--data", str(tmp_path / "d0.tif"), str(tmp_path / "d1.tif"), "--out", str(out), "--steps", "3",
         "--batch-size", "4", "--patch-size", "32", "--queue-size", "64", "--num-workers", "0", "--device", "cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    _, config = load_model(out)
    assert config["provenance"]["world_size"] == 2
    tensors, meta = load_train_state(out)
    assert meta["step"] == 3
    # 3 steps x 4 patches x 2 ranks: every rank's keys (and scene ids) went into the queue
    assert int(tensors["model.queue_ptr"]) == 24
    queued = tensors["model.queue_scene"]  # scene ids are places: the small test rasters lie in one ground cell
    assert (queued[:24] == queued[0]).all() and queued[0] >= 0 and (queued[24:] == -1).all()
    assert run.stderr.count("finished 3/3 steps") == 1  # rank 1 stays quiet
