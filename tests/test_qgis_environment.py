"""Worker environment discovery and checks (standard library only, no QGIS needed)."""

from __future__ import annotations

import ast
import stat
import sys
from pathlib import Path

import pytest

from swimdiff_qgis import environment
from swimdiff_qgis.environment import check_worker, clean_environment, find_worker_python, worker_status

POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="fake interpreters are shell scripts")


def make_fake_python(path: Path, body: str) -> Path:
    """Write an executable shell script that stands in for an interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_clean_environment_drops_leaking_variables_and_keeps_the_rest() -> None:
    env = {
        "PYTHONHOME": "/usr",
        "PYTHONPATH": "/usr/share/qgis/python",
        "GDAL_DATA": "/usr/share/gdal",
        "PROJ_LIB": "/usr/share/proj",
        "PROJ_DATA": "/usr/share/proj",
        "QGIS_PREFIX_PATH": "/usr",
        "QGIS_CUSTOM_CONFIG_PATH": "/tmp/q",
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/analyst",
        "CUDA_VISIBLE_DEVICES": "0",
        "MY_QGIS_NOTE": "kept: QGIS_ is only dropped as a prefix",
    }
    cleaned = clean_environment(env)
    assert cleaned == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/analyst",
        "CUDA_VISIBLE_DEVICES": "0",
        "MY_QGIS_NOTE": "kept: QGIS_ is only dropped as a prefix",
    }
    assert env["PYTHONPATH"] == "/usr/share/qgis/python"  # the input is not modified


def test_find_worker_python_without_venv_returns_none(tmp_path: Path) -> None:
    assert find_worker_python(tmp_path) is None


@POSIX_ONLY
def test_find_worker_python_returns_the_venv_interpreter_unresolved(tmp_path: Path) -> None:
    real = make_fake_python(tmp_path / "real" / "python3", "exit 0")
    link = tmp_path / ".venv" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    assert find_worker_python(tmp_path) == link


@POSIX_ONLY
def test_find_worker_python_ignores_a_file_that_is_not_executable(tmp_path: Path) -> None:
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("not a program")
    python.chmod(0o644)
    assert find_worker_python(tmp_path) is None


def test_check_worker_reports_a_missing_interpreter(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "python"
    ok, message = check_worker(missing, cwd=tmp_path)
    assert ok is False
    assert message == (f"worker interpreter {missing} does not exist; click Set up SwiMDiff environment… on the "
                       f"SwiMDiff toolbar or in Raster › SwiMDiff (in a terminal: `make setup` in {tmp_path})")


@POSIX_ONLY
def test_check_worker_runs_the_cli_with_a_clean_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/leak/python")
    monkeypatch.setenv("QGIS_PREFIX_PATH", "/leak/qgis")
    monkeypatch.setenv("SWIMDIFF_TEST_KEPT", "kept")
    python = make_fake_python(
        tmp_path / "fake-python",
        'echo "swimdiff 0.1.0 args=$* cwd=$(pwd) kept=$SWIMDIFF_TEST_KEPT'
        ' pythonpath=${PYTHONPATH:-unset} qgis=${QGIS_PREFIX_PATH:-unset}"',
    )
    ok, text = check_worker(python, cwd=tmp_path)
    assert ok is True
    assert text == (
        f"swimdiff 0.1.0 args=-m core.cli --version cwd={tmp_path} kept=kept pythonpath=unset qgis=unset"
    )


@POSIX_ONLY
def test_check_worker_reports_a_failing_cli_with_its_last_error_lines(tmp_path: Path) -> None:
    python = make_fake_python(
        tmp_path / "fake-python", 'echo "Traceback ..." >&2\necho "No module named torch" >&2\nexit 1'
    )
    ok, message = check_worker(python, cwd=tmp_path)
    assert ok is False
    assert "exit code 1" in message
    assert message.splitlines()[-1] == "No module named torch"
    assert str(python) in message


@POSIX_ONLY
def test_check_worker_gives_up_after_the_timeout(tmp_path: Path) -> None:
    python = make_fake_python(tmp_path / "fake-python", "exec sleep 30")
    ok, message = check_worker(python, timeout=0.5, cwd=tmp_path)
    assert ok is False
    assert "did not answer within 0.5 s" in message


@POSIX_ONLY
def test_worker_status_names_the_interpreter_and_the_version(tmp_path: Path) -> None:
    assert worker_status(tmp_path) == (
        False,
        f"No worker Python environment: {tmp_path}/.venv/bin/python is missing; click Set up SwiMDiff "
        f"environment… on the SwiMDiff toolbar or in Raster › SwiMDiff (in a terminal: `make setup` in {tmp_path})",
    )  # a ZIP user is pointed to the plugin's own action before a terminal
    python = make_fake_python(tmp_path / ".venv" / "bin" / "python", 'echo "swimdiff 0.1.0"')
    assert worker_status(tmp_path) == (True, f"Worker Python {python} works: swimdiff 0.1.0")


@POSIX_ONLY
def test_worker_status_checks_the_configured_interpreter_instead_of_the_venv(tmp_path: Path) -> None:
    make_fake_python(tmp_path / ".venv" / "bin" / "python", 'echo "swimdiff 0.1.0 (venv)"')
    configured = make_fake_python(tmp_path / "elsewhere" / "python", 'echo "swimdiff 0.1.0 (configured)"')
    source = "the SwiMDiff/workerPython setting"

    assert worker_status(tmp_path, python=configured, source=source) == (
        True, f"Worker Python {configured} (from {source}) works: swimdiff 0.1.0 (configured)")

    broken = make_fake_python(tmp_path / "broken" / "python", 'echo "No module named torch" >&2\nexit 1')
    ok, message = worker_status(tmp_path, python=broken, source=source)
    assert (ok, message.splitlines()) == (False, [
        f"Worker Python {broken} (from {source}) does not work: {broken} -m core.cli --version failed with exit "
        f"code 1; correct {source}, or clear it to use {tmp_path}/.venv",  # a new .venv would not be used
        "No module named torch"])
    missing = tmp_path / "nowhere" / "python"
    assert worker_status(tmp_path, python=missing, source=source) == (
        False, f"Worker Python {missing} (from {source}) does not work: worker interpreter {missing} does not "
        f"exist; correct {source}, or clear it to use {tmp_path}/.venv")


def test_environment_module_uses_only_the_standard_library() -> None:
    tree = ast.parse(Path(environment.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    top_level = {name.split(".")[0] for name in imported}
    assert top_level <= set(sys.stdlib_module_names) | {"__future__"}, top_level
