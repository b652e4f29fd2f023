"""The worker launcher: events, errors, cancel and interpreter choice, with fake interpreters (no QGIS)."""

from __future__ import annotations

import ast
import json
import os
import shlex
import stat
import sys
import time
from pathlib import Path

import pytest

from swimdiff_qgis import worker
from swimdiff_qgis.environment import SETUP_HINT
from swimdiff_qgis.worker import WorkerError, remove_partial_outputs, run_worker, worker_command, worker_python

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake interpreters are shell scripts")


def fake_python(path: Path, body: str) -> Path:
    """An executable shell script that stands in for the worker interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def event(**fields: object) -> str:
    """A shell line that prints one JSON event."""
    return f"echo {shlex.quote(json.dumps(fields))}"


def test_worker_command_appends_the_events_flag() -> None:
    assert worker_command(Path("/venv/bin/python"), "detect", ["--t1", "a.tif", "--tile", 64]) == [
        "/venv/bin/python", "-m", "core.cli", "detect", "--t1", "a.tif", "--tile", "64", "--events", "jsonl"
    ]


def test_run_worker_follows_every_event_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/leak")
    monkeypatch.setenv("QGIS_PREFIX_PATH", "/leak")
    python = fake_python(tmp_path / "python", "\n".join([
        'echo "{\\"event\\": \\"log\\", \\"level\\": \\"info\\", \\"message\\": \\"args=$* cwd=$(pwd) '
        'pythonpath=${PYTHONPATH:-unset} qgis=${QGIS_PREFIX_PATH:-unset}\\"}"',
        event(event="progress", fraction=0.25, message="band statistics"),
        "echo 'a stray line that is not JSON'",
        event(event="metric", step=5, name="loss", value=1.5),
        event(event="metric", step=5, name="lr", value=0.001),
        event(event="progress", fraction=1.7, message="done"),
        event(event="log", level="warning", message="t2 was warped"),
        event(event="result", outputs={"change": "/out/change.tif", "threshold": 0.5}),
    ]))
    progress: list[tuple[float, str]] = []
    metrics: list[tuple[int, dict[str, float]]] = []
    logs: list[tuple[str, str]] = []

    run = run_worker("detect", ["--t1", "a.tif"], python=python, cwd=tmp_path,
                     on_progress=lambda *a: progress.append(a), on_metric=lambda *a: metrics.append(a),
                     on_log=lambda *a: logs.append(a))

    assert run.outputs == {"change": "/out/change.tif", "threshold": 0.5}
    assert run.exit_code == 0
    assert progress == [(0.25, "band statistics"), (1.0, "done")]  # fractions clamped to [0, 1]
    assert metrics == run.metrics == [(5, {"loss": 1.5}), (5, {"lr": 0.001})]
    assert logs == [
        ("info", f"args=-m core.cli detect --t1 a.tif --events jsonl cwd={tmp_path} pythonpath=unset qgis=unset"),
        ("warning", "t2 was warped"),
    ]


def test_a_user_error_keeps_the_workers_kind_and_plain_message(tmp_path: Path) -> None:
    message = "model expects 13 bands but 'b.tif' has 4; choose a matching raster"
    python = fake_python(tmp_path / "python", "\n".join([
        event(event="error", kind="BandMismatchError", message=message), "exit 2"]))

    with pytest.raises(WorkerError) as caught:
        run_worker("detect", [], python=python, cwd=tmp_path)

    error = caught.value
    assert (error.kind, error.message, str(error), error.exit_code) == ("BandMismatchError", message, message, 2)
    assert error.user_error and not error.cancelled


def test_a_crash_names_the_interpreter_and_the_last_stderr_line(tmp_path: Path) -> None:
    python = fake_python(tmp_path / "python", 'echo "Traceback ..." >&2\necho "No module named torch" >&2\nexit 1')

    with pytest.raises(WorkerError) as caught:
        run_worker("pretrain", [], python=python, cwd=tmp_path)

    error = caught.value
    assert error.kind == "WorkerCrashed" and error.exit_code == 1 and not error.user_error
    assert error.message == f"the worker ({python} -m core.cli pretrain) ended with exit code 1: No module named torch"
    assert error.details == "Traceback ...\nNo module named torch"


def test_success_without_a_result_is_an_error(tmp_path: Path) -> None:
    python = fake_python(tmp_path / "python", event(event="progress", fraction=1.0, message="done"))
    with pytest.raises(WorkerError, match="ended without a result") as caught:
        run_worker("detect", [], python=python, cwd=tmp_path)
    assert caught.value.kind == "NoResult"


def test_a_missing_interpreter_is_a_start_error_that_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "python"
    with pytest.raises(WorkerError) as caught:
        run_worker("detect", [], python=missing, cwd=tmp_path)
    assert caught.value.kind == "WorkerStartError"
    assert str(missing) in caught.value.message and "make setup" in caught.value.message


def test_cancel_terminates_a_worker_that_stops_cleanly(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    python = fake_python(tmp_path / "python", "\n".join([
        f"echo $$ > {pid_file}",
        f"on_term() {{ {event(event='error', kind='Cancelled', message='stopped')}; exit 2; }}",
        "trap on_term TERM",
        event(event="progress", fraction=0.1, message="tile 1"),
        "while :; do sleep 0.05; done",
    ]))
    progress: list[float] = []
    started = time.monotonic()

    with pytest.raises(WorkerError) as caught:
        run_worker("detect", [], python=python, cwd=tmp_path, on_progress=lambda f, _m: progress.append(f),
                   should_stop=lambda: bool(progress), grace=20)

    assert time.monotonic() - started < 10  # ended by SIGTERM, not by the grace period
    assert caught.value.cancelled and caught.value.kind == "Cancelled" and not caught.value.user_error
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_cancel_kills_a_worker_that_ignores_terminate_and_removes_its_partial_output(tmp_path: Path) -> None:
    out = tmp_path / "change.tif"
    partial = tmp_path / ".change.tif.$$.0badc0de.tmp"  # named with the worker's pid, as core's writers do
    finished = tmp_path / "other.tif"
    finished.write_text("a complete output stays")
    pid_file = tmp_path / "pid"
    python = fake_python(tmp_path / "python", "\n".join([
        f"echo $$ > {pid_file}", "trap '' TERM", f"echo partial > {partial}",
        event(event="progress", fraction=0.1, message="tile 1"), "while :; do sleep 0.05; done",
    ]))
    stop = [False]

    with pytest.raises(WorkerError) as caught:
        run_worker("detect", [], python=python, cwd=tmp_path, on_progress=lambda *_: stop.__setitem__(0, True),
                   should_stop=lambda: stop[0], output_files=[out, finished], grace=0.5)

    assert caught.value.cancelled and caught.value.exit_code == worker.EXIT_CANCELLED
    assert list(tmp_path.glob(".change.tif.*.tmp")) == [] and not out.exists()
    assert finished.read_text() == "a complete output stays"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_remove_partial_outputs_leaves_other_files(tmp_path: Path) -> None:
    (tmp_path / ".a.tif.1234.tmp").write_text("partial")
    (tmp_path / ".b.tif.1234.tmp").write_text("another output's")
    (tmp_path / "a.tif").write_text("complete")
    remove_partial_outputs([tmp_path / "a.tif", tmp_path / "missing" / "c.tif"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.tif.1234.tmp", "a.tif"]


def test_remove_partial_outputs_of_one_worker_leaves_a_concurrent_runs_file(tmp_path: Path) -> None:
    (tmp_path / ".a.tif.1234.0123abcd.tmp").write_text("the killed worker's")
    (tmp_path / ".a.tif.5678.4567cdef.tmp").write_text("another run's, still writing")
    remove_partial_outputs([tmp_path / "a.tif"], pid=1234)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.tif.5678.4567cdef.tmp"]


def test_worker_python_prefers_the_variable_then_the_setting_then_the_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(worker.PYTHON_VARIABLE, raising=False)
    with pytest.raises(WorkerError) as caught:
        worker_python(None, plugin_dir=tmp_path)
    assert caught.value.kind == "WorkerMissing"
    hint = SETUP_HINT.format(plugin_dir=tmp_path)  # what fixes it, as the plugin says it everywhere
    assert f"{tmp_path}/.venv/bin/python is missing; {hint}" in caught.value.message

    venv = fake_python(tmp_path / ".venv" / "bin" / "python", "exit 0")
    assert worker_python("", plugin_dir=tmp_path) == venv
    assert worker_python("/opt/conda/bin/python", plugin_dir=tmp_path) == Path("/opt/conda/bin/python")
    monkeypatch.setenv(worker.PYTHON_VARIABLE, "/usr/local/bin/python3")
    assert worker_python("/opt/conda/bin/python", plugin_dir=tmp_path) == Path("/usr/local/bin/python3")


def test_worker_module_uses_only_the_standard_library() -> None:
    tree = ast.parse(Path(worker.__file__).read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name.split(".")[0] for name in imported} <= set(sys.stdlib_module_names) | {"__future__"}
