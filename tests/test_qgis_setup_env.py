"""Creating the worker environment (swimdiff_qgis/setup_env.py) with a fake interpreter: no network, no pip.

The fake "python" is a shell script: ``-m venv DIR`` copies itself to ``DIR/bin/python``, ``-m pip`` prints
pip-like lines (and fails, hangs or waits for a signal file when the environment asks it to), ``-m core.cli
--version`` prints a version, ``-c`` prints the version asked in ``FAKE_VERSION``. It logs every call.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from swimdiff_qgis.setup_env import (
    SetupError,
    create_environment,
    find_base_python,
    probe_python,
    run_step,
    setup_commands,
)

FAKE_PYTHON = r"""#!/bin/sh
echo "$0 $*" >> "$FAKE_CALLS"
case "$1" in
  -c) [ -n "$FAKE_PROBE_ERROR" ] && { echo "$FAKE_PROBE_ERROR" >&2; exit 1; }; echo "${FAKE_VERSION:-3.11}";;
  -m) case "$2" in
        venv) mkdir -p "$4/bin" && cp "$0" "$4/bin/python" && echo "created $4";;
        pip) [ -n "$FAKE_PIP_PID" ] && echo $$ > "$FAKE_PIP_PID"
             echo "Collecting torch==2.14.1"
             if [ -n "$FAKE_PIP_WAIT_FOR" ]; then
               i=0; while [ ! -e "$FAKE_PIP_WAIT_FOR" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
               [ -e "$FAKE_PIP_WAIT_FOR" ] || { echo "never saw $FAKE_PIP_WAIT_FOR" >&2; exit 3; }
             fi
             if [ -n "$FAKE_PIP_HANG" ]; then trap '' TERM; while :; do sleep 0.05; done; fi
             if [ -n "$FAKE_PIP_FAIL" ]; then
               echo "ERROR: Could not find a version that satisfies the requirement torch==2.14.1" >&2; exit 1
             fi
             echo "Successfully installed torch-2.14.1";;
        core.cli) [ -n "$FAKE_WORKER_FAIL" ] && { echo "No module named torch" >&2; exit 1; }
                  echo "swimdiff 0.1.0";;
      esac;;
esac
"""


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake interpreter in ``tmp_path/base``; its calls are logged to ``tmp_path/calls.txt``."""
    python = tmp_path / "base" / "python3"
    python.parent.mkdir()
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.txt"))
    return python


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "requirements.txt").write_text("torch==2.14.1\n")
    return folder


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.txt").read_text().splitlines()


def test_the_commands_are_those_of_make_setup(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    venv_python = plugin / ".venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    assert setup_commands(Path("/usr/bin/python3"), plugin) == [
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(plugin / ".venv")],
        [str(venv_python), "-m", "pip", "install", "--progress-bar", "off", "-r", str(plugin / "requirements.txt")],
        [str(venv_python), "-m", "pip", "install", "--progress-bar", "off", "--no-deps", "--no-build-isolation",
         "-e", str(plugin)],
    ]


def test_create_environment_streams_every_line_and_checks_the_new_worker(
    fake_python: Path, plugin_dir: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    steps: list[tuple[int, int, str]] = []

    result = create_environment(fake_python, plugin_dir, on_line=lines.append,
                                on_step=lambda i, n, command: steps.append((i, n, command)))

    venv = plugin_dir / ".venv"
    assert result.python == venv / "bin" / "python" and result.python.is_file()
    assert result.version == "swimdiff 0.1.0" and result.base_python == fake_python
    assert lines == [f"created {venv}", "Collecting torch==2.14.1", "Successfully installed torch-2.14.1",
                     "Collecting torch==2.14.1", "Successfully installed torch-2.14.1"]
    assert [(i, n) for i, n, _ in steps] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert steps[3][2] == f"{result.python} -m core.cli --version"
    assert calls(tmp_path) == [
        f"{fake_python} -m venv --system-site-packages {venv}",
        f"{result.python} -m pip install --progress-bar off -r {plugin_dir / 'requirements.txt'}",
        f"{result.python} -m pip install --progress-bar off --no-deps --no-build-isolation -e {plugin_dir}",
        f"{result.python} -m core.cli --version",
    ]
    assert (venv / ".installed").is_file()  # `make setup` will not install again


def test_lines_arrive_while_the_step_still_runs(
    fake_python: Path, plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake pip waits for a file that only the line callback creates: buffered output would fail it."""
    signal_file = tmp_path / "seen"
    monkeypatch.setenv("FAKE_PIP_WAIT_FOR", str(signal_file))
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line.startswith("Collecting"):
            signal_file.touch()

    run_step([str(fake_python), "-m", "pip", "install", "x"], cwd=plugin_dir, on_line=on_line)

    assert seen == ["Collecting torch==2.14.1", "Successfully installed torch-2.14.1"]


def test_a_failing_pip_names_the_command_and_keeps_its_last_lines(
    fake_python: Path, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PIP_FAIL", "1")

    with pytest.raises(SetupError) as caught:
        create_environment(fake_python, plugin_dir)

    python = plugin_dir / ".venv" / "bin" / "python"
    assert caught.value.message == (
        f"`{python} -m pip install --progress-bar off -r {plugin_dir / 'requirements.txt'}` failed with exit code 1")
    assert caught.value.tail == ["Collecting torch==2.14.1",
                                 "ERROR: Could not find a version that satisfies the requirement torch==2.14.1"]
    assert not caught.value.cancelled
    assert not (plugin_dir / ".venv" / ".installed").exists()


def test_a_worker_that_does_not_start_after_installing_is_a_failure(
    fake_python: Path, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_WORKER_FAIL", "1")

    with pytest.raises(SetupError, match="installed but its worker does not start: .* failed with exit code 1") as e:
        create_environment(fake_python, plugin_dir)

    assert e.value.tail == ["No module named torch"]


def test_cancelling_kills_the_running_step(
    fake_python: Path, plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake pip ignores SIGTERM and loops: only a kill ends it."""
    pid_file = tmp_path / "pip.pid"
    monkeypatch.setenv("FAKE_PIP_HANG", "1")
    monkeypatch.setenv("FAKE_PIP_PID", str(pid_file))
    lines: list[str] = []
    started = time.monotonic()

    with pytest.raises(SetupError, match="cancelled during `.* -m pip install") as caught:
        create_environment(fake_python, plugin_dir, on_line=lines.append,
                           should_stop=lambda: any(line.startswith("Collecting") for line in lines))

    assert caught.value.cancelled
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    assert len(calls(tmp_path)) == 2  # venv, then the first pip call; nothing after the cancel


def test_a_missing_interpreter_is_a_clear_error(plugin_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"cannot start `.*nowhere/python3 -m venv .*`: .*choose another Python"):
        create_environment(tmp_path / "nowhere" / "python3", plugin_dir)


def test_probe_accepts_a_recent_python_and_explains_a_refusal(
    fake_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert probe_python(fake_python) == (True, "3.11")
    monkeypatch.setenv("FAKE_VERSION", "3.9")
    assert probe_python(fake_python) == (False, "is Python 3.9; SwiMDiff needs 3.11 or newer")
    monkeypatch.setenv("FAKE_PROBE_ERROR", "ModuleNotFoundError: No module named 'ensurepip'")
    assert probe_python(fake_python) == (
        False, "ModuleNotFoundError: No module named 'ensurepip' (on Debian/Ubuntu: apt install python3-venv)")


def test_find_base_python_takes_the_first_candidate_that_fits(
    fake_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing" / "python3"
    assert find_base_python([missing, fake_python]) == (fake_python, "")

    monkeypatch.setenv("FAKE_VERSION", "3.8")
    python, reason = find_base_python([missing, fake_python])
    assert python is None
    assert reason.startswith("no Python 3.11 or newer that can create a venv was found: ")
    assert f"{missing} does not start" in reason and f"{fake_python} is Python 3.8" in reason
    assert reason.endswith("; choose an interpreter by hand")


def test_the_default_discovery_finds_this_machines_system_python() -> None:
    if not Path("/usr/bin/python3").is_file():
        pytest.skip("no /usr/bin/python3 here")
    python, reason = find_base_python()
    assert python is not None, reason
    assert probe_python(python)[0]
