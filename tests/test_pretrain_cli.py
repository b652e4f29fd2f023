"""``swimdiff pretrain`` end to end on generated rasters: outputs, events, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.checkpoint import load_model, load_train_state
from core.cli import main
from core.config import LossConfig, ModelConfig
from core.history import read_csv
from core.models.swimdiff import SwiMDiff

REPO = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "4", "--patch-size", "32", "--queue-size", "32", "--log-every", "1", "--num-workers", "0"]


def swimdiff(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def scene(make_geotiff, tmp_path) -> Path:
    (tmp_path / "scene").mkdir()
    for i in range(3):
        make_geotiff(f"scene/date_{i}.tif", bands=3, size=64, seed=i, descriptions=["B02", "B03", "B04"])
    return tmp_path / "scene"


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_pretrain_writes_a_loadable_model_and_reports_jsonl(scene, tmp_path) -> None:
    out = tmp_path / "model"
    run = swimdiff("pretrain", "--data", str(scene), "--out", str(out), "--steps", "4", *TINY, "--events", "jsonl")
    assert run.returncode == 0, run.stderr + run.stdout
    stream = events(run.stdout)
    kinds = [e["event"] for e in stream]
    assert kinds[-1] == "result" and "metric" in kinds and "progress" in kinds
    fractions = [e["fraction"] for e in stream if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {e["name"] for e in stream if e["event"] == "metric"} >= {"loss", "loss_contrastive", "loss_diffusion"}
    assert any("CPU" in e.get("message", "") for e in stream)  # the device is shown
    outputs = stream[-1]["outputs"]
    assert Path(outputs["weights"]).is_file() and Path(outputs["plot"]).read_bytes()[:4] == b"\x89PNG"

    weights, config = load_model(out)
    assert config["bands"] == ["B02", "B03", "B04"] and config["patch_size"] == 32
    assert len(config["normalization"]["mean"]) == 3 and min(config["normalization"]["std"]) > 0
    assert config["provenance"]["steps_done"] == 4 and config["provenance"]["scenes"][0]["name"] == "scene"
    model = SwiMDiff(ModelConfig.from_dict(config["architecture"]), LossConfig.from_dict(config["loss"]))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert unexpected == [] and all(not k.startswith(("encoder_q.", "head_q.", "denoiser.")) for k in missing)
    rows = read_csv(out / "history.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in rows)
    assert not list(out.glob(".*.tmp"))


def test_resume_after_a_kill_matches_an_uninterrupted_run(scene, tmp_path) -> None:
    killed = tmp_path / "killed"
    args = ["--data", str(scene), "--steps", "6", "--checkpoint-every", "2", *TINY]
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "pretrain", "--out", str(killed), *args,
                             "--steps", "400"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "train_state.safetensors").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()  # killed before the end: no final model
    # Continue the same run to 6 steps: the state knows where it was.
    _, meta = load_train_state(killed)
    assert meta["step"] >= 2
    resumed = swimdiff("pretrain", "--out", str(killed), "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr
    _, config = load_model(killed)
    assert config["provenance"]["steps_done"] == 6
    assert [r["step"] for r in read_csv(killed / "history.csv")] == [1, 2, 3, 4, 5, 6]
    assert not list(killed.glob(".*.tmp"))


def test_sigterm_saves_a_resumable_checkpoint(scene, tmp_path) -> None:
    out = tmp_path / "cancelled"
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "pretrain", "--data", str(scene), "--out", str(out),
                             "--steps", "400", "--checkpoint-every", "1000", *TINY, "--events", "jsonl"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for training to be under way
        if '"metric"' in line:
            break
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    result = events(stdout)[-1]
    assert result["event"] == "result" and result["outputs"]["stopped"] is True
    _, meta = load_train_state(out)
    assert 1 <= meta["step"] < 400 and meta["step"] == result["outputs"]["steps_done"]
    _, config = load_model(out)  # a usable model of the stop step, marked incomplete
    assert config["provenance"]["steps_done"] == meta["step"] and config["provenance"]["complete"] is False


def test_resume_is_deterministic(scene, tmp_path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["--data", str(scene), "--checkpoint-every", "2", *TINY]
    assert swimdiff("pretrain", "--out", str(straight), "--steps", "4", *args).returncode == 0
    assert swimdiff("pretrain", "--out", str(split), "--steps", "2", *args).returncode == 0
    run = swimdiff("pretrain", "--out", str(split), "--steps", "4", "--resume", *args)
    assert run.returncode == 0, run.stderr
    a, _ = load_model(straight)
    b, _ = load_model(split)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert [r["step"] for r in read_csv(split / "history.csv")] == [1, 2, 3, 4]


@pytest.mark.parametrize("case", ["not_a_raster", "resume_without_state", "patch_too_large", "crs_mismatch",
                                  "missing_band", "all_nodata"])
def test_bad_input_fails_clearly_and_writes_nothing(case, make_geotiff, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    good = make_geotiff("good.tif", bands=3, size=64)
    extra: list[str] = []
    if case == "not_a_raster":
        data, expect = [str(tmp_path / "a.tif")], "a.tif"
        (tmp_path / "a.tif").write_text("hello")
    elif case == "resume_without_state":
        data, expect, extra = [str(good)], "--resume", ["--resume"]
    elif case == "patch_too_large":
        data, expect, extra = [str(good)], "--patch-size 128", ["--patch-size", "128"]
    elif case == "crs_mismatch":
        data, expect = [str(good), str(make_geotiff("utm32.tif", bands=3, size=64, crs="EPSG:32632"))], "utm32.tif"
    elif case == "missing_band":
        data, expect, extra = [str(good)], "B08", ["--bands", "B08"]
    else:
        data, expect = [str(make_geotiff("empty.tif", bands=3, size=64, fill=0))], "empty.tif"
    code = main(["pretrain", "--data", *data, "--out", str(out), "--steps", "2", "--events", "jsonl", *extra])
    stdout = capsys.readouterr().out
    assert code == 2, stdout
    error = events(stdout)[-1]
    assert error["event"] == "error" and error["kind"].endswith("Error")
    assert expect in error["message"], error["message"]
    assert not out.exists()


def test_existing_model_is_not_overwritten_silently(scene, tmp_path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{}")
    run = swimdiff("pretrain", "--data", str(scene), "--out", str(out), "--steps", "1", *TINY)
    assert run.returncode == 2 and "--overwrite" in run.stderr
    assert (out / "config.json").read_text() == "{}"


def test_help_states_defaults() -> None:
    run = swimdiff("pretrain", "--help")
    assert run.returncode == 0
    for text in ("--steps", "default: 1000", "--batch-size", "default: 64", "--swm-alpha", "default: 0.5",
                 "--lambda-diffusion", "--device", "default: auto", "--resume", "--events"):
        assert text in run.stdout or text in swimdiff("--help").stdout, text
