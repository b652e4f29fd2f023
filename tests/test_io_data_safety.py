"""Nothing lost, nothing silently wrong (issue 11): full disks, outputs that are inputs, interrupted runs.

A full disk is tested for real on a small tmpfs where the test may mount one (root), and always with an
injected fault: GDAL closing a file without an error although it wrote nothing, the way a full disk
looked to the old code (exit 0, a 0-byte file renamed over the good output).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.io import DatasetWriter
from rasterio.windows import Window
from safetensors import SafetensorError

import core.checkpoint as checkpoint
from conftest import (
    BadInput,
    check_bad_input,
    forest_sea_raster,
    make_rgb_classes,
    run_cli,
    smooth_field,
    write_geotiff,
)
from core.checkpoint import atomic_write, atomic_write_text, load_model, load_train_state, save_model
from core.errors import OutputError
from core.io import writer
from core.io.output_paths import refuse_inputs_as_outputs
from core.io.raster import Grid
from core.io.writer import AtomicGeoTiff, OutputGroup, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]
BANDS = ["B02", "B03", "B04", "B08"]
MODELS: dict[str, Path] = {}  # the ``classifier`` fixture's model, for the argv builders of the tables
MODEL_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]  # oscd-change


# --- inputs -------------------------------------------------------------------------------------------

def make_pair(folder: Path, names: list[str] = BANDS, size: int = 64) -> tuple[Path, Path]:
    """t1.tif and t2.tif: named bands, a planted change."""
    rng = np.random.default_rng(0)
    t1 = smooth_field(rng, len(names), size)
    t2 = t1.copy()
    t2[:, 10:30, 20:44] += 900
    return (write_geotiff(folder / "t1.tif", t1, descriptions=names),
            write_geotiff(folder / "t2.tif", t2, descriptions=names))


def make_band_folder(folder: Path, seed: int = 1) -> Path:
    """A Sentinel-2 style folder of single-band files T_B02.tif ... T_B08.tif."""
    folder.mkdir()
    data = smooth_field(np.random.default_rng(seed), len(BANDS), 64)
    for i, band in enumerate(BANDS):
        write_geotiff(folder / f"T_{band}.tif", data[i:i + 1], nodata=None)
    return folder


def cva(folder: Path, out: str = "change.tif", probability: str | None = None, t1: str = "t1.tif",
        t2: str = "t2.tif", make: bool = True) -> list[str]:
    if make:
        make_pair(folder)
    extra = ["--probability", str(folder / probability)] if probability else []
    return ["detect", "--method", "cva", "--t1", str(folder / t1), "--t2", str(folder / t2),
            "--out", str(folder / out), *extra]


def linked(folder: Path, name: str, target: str, hard: bool = False) -> str:
    (os.link if hard else os.symlink)(folder / target, folder / name)
    return name


def classify(folder: Path, out: str = "map.tif", probabilities: str | None = None, raster: str = "scene.tif",
             model: str | Path | None = None) -> list[str]:
    """``classify`` argv (by default with the tiny classifier of the ``classifier`` fixture)."""
    extra = ["--probabilities", str(folder / probabilities)] if probabilities else []
    return ["classify", "--raster", str(folder / raster), "--model", str(model or MODELS["rgb"]),
            "--out", str(folder / out), "--device", "cpu", *extra]


def scene(folder: Path) -> Path:
    return forest_sea_raster(folder / "scene.tif")


def out_is_t1_through_a_symlink(d: Path) -> list[str]:
    make_pair(d)
    return cva(d, out=linked(d, "link.tif", "t1.tif"), make=False)


def probability_is_t2_through_a_hard_link(d: Path) -> list[str]:
    make_pair(d)
    return cva(d, probability=linked(d, "hard.tif", "t2.tif", hard=True), make=False)


def out_is_a_band_file_of_a_t1_folder(d: Path) -> list[str]:
    make_band_folder(d / "t1")
    make_band_folder(d / "t2", seed=2)
    return cva(d, out="t1/T_B03.tif", t1="t1", t2="t2", make=False)


def with_model(method: str, out: str = "change.tif", probability: str | None = None) -> Callable[[Path], list[str]]:
    """``detect --method model|features`` with the shipped model on a 12-band pair (refused before it loads)."""
    def argv(d: Path) -> list[str]:
        make_pair(d, MODEL_BANDS)
        return [*cva(d, out=out, probability=probability, make=False), "--method", method, "--device", "cpu"]
    return argv


def classify_scene(**kwargs: Any) -> Callable[[Path], list[str]]:
    def argv(d: Path) -> list[str]:
        scene(d)
        if kwargs.get("probabilities") == "p.tif":
            linked(d, "p.tif", "scene.tif")
        return classify(d, **kwargs)
    return argv


def classify_band_folder(d: Path) -> list[str]:
    make_band_folder(d / "bands")
    return [*classify(d, raster="bands", out="bands/T_B04.tif"), "--value-scale", "uint8"]


# --- outputs that are inputs: refused before any work ----------------------------------------------------

REFUSED = [
    BadInput("detect_out_is_t1", lambda d: cva(d, out="t1.tif"), 2, "--out '", unchanged=("t1.tif", "t2.tif")),
    BadInput("detect_probability_is_t2", lambda d: cva(d, probability="t2.tif"), 2, "input file of --t2",
             absent=("change.tif",), unchanged=("t1.tif", "t2.tif")),
    BadInput("detect_out_is_t1_through_a_symlink", out_is_t1_through_a_symlink, 2, "input file of --t1",
             unchanged=("t1.tif",)),
    BadInput("detect_probability_is_t2_through_a_hard_link", probability_is_t2_through_a_hard_link, 2,
             "input file of --t2", absent=("change.tif",), unchanged=("t2.tif", "hard.tif")),
    BadInput("detect_probability_is_out", lambda d: cva(d, out="c.tif", probability="c.tif"), 2,
             "same file as --out", absent=("c.tif",)),
    BadInput("detect_out_is_a_band_file_of_a_t1_folder", out_is_a_band_file_of_a_t1_folder, 2,
             "input file of --t1", unchanged=("t1/T_B03.tif",)),
    BadInput("detect_model_out_is_t2", with_model("model", out="t2.tif"), 2, "input file of --t2",
             unchanged=("t2.tif",)),
    BadInput("detect_features_probability_is_t1", with_model("features", probability="t1.tif"), 2,
             "input file of --t1", absent=("change.tif",), unchanged=("t1.tif",)),
    BadInput("classify_out_is_raster", classify_scene(out="scene.tif"), 2, "input file of --raster",
             unchanged=("scene.tif",)),
    BadInput("classify_probabilities_is_raster_through_a_symlink", classify_scene(probabilities="p.tif"), 2,
             "--probabilities", absent=("map.tif",), unchanged=("scene.tif",)),
    BadInput("classify_probabilities_is_out", classify_scene(probabilities="map.tif"), 2, "same file as --out",
             absent=("map.tif",)),
    BadInput("classify_out_is_a_band_file_of_a_folder_raster", classify_band_folder, 2, "input file of --raster",
             unchanged=("bands/T_B04.tif",)),
]


def mkfifo(folder: Path, name: str) -> list[str]:
    """Make a named pipe (no arguments to add)."""
    os.mkfifo(folder / name)
    return []


# a pipe stands in for a device such as /dev/null: as root, renaming the temporary onto it replaced the device
NOT_FILES = [
    BadInput("detect_out_is_a_pipe", lambda d: [*cva(d, out="pipe"), *mkfifo(d, "pipe")], 2, "not a regular file"),
    BadInput("classify_probabilities_is_a_pipe",
             lambda d: [*classify_scene(probabilities="pipe")(d), *mkfifo(d, "pipe")], 2, "not a regular file",
             absent=("map.tif",)),
]


@pytest.mark.parametrize("case", NOT_FILES, ids=[c.id for c in NOT_FILES])
def test_an_output_that_is_a_device_or_pipe_is_refused(case, tmp_path, classifier, capsys) -> None:
    MODELS["rgb"] = classifier
    check_bad_input(case, tmp_path / "case", capsys)
    assert stat.S_ISFIFO(os.stat(tmp_path / "case" / "pipe").st_mode)


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_an_output_that_is_an_input_is_refused_before_any_work(case, tmp_path, classifier, capsys) -> None:
    MODELS["rgb"] = classifier
    error = check_bad_input(case, tmp_path / "case", capsys)
    assert error["kind"] == "OutputError"
    assert "choose another output file name" in error["message"] or "its own file name" in error["message"]


def test_refuse_inputs_as_outputs_compares_resolved_paths(tmp_path) -> None:
    a = tmp_path / "a.tif"
    a.write_bytes(b"a")
    (tmp_path / "sub").mkdir()
    refuse_inputs_as_outputs({"--out": tmp_path / "b.tif", "--probability": None}, {"--t1": [a]})
    with pytest.raises(OutputError, match=r"--out '.*sub/\.\./a\.tif' is an input file of --t1"):
        refuse_inputs_as_outputs({"--out": tmp_path / "sub" / ".." / "a.tif"}, {"--t1": [a]})
    with pytest.raises(OutputError, match="--probability '.*x.tif' is the same file as --out"):
        refuse_inputs_as_outputs({"--out": tmp_path / "x.tif", "--probability": tmp_path / "sub/../x.tif"}, {})


# --- a full disk: the previous output stays, exit 2, the folder named -------------------------------------

def fill(folder: Path) -> None:
    """Write zeros into ``folder`` until its disk is full."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error


ARMED = {"fault": False}  # the injected fault (see the ``disk`` fixture) acts only once the case armed it


def disk_full(folder: Path) -> None:
    ARMED["fault"] = True
    if os.path.ismount(folder):
        fill(folder)


def rerun_when_full(argv: list[str], folder: Path) -> list[str]:
    """Run ``argv`` once (a good output), then make the disk full, and return ``argv`` for the run under test."""
    from core.cli import main

    assert main([*argv, "--events", "none"]) == 0, "the first (good) run failed"
    disk_full(folder)
    return argv


DISK_FULL = [
    BadInput("detect_mask", lambda d: rerun_when_full(cva(d), d), 2, "no space left on",
             unchanged=("change.tif",)),
    BadInput("detect_mask_and_probability", lambda d: rerun_when_full(cva(d, probability="prob.tif"), d), 2,
             "no space left on", unchanged=("change.tif", "prob.tif")),
    BadInput("classify_map_and_probabilities",
             lambda d: rerun_when_full(classify_scene(probabilities="prob.tif", model=MODELS["rgb"])(d), d), 2,
             "no space left on", unchanged=("map.tif", "prob.tif")),
]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A tiny linear-probe classifier of generated Forest/Sea patches (as in test_landcover_mapping.py)."""
    from core.config import ClassifyConfig
    from core.landcover.training import finetune_classify

    root = tmp_path_factory.mktemp("classifier")
    data = make_rgb_classes(root / "data", per_class=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    finetune_classify(data, root / "model", ClassifyConfig(linear_probe=True, epochs=1, batch_size=8,
                                                           val_fraction=0.25, device="cpu"))
    torch.set_num_threads(threads)
    return root / "model"


def mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.name != "posix" or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, tmp_path, monkeypatch) -> Iterator[Path]:
    """A folder whose disk becomes full when a case calls :func:`disk_full`: a real 2 MB tmpfs, or an
    injected fault (GDAL closes without an error but the file is empty; 0 bytes left on the disk)."""
    folder = tmp_path / "disk"
    ARMED["fault"] = False
    if request.param == "tmpfs":
        if not mount_tmpfs(folder, "2m"):
            pytest.skip("cannot mount a tmpfs here (needs root)")
        yield folder
        unmount(folder)
        return
    close = DatasetWriter.close

    def close_writing_nothing(self) -> None:
        close(self)
        if ARMED["fault"]:
            os.truncate(self.name, 0)

    real_usage = writer.shutil.disk_usage
    monkeypatch.setattr(DatasetWriter, "close", close_writing_nothing)
    monkeypatch.setattr(writer.shutil, "disk_usage",
                        lambda p: real_usage(p)._replace(free=0) if ARMED["fault"] else real_usage(p))
    folder.mkdir()
    yield folder


@pytest.mark.parametrize("case", DISK_FULL, ids=[c.id for c in DISK_FULL])
def test_a_full_disk_keeps_the_previous_output_and_says_so(case, disk, classifier, capsys) -> None:
    MODELS["rgb"] = classifier
    error = check_bad_input(case, disk, capsys)
    assert error["kind"] == "OutputError"
    assert f"no space left on '{disk}'" in error["message"] and "choose another folder" in error["message"]


# --- the writers, with injected faults -----------------------------------------------------------------

GRID = Grid(rasterio.crs.CRS.from_epsg(32631), rasterio.transform.from_origin(500000, 4600000, 10, 10), 300, 260)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tif(path: Path) -> AtomicGeoTiff:
    return AtomicGeoTiff(path, GRID, 1, "uint8", 255)


def write_whole(out: AtomicGeoTiff, value: int) -> None:
    out.write(np.full((GRID.height, GRID.width), value, np.uint8), Window(0, 0, GRID.width, GRID.height))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def test_a_good_geotiff_is_verified_and_renamed(tmp_path) -> None:
    with tif(tmp_path / "a.tif") as out:
        write_whole(out, 7)
        assert out.tmp.name.startswith(f".a.tif.{os.getpid()}.") and out.tmp.exists()
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert ds.read(1).min() == ds.read(1).max() == 7 and ds.block_shapes == [(256, 256)]
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("fault", ["empty", "truncated", "gdal_error", "enospc_on_write"])
def test_a_failed_write_keeps_the_previous_file(fault, tmp_path, monkeypatch) -> None:
    (tmp_path / "a.tif").write_bytes(b"the good old output")
    close = DatasetWriter.close

    def faulty_close(self) -> None:
        close(self)
        if fault == "empty":
            os.truncate(self.name, 0)
        elif fault == "truncated":
            os.truncate(self.name, os.path.getsize(self.name) - 100)
        elif fault == "gdal_error":  # what rasterio's handler does with a CE_Failure GDAL does not raise
            logging.getLogger("rasterio._err").info("GDAL signalled an error: err_no=1, msg=%r",
                                                    "TIFFWriteDirectoryTagData:IO error writing tag data")

    def enospc(self, *args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DatasetWriter, "close", faulty_close)
    if fault == "enospc_on_write":
        monkeypatch.setattr(DatasetWriter, "write", enospc)
    with pytest.raises(OutputError) as caught, tif(tmp_path / "a.tif") as out:
        write_whole(out, 3)
    message = str(caught.value)
    if fault == "enospc_on_write":
        assert message.startswith(f"no space left on '{tmp_path}' while writing 'a.tif'")
    else:
        assert message.startswith(f"cannot write '{tmp_path / 'a.tif'}'") and "choose another" in message
    if fault == "gdal_error":
        assert "IO error writing tag data" in message
    assert (tmp_path / "a.tif").read_bytes() == b"the good old output"
    assert hidden(tmp_path) == []


def test_a_group_renames_nothing_when_one_file_fails(tmp_path, monkeypatch) -> None:
    for name in ("a.tif", "b.tif"):
        (tmp_path / name).write_bytes(name.encode())
    close = DatasetWriter.close

    def close_b_empty(self) -> None:
        close(self)
        if ".b.tif." in self.name:
            os.truncate(self.name, 0)

    monkeypatch.setattr(DatasetWriter, "close", close_b_empty)
    with pytest.raises(OutputError, match="b.tif"), OutputGroup() as group:
        first, second = group.add(tif(tmp_path / "a.tif")), group.add(tif(tmp_path / "b.tif"))
        write_whole(first, 1)
        write_whole(second, 2)
    assert (tmp_path / "a.tif").read_bytes() == b"a.tif" and (tmp_path / "b.tif").read_bytes() == b"b.tif"
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("where", ["open", "close"])
def test_a_second_ctrl_c_still_removes_the_temporary(where, tmp_path, monkeypatch) -> None:
    """KeyboardInterrupt lands right after GDAL created the file, or right after it closed it."""
    if where == "open":
        real_open = rasterio.open

        def open_then_interrupt(*args, **kwargs):
            real_open(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(writer.rasterio, "open", open_then_interrupt)
    else:
        close = DatasetWriter.close

        def close_then_interrupt(self) -> None:
            close(self)
            raise KeyboardInterrupt

        monkeypatch.setattr(DatasetWriter, "close", close_then_interrupt)
    with pytest.raises(KeyboardInterrupt), OutputGroup() as group:
        out = group.add(tif(tmp_path / "a.tif"))
        write_whole(out, 1)
        raise KeyboardInterrupt  # the second Ctrl-C; the first asked to stop
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not writer.LIVE_TEMPORARIES


# --- stale temporaries of killed runs ------------------------------------------------------------------

def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_temporaries_of_gone_processes_are_removed(tmp_path) -> None:
    out = tmp_path / "change.tif"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead": f".change.tif.{dead_pid()}.0123abcd.tmp", "alive": f".change.tif.{alive.pid}.0123abcd.tmp",
                 "own": f".change.tif.{os.getpid()}.0123abcd.tmp", "old_legacy": ".change.tif.k2x_9q0a.tmp",
                 "new_legacy": ".change.tif.3fa0c1d2.tmp", "other_output": f".prob.tif.{dead_pid()}.0123abcd.tmp"}
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        hour_ago = time.time() - 2 * writer.LEGACY_AGE
        os.utime(tmp_path / names["old_legacy"], (hour_ago, hour_ago))
        removed = remove_stale_temporaries(out)
    finally:
        alive.kill()
        alive.wait()
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["old_legacy"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["alive"], names["own"], names["new_legacy"], names["other_output"]])


KILLED_WRITER = """
import sys, time, numpy as np
from pathlib import Path
from typing import Any
from rasterio.windows import Window
sys.path.insert(0, {repo!r})
from core.io.writer import AtomicGeoTiff
from core.change.pair import open_pair
pair = open_pair({t1!r}, {t2!r})
with AtomicGeoTiff(Path({out!r}), pair.grid, 1, "uint8", 255) as out:
    out.write(np.zeros((pair.grid.height, pair.grid.width), np.uint8), Window(0, 0, pair.grid.width, pair.grid.height))
    print(out.tmp, flush=True)
    time.sleep(120)
"""


def start_writer(t1: Path, t2: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    code = KILLED_WRITER.format(repo=str(REPO), t1=str(t1), t2=str(t2), out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def test_a_run_removes_what_a_killed_run_left_but_not_a_live_runs_file(tmp_path, capsys, caplog) -> None:
    caplog.set_level(logging.INFO, logger="core.io.writer")
    t1, t2 = make_pair(tmp_path)
    killed, killed_tmp = start_writer(t1, t2, tmp_path / "change.tif")
    live, live_tmp = start_writer(t1, t2, tmp_path / "change.tif")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed_tmp.is_file() and live_tmp.is_file()  # what SIGKILL leaves: the old code never removed it
        code, events = run_cli(cva(tmp_path, make=False), capsys)
        assert code == 0, events
        assert not killed_tmp.exists() and live_tmp.is_file()
        assert f"removed '{killed_tmp}', a partial file left by an interrupted run" in caplog.text
    finally:
        live.kill()
        live.wait()


def test_double_ctrl_c_on_the_command_line_leaves_nothing(tmp_path) -> None:
    """A real run: Ctrl-C asks to stop, a second one interrupts; no hidden file is left either way."""
    rng = np.random.default_rng(0)
    t1 = smooth_field(rng, 4, 1024)
    write_geotiff(tmp_path / "t1.tif", t1, descriptions=BANDS)
    write_geotiff(tmp_path / "t2.tif", t1[::-1].copy(), descriptions=BANDS)
    argv = [sys.executable, "-m", "core.cli", *cva(tmp_path, probability="prob.tif", make=False), "--tile", "64"]
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".prob.tif.*.tmp")) and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert child.poll() is None, "the run ended before it wrote anything; make the raster larger"
    child.send_signal(signal.SIGINT)
    time.sleep(0.002)  # the second lands while the first unwinds (or, on a busy machine, once it is done)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode in (130, -signal.SIGINT), stderr  # -SIGINT: it came while Python was exiting
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.tif", "t2.tif"]


def test_a_second_ctrl_c_while_a_stopped_run_reports_exits_without_a_traceback(tmp_path, monkeypatch) -> None:
    """The window the real run above can hit by chance: the first Ctrl-C stopped the job, the second lands
    while the command line is reporting the stop (after the job restored Python's own Ctrl-C handler)."""
    from core import cli
    from core.commands import detect
    from core.errors import Cancelled
    from core.events import Reporter

    def stopped(args: Any, reporter: Any) -> dict:
        raise Cancelled("cva cancelled; nothing was written")

    def second_ctrl_c(self: Any, kind: str, message: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(detect, "_run_detect", stopped)
    monkeypatch.setattr(Reporter, "error", second_ctrl_c)
    assert cli.main(cva(tmp_path, make=True)) == 130


# --- checkpoints, reports, JSON: the same promise ------------------------------------------------------

def test_atomic_write_reports_a_full_disk_and_keeps_the_previous_file(tmp_path) -> None:
    path = tmp_path / "scores.json"
    atomic_write_text(path, '{"f1": 0.5}')

    def no_space(tmp: Path) -> None:
        tmp.write_bytes(b"{")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=f"no space left on '{tmp_path}' while writing 'scores.json'"):
        atomic_write(path, no_space)
    with pytest.raises(OutputError, match="is empty after writing"):
        atomic_write(path, lambda tmp: tmp.write_bytes(b""))
    assert json.loads(path.read_text()) == {"f1": 0.5} and hidden(tmp_path) == []


def test_a_model_folder_is_written_whole_or_not_at_all(tmp_path, monkeypatch) -> None:
    save_model(tmp_path, {"w": torch.ones(3)}, {"kind": "test"})
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    real_save = checkpoint.save_file

    def truncated(tensors, filename, metadata=None) -> None:
        real_save(tensors, filename, metadata=metadata)
        os.truncate(filename, os.path.getsize(filename) - 8)

    monkeypatch.setattr(checkpoint, "save_file", truncated)
    with pytest.raises(OutputError, match="cannot write .*model.safetensors.*not fully covered"):
        save_model(tmp_path, {"w": torch.zeros(3)}, {"kind": "test"})

    def no_space(tensors, filename, metadata=None) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", no_space)
    with pytest.raises(OutputError, match=f"no space left on '{tmp_path}'"):
        save_model(tmp_path, {"w": torch.zeros(3)}, {"kind": "test"})
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    monkeypatch.setattr(checkpoint, "_text_job", lambda path, text: (path, lambda tmp: None, checkpoint._not_empty))
    with pytest.raises(OutputError, match="config.json"):  # the weights were fine: they are not renamed either
        save_model(tmp_path, {"w": torch.zeros(3)}, {"kind": "test"})
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before
    weights, config = load_model(tmp_path, kind="test")
    assert torch.equal(weights["w"], torch.ones(3)) and config["kind"] == "test"


def test_a_cut_plot_or_a_csv_on_a_full_disk_is_not_renamed(tmp_path, monkeypatch) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from core.history import plot_losses, read_csv, write_csv

    rows = [{"step": 1.0, "loss": 1.0, "loss_contrastive": 0.5, "loss_diffusion": 0.5, "accuracy": 0.25,
             "negatives": 4.0, "lr": 1e-3, "seconds": 1.0}]
    plot_losses(tmp_path / "loss.png", rows, "run")
    write_csv(tmp_path / "history.csv", rows)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    savefig = Figure.savefig

    def cut(self, fname, **kwargs) -> None:
        savefig(self, fname, **kwargs)
        os.truncate(fname, os.path.getsize(fname) - 20)

    monkeypatch.setattr(Figure, "savefig", cut)
    with pytest.raises(OutputError, match="not a complete PNG"):
        plot_losses(tmp_path / "loss.png", rows * 2, "run")
    assert plt.get_fignums() == []  # the figure is closed all the same

    def no_space(self, data) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(OutputError, match=f"no space left on '{tmp_path}' while writing 'history.csv'"):
        write_csv(tmp_path / "history.csv", rows * 2)
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before and read_csv(tmp_path / "history.csv") == rows


PRETRAIN = ["pretrain", "--arch", "resnet10t", "--batch-size", "4", "--patch-size", "32", "--queue-size", "32",
            "--log-every", "1", "--num-workers", "0", "--device", "cpu"]


@pytest.fixture
def scene_folder(tmp_path) -> Path:
    folder = tmp_path / "scene"
    folder.mkdir()
    for i in range(2):
        write_geotiff(folder / f"date_{i}.tif", smooth_field(np.random.default_rng(i), 3, 64),
                      descriptions=["B02", "B03", "B04"])
    return folder


def test_a_full_disk_during_pretraining_keeps_the_last_checkpoint(scene_folder, tmp_path, capsys) -> None:
    """Step 1's checkpoint fits, step 2's does not: one clear error, exit 2, step 1's state intact."""
    out = tmp_path / "run"
    if not mount_tmpfs(out, "1g"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, events = run_cli([*PRETRAIN, "--data", str(scene_folder), "--out", str(out), "--steps", "1"], capsys)
        assert code == 0, events[-3:]
        state = (out / "train_state.safetensors").stat().st_size
        used = sum(p.stat().st_size for p in out.iterdir())
        size_kb = (used + state // 2) // 1024
        assert subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(out)]).returncode == 0
        before = digest(out / "train_state.safetensors")
        code, events = run_cli([*PRETRAIN, "--data", str(scene_folder), "--out", str(out), "--steps", "2",
                                "--resume"], capsys)
        assert code == 2
        errors = [e for e in events if e["event"] == "error"]
        assert len(errors) == 1 and errors[0]["kind"] == "OutputError", events[-3:]
        assert errors[0]["message"].startswith(f"no space left on '{out}' while writing 'train_state.safetensors'")
        assert not [e for e in events if e["event"] == "result"] and "Traceback" not in capsys.readouterr().err
        assert digest(out / "train_state.safetensors") == before and hidden(out) == []
        assert load_train_state(out)[1]["step"] == 1
    finally:
        unmount(out)


def test_pretraining_reports_a_failed_checkpoint_write_with_exit_2(scene_folder, tmp_path, monkeypatch,
                                                                   capsys) -> None:
    """Injected: the second checkpoint's write fails for want of space; the first stays loadable."""
    real_save, calls = checkpoint.save_file, []

    def second_fails(tensors, filename, metadata=None) -> None:
        calls.append(filename)
        if len(calls) == 2:
            real_save(tensors, filename, metadata=metadata)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", second_fails)
    out = tmp_path / "run"
    code, events = run_cli([*PRETRAIN, "--data", str(scene_folder), "--out", str(out), "--steps", "2",
                            "--checkpoint-every", "1"], capsys)
    assert code == 2
    assert events[-1]["event"] == "error" and events[-1]["message"].startswith(f"no space left on '{out}'")
    assert load_train_state(out)[1]["step"] == 1 and hidden(out) == []
