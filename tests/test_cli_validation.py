"""Command-line validation (devices, outputs, resume, corrupt images), honest evaluation, and method defects:
per-rank diffusion noise, batch norm never given a single value, a usable model when pre-training stops."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BadInput, check_bad_input, make_oscd, make_rgb_classes, run_cli, smooth_field, write_geotiff
from core.change.training import CHANGE_KIND
from core.checkpoint import load_model, save_model
from core.cli import user_os_error
from core.config import LossConfig, ModelConfig, TrainConfig, resume_conflicts
from core.io.normalization import BandStats
from core.models.siamese import SiameseUNet
from core.models.swimdiff import SwiMDiff
from core.pretrain.distributed import DistInfo, rank_seed, seed_rank

TINY = ["--patch-size", "32", "--queue-size", "32", "--log-every", "1", "--num-workers", "0"]
OSCD = ("B02", "B03", "B04", "B08")


def scene(folder: Path) -> Path:
    """Three dated 3-band rasters of one place (64 x 64 px)."""
    (folder / "scene").mkdir(exist_ok=True)
    for i in range(3):
        write_geotiff(folder / "scene" / f"date_{i}.tif", smooth_field(np.random.default_rng(i), 3, 64),
                      descriptions=["B02", "B03", "B04"])
    return folder / "scene"


def pretrain_argv(folder: Path, *extra: str, out: str = "out", steps: str = "2", batch: str = "4") -> list[str]:
    return ["pretrain", "--data", str(scene(folder)), "--out", str(folder / out), "--steps", steps,
            "--batch-size", batch, *TINY, *extra]


def change_model(folder: Path, train_cities: list[str], val_cities: list[str] = (),  # type: ignore[assignment]
                 test_cities: list[str] | None = None) -> Path:
    """A random-weight change model whose provenance records its training, validation (and test) cities."""
    torch.manual_seed(0)
    model = SiameseUNet("resnet18", len(OSCD))
    stats = BandStats(OSCD, (1000.0,) * 4, (300.0,) * 4)
    config = {"kind": CHANGE_KIND, "architecture": {"arch": "resnet18", "in_chans": 4,
                                                    "decoder_channels": [128, 64, 48, 32]},
              "bands": list(OSCD), "normalization": stats.to_dict(), "patch_size": 32, "threshold": 0.5,
              "metrics": {"test_cities": test_cities} if test_cities else {},
              "provenance": {"train_cities": train_cities, "val_cities": list(val_cities)}}
    save_model(folder / "change", model.state_dict(), config)
    return folder / "change"


def trained_state(folder: Path) -> list[str]:
    """A finished 2-step pre-training in folder/out (batch 4, patch 32, lr 1e-3); returns the run's argv."""
    argv = pretrain_argv(folder)
    assert run_quiet(argv) == 0
    return argv


def run_quiet(argv: list[str]) -> int:
    from core.cli import main

    return main(argv)


def corrupt_jpg_classes(folder: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("Forest", "Sea")):
        (folder / "data" / name).mkdir(parents=True)
        for i in range(3):
            rgb = (40 + 90 * k + rng.normal(0, 8, (32, 32, 3))).clip(0, 255).astype("uint8")
            Image.fromarray(rgb).save(folder / "data" / name / f"{name}_{i}.jpg")
    good = (folder / "data" / "Forest" / "Forest_0.jpg").read_bytes()
    (folder / "data" / "Forest" / "Forest_0.jpg").write_bytes(good[:300])  # header kept, scan data cut
    return folder / "data"


def fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe")
    return str(folder / "pipe")


def replace_arg(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


def resumed(change: tuple[str, str]) -> BadInput:
    """A row: resume a finished 2-step run for 4 steps with ``option`` changed to ``value``."""
    option, value = change

    def argv(folder: Path) -> list[str]:
        run = replace_arg(trained_state(folder), "--steps", "4")
        return [*(replace_arg(run, option, value) if option in run else [*run, option, value]), "--resume"]

    return BadInput(f"resume_changed{option.replace('-', '_')}", argv, 2, f"{option}: was",
                    unchanged=("out/config.json", "out/train_state.safetensors"))


CASES = [
    # --device: one clear line naming the value and the allowed ones, for every command
    BadInput("pretrain_unknown_device", lambda f: pretrain_argv(f, "--device", "cudax"), 2,
             "--device='cudax' is invalid: use auto, cpu, cuda or cuda:N", absent=("out",)),
    BadInput("device_unknown_name", lambda f: ["device", "--device", "gpu0"], 2,
             "--device 'gpu0' is unknown; use auto, cpu, cuda or cuda:N"),
    BadInput("evaluate_unknown_device", lambda f: ["evaluate", "--data", str(make_oscd(f / "oscd")), "--method", "cva",
                                                   "--device", "tpu"], 2, "--device 'tpu' is unknown"),
    BadInput("finetune_change_unknown_device",
             lambda f: ["finetune-change", "--data", str(make_oscd(f / "oscd")), "--out", str(f / "m"),
                        "--cities", "alpha", "--device", "cuda0"], 2, "--device='cuda0' is invalid", absent=("m",)),
    BadInput("finetune_change_share_out_of_range",
             lambda f: ["finetune-change", "--data", str(make_oscd(f / "oscd")), "--out", str(f / "m"),
                        "--cities", "alpha", "--change-share", "1.5"], 2, "--change-share 1.5 is out of range",
             absent=("m",)),
    BadInput("classify_unknown_device",
             lambda f: ["finetune-classify", "--data", str(make_rgb_classes(f / "data")), "--out", str(f / "m"),
                        "--device", "cudax"], 2, "--device='cudax' is invalid", absent=("m",)),
    # outputs under special or unusable paths
    BadInput("pretrain_out_under_dev_null", lambda f: replace_arg(pretrain_argv(f), "--out", "/dev/null/x"), 2,
             "under '/dev/null', which is a file"),
    BadInput("pretrain_out_under_proc", lambda f: replace_arg(pretrain_argv(f), "--out", "/proc/swimdiff-x"), 2,
             "'/proc' refuses new files"),
    BadInput("pretrain_out_is_a_file",
             lambda f: replace_arg(pretrain_argv(f), "--out", str(f / "scene" / "date_0.tif")), 2,
             "is a file, not a folder", unchanged=("scene/date_0.tif",)),
    BadInput("finetune_change_out_under_file",
             lambda f: ["finetune-change", "--data", str(make_oscd(f / "oscd")), "--out", "/dev/null/m",
                        "--cities", "alpha"], 2, "--out '/dev/null/m'"),
    BadInput("classify_out_under_proc",
             lambda f: ["finetune-classify", "--data", str(make_rgb_classes(f / "data")), "--out", "/proc/m"], 2,
             "--out '/proc/m' cannot be written"),
    BadInput("evaluate_json_under_file",
             lambda f: ["evaluate", "--data", str(make_oscd(f / "oscd")), "--method", "cva", "--json",
                        "/dev/null/x/s.json"], 2, "--json '/dev/null/x/s.json'"),
    # a pipe stands in for a device such as /dev/null, which the old code (root, os.replace) replaced by a file
    BadInput("evaluate_json_is_a_pipe",
             lambda f: ["evaluate", "--data", str(make_oscd(f / "oscd")), "--method", "cva", "--json", fifo(f)],
             2, "not a regular file"),
    BadInput("evaluate_json_is_a_folder",
             lambda f: ["evaluate", "--data", str(make_oscd(f / "oscd")), "--method", "cva", "--json", str(f)],
             2, "is a folder"),
    BadInput("evaluate_report_under_file",
             lambda f: ["evaluate", "--data", str(make_oscd(f / "oscd")), "--method", "cva", "--report",
                        "/dev/null/report"], 2, "--report '/dev/null/report'"),
    # a corrupt image in a classification folder
    BadInput("classify_corrupt_jpg",
             lambda f: ["finetune-classify", "--data", str(corrupt_jpg_classes(f)), "--out", str(f / "m")], 2,
             "Forest_0.jpg' is not a readable image", absent=("m",), unchanged=("data/Forest/Forest_1.jpg",)),
    # a model's training cities are not pooled into its score without a flag
    BadInput("evaluate_training_city",
             lambda f: ["evaluate", "--data", str(make_oscd(f / "oscd")), "--model",
                        str(change_model(f, ["alpha", "beta"])), "--cities", "gamma,alpha"], 2,
             "--cities: alpha trained model", absent=("s.json",)),
    BadInput("evaluate_nothing_held_out",
             lambda f: ["evaluate", "--data", str(make_oscd(f / "oscd", cities=("alpha",))), "--model",
                        str(change_model(f, ["alpha"]))], 2, "pass --include-training-cities"),
    # --resume with settings that change what the run is
    *[resumed(change) for change in (("--batch-size", "3"), ("--patch-size", "48"), ("--lr", "0.01"),
                                     ("--seed", "7"), ("--swm-alpha", "0.2"))],
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: BadInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_bad_input(case, tmp_path / "case", capsys)


def test_cuda_asked_for_without_a_gpu_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    for argv in (lambda f: pretrain_argv(f, "--device", "cuda"), lambda f: ["device", "--device", "cuda:0"]):
        check_bad_input(BadInput("no_gpu", argv, 2, "no CUDA GPU is available here; use --device cpu or auto",
                                 absent=("out",)), tmp_path / "case", capsys)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system (tmpfs mounted ro); skipped where mounting is refused."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


READ_ONLY_CASES = [
    BadInput("pretrain", lambda f: replace_arg(pretrain_argv(f), "--out", str(f / "ro" / "model")), 2,
             "refuses new files (Read-only file system)"),
    BadInput("finetune_change", lambda f: ["finetune-change", "--data", str(make_oscd(f / "oscd")), "--out",
                                           str(f / "ro" / "m"), "--cities", "alpha"], 2, "Read-only file system"),
    BadInput("finetune_classify", lambda f: ["finetune-classify", "--data", str(make_rgb_classes(f / "data")),
                                             "--out", str(f / "ro" / "m")], 2, "Read-only file system"),
    BadInput("evaluate_json", lambda f: ["evaluate", "--data", str(make_oscd(f / "oscd")), "--method", "cva",
                                         "--json", str(f / "ro" / "s.json")], 2, "--json"),
]


@pytest.mark.parametrize("case", READ_ONLY_CASES, ids=[c.id for c in READ_ONLY_CASES])
def test_read_only_outputs_are_refused_before_any_work(case: BadInput, read_only: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    check_bad_input(case, read_only.parent, capsys)


def test_evaluate_json_is_checked_before_scoring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_oscd(tmp_path / "oscd")
    code, events = run_cli(["evaluate", "--data", str(root), "--method", "cva", "--json", "/dev/null/s.json"],
                           capsys)
    assert code == 2 and not [e for e in events if e["event"] == "progress"]  # failed before scoring a city


# ---- the OSError safety net of core/cli.py ----

def test_user_os_error_names_the_file_and_keeps_other_errors_as_bugs() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/model.safetensors")
    assert user_os_error(full) == ("cannot write '/data/out/model.safetensors': the disk is full: free some space or "
                                   "choose another output location (No space left on device)")
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.EROFS, "Read-only file system", "/mnt/x")
    assert "'/mnt/x'" in (user_os_error(wrapped) or "") and "read-only" in (user_os_error(wrapped) or "")
    assert "cannot access '/etc/x'" in (user_os_error(PermissionError(errno.EACCES, "denied", "/etc/x")) or "")
    assert user_os_error(FileNotFoundError(errno.ENOENT, "missing", "/x")) is None  # a bug: stays a bug
    assert user_os_error(ValueError("bug")) is None


def test_cli_turns_an_escaping_disk_full_error_into_one_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import core.checkpoint

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(core.checkpoint, "atomic_write_text", full)
    root = make_oscd(tmp_path / "oscd", cities=("alpha",))
    code, events = run_cli(["evaluate", "--data", str(root), "--method", "cva", "--json", str(tmp_path / "s.json")],
                           capsys)
    error = [e for e in events if e["event"] == "error"][-1]
    assert code == 2 and error["kind"] == "OutputError" and str(tmp_path / "s.json") in error["message"]

    def bug(path: Path, text: str) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(core.checkpoint, "atomic_write_text", bug)
    code, events = run_cli(["evaluate", "--data", str(root), "--method", "cva", "--json", str(tmp_path / "s.json")],
                           capsys)
    assert code == 1 and [e for e in events if e["event"] == "error"][-1]["kind"] == "InternalError"


# ---- --resume: harmless changes are allowed ----

def test_resume_may_add_steps_and_change_logging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = trained_state(tmp_path)
    more = [*replace_arg(replace_arg(argv, "--steps", "3"), "--log-every", "2"), "--checkpoint-every", "5",
            "--resume"]
    code, events = run_cli(more, capsys)
    assert code == 0, events[-1]
    _, config = load_model(tmp_path / "out")
    assert config["train"]["steps"] == 3 and config["train"]["batch_size"] == 4 and config["patch_size"] == 32
    assert config["provenance"]["steps_done"] == 3 and config["provenance"]["complete"] is True


def test_resume_conflicts_name_the_option_and_both_values() -> None:
    saved = {"train": TrainConfig(batch_size=4, steps=2).to_dict(), "loss": LossConfig().to_dict(),
             "run": {"world_size": 2, "scenes": ["a"]}}
    now = {"train": TrainConfig(batch_size=8, steps=9, log_every=1, device="cpu").to_dict(),
           "loss": LossConfig(temperature=0.1).to_dict(), "run": {"world_size": 1, "scenes": ["a"]}}
    assert resume_conflicts(saved, now) == ["--batch-size: was 4, now 8", "--temperature: was 0.2, now 0.1",
                                            "processes (torchrun --nproc_per_node): was 2, now 1"]
    assert resume_conflicts(saved, saved) == []


# ---- evaluation never pools a model's training cities by default ----

def test_evaluate_defaults_to_held_out_cities_and_labels_every_score(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = make_oscd(tmp_path / "oscd")
    model = change_model(tmp_path, ["alpha"], ["beta"])
    code, events = run_cli(["evaluate", "--data", str(root), "--model", str(model), "--json",
                            str(tmp_path / "s.json")], capsys)
    assert code == 0, events[-1]
    scores = json.loads((tmp_path / "s.json").read_text())
    assert list(scores["cities"]) == ["gamma"] and scores["cities"]["gamma"]["role"] == "held-out"
    assert scores["held_out"] is True and scores["training_cities"] == ["alpha"] and "pooled_held_out" not in scores
    assert events[-1]["outputs"]["held_out"] is True and events[-1]["outputs"]["pooled_over"] == ["gamma"]


def test_evaluate_prefers_the_recorded_test_cities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_oscd(tmp_path / "oscd")
    model = change_model(tmp_path, ["alpha"], test_cities=["beta"])
    code, events = run_cli(["evaluate", "--data", str(root), "--model", str(model)], capsys)
    assert code == 0 and events[-1]["outputs"]["pooled_over"] == ["beta"]


def test_evaluate_with_training_cities_says_so_and_adds_the_held_out_score(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    root = make_oscd(tmp_path / "oscd")
    model = change_model(tmp_path, ["alpha", "beta"])
    code, events = run_cli(["evaluate", "--data", str(root), "--model", str(model), "--include-training-cities",
                            "--json", str(tmp_path / "s.json"), "--report", str(tmp_path / "report")], capsys)
    assert code == 0, events[-1]
    scores = json.loads((tmp_path / "s.json").read_text())
    assert {k: v["role"] for k, v in scores["cities"].items()} == {"alpha": "training", "beta": "training",
                                                                  "gamma": "held-out"}
    assert scores["held_out"] is False and scores["pooled_held_out"] == {
        k: v for k, v in scores["cities"]["gamma"].items() if k != "role"}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| alpha (training city) |" in report and "NOT held out" in report and "| gamma |" in report
    assert "2 of them training cities of the model (alpha, beta): NOT held out" in caplog.text


def test_cva_scores_every_labelled_city(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_oscd(tmp_path / "oscd")
    code, events = run_cli(["evaluate", "--data", str(root), "--method", "cva"], capsys)
    assert code == 0 and events[-1]["outputs"]["pooled_over"] == ["alpha", "beta", "gamma"]


# ---- method defects ----

def tiny_swimdiff(**model: object) -> SwiMDiff:
    torch.manual_seed(0)
    return SwiMDiff(ModelConfig(in_chans=3, queue_size=16, proj_hidden=32, proj_dim=16, denoiser_channels=(8, 16),
                                **model), LossConfig())  # type: ignore[arg-type]


def test_two_ranks_draw_different_diffusion_noise() -> None:
    model = tiny_swimdiff()
    x0 = torch.zeros(4, 3, 32, 32)
    draws = []
    for rank in (0, 1, 0):
        seed_rank(0, rank)
        draws.append(model.draw_noise(x0))
    (eps0, t0), (eps1, t1), (eps0_again, t0_again) = draws
    assert not torch.allclose(eps0, eps1) and not torch.equal(t0, t1)
    assert torch.equal(eps0, eps0_again) and torch.equal(t0, t0_again)  # still reproducible per rank
    assert rank_seed(0, 1) != rank_seed(0, 0) != rank_seed(1, 0) and rank_seed(0, 1, 5) != rank_seed(0, 1)


def test_prepare_run_seeds_each_rank_after_building_the_same_model(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without real DDP: prepare_run as rank 0 and rank 1 of 2 gives equal weights but different random draws."""
    import core.pretrain.training
    from core.config import DataConfig

    data = DataConfig(paths=(str(scene(tmp_path)),), patch_size=32, num_workers=0)
    draws, weights = [], []
    for rank in (0, 1):
        monkeypatch.setattr(core.pretrain.training, "init_distributed", lambda name, r=rank: DistInfo(r, 2, 0))
        run = core.pretrain.training.prepare_run(data, ModelConfig(queue_size=16), LossConfig(),
                                                 TrainConfig(steps=2, device="cpu"), tmp_path / "out", False, (),
                                                 lambda fraction, message: None)
        draws.append(torch.randn(8))
        weights.append(run.model.encoder_q.state_dict())
    assert not torch.allclose(draws[0], draws[1])
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_key_batch_norm_groups_never_hold_one_sample() -> None:
    model = tiny_swimdiff(key_bn_splits=3)
    assert [model.key_groups(n) for n in (2, 3, 4, 5, 6, 7, 64)] == [1, 1, 2, 2, 3, 3, 3]
    model.train()
    x = torch.randn(3, 3, 32, 32)  # batch 3 at 32 px: the last stage is 1x1, a group of one crashed
    out = model(x, x + 0.1, torch.zeros(3, dtype=torch.long))
    assert torch.isfinite(out.loss)


def test_batch_three_at_32_px_pretrains(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        caplog: pytest.LogCaptureFixture) -> None:
    code, events = run_cli(pretrain_argv(tmp_path, batch="3"), capsys)
    assert code == 0, events[-1]
    assert "--batch-size 3 is too small for 2 key batch-norm groups" in caplog.text


def test_a_stopped_pretraining_leaves_a_usable_model_and_says_it_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    import core.commands.pretrain
    from core.commands.common import StopOnSignal

    class StopAtOnce(StopOnSignal):
        def __call__(self) -> bool:
            return True

    monkeypatch.setattr(core.commands.pretrain, "StopOnSignal", StopAtOnce)
    code, events = run_cli(pretrain_argv(tmp_path, steps="50"), capsys)
    assert code == 0, events[-1]
    outputs = events[-1]["outputs"]
    assert outputs["stopped"] is True and outputs["complete"] is False and outputs["steps_done"] == 1
    assert "stopped after 1 of 50 steps" in caplog.text and "usable, not finished" in caplog.text
    _, config = load_model(tmp_path / "out")
    assert config["provenance"]["steps_done"] == 1 and config["provenance"]["complete"] is False
    # the folder loads as an encoder for change detection
    root = make_oscd(tmp_path / "oscd")
    code, events = run_cli(["finetune-change", "--data", str(root), "--encoder", str(tmp_path / "out"), "--out",
                            str(tmp_path / "change"), "--cities", "alpha", "--val-cities", "beta", "--steps", "2",
                            "--batch-size", "2", "--patch-size", "32", "--eval-every", "2"], capsys)
    assert code == 0, events[-1]
    assert load_model(tmp_path / "change", kind=CHANGE_KIND)[1]["bands"] == ["B02", "B03", "B04"]


def _stop_vote(rank: int, world: int, store: str, results: str) -> None:
    import torch.distributed as dist

    from core.pretrain.distributed import any_rank

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        votes = [any_rank(rank == 1, torch.device("cpu")), any_rank(False, torch.device("cpu"))]
        Path(f"{results}.{rank}").write_text(json.dumps(votes))
    finally:
        dist.destroy_process_group()


def test_a_stop_asked_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    """Real gloo, 2 processes: rank 1 alone asks to stop; both ranks see it (no rank left waiting in a step)."""
    import torch.multiprocessing as mp

    from core.pretrain.distributed import any_rank

    assert any_rank(True, torch.device("cpu")) is True and any_rank(False, torch.device("cpu")) is False
    mp.spawn(_stop_vote, args=(2, str(tmp_path / "store"), str(tmp_path / "votes")), nprocs=2, join=True)
    assert [json.loads((tmp_path / f"votes.{r}").read_text()) for r in (0, 1)] == [[True, False], [True, False]]
