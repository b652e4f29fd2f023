"""Create the worker's Python environment: a venv in the plugin folder, filled with pip, with a streamed log.

The steps are those of ``make setup`` without the Debian packages and without the developer tools
(``make setup`` installs ``requirements-dev.txt``, which adds them to ``requirements.txt``)::

    <base python> -m venv --system-site-packages <plugin>/.venv
    <venv python> -m pip install -r <plugin>/requirements.txt
    <venv python> -m pip install --no-deps --no-build-isolation -e <plugin>

then ``<venv python> -m core.cli --version`` proves that the worker starts. Every output line of every
step goes to a callback as soon as it is printed; a stop request kills the running step. Standard library
only, like ``environment.py``: the plugin's QgsTask drives it, and tests drive it with a fake interpreter.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .environment import PLUGIN_DIR, VENV_PYTHONS, check_worker, clean_environment
from .worker import stop_process

logger = logging.getLogger(__name__)

#: The oldest Python the worker supports (``requires-python`` in pyproject.toml).
MINIMUM_VERSION = (3, 11)

#: Printed by a candidate interpreter that can create a venv with pip: its version, e.g. ``3.11``.
PROBE_CODE = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"

#: Environment added to every step: unbuffered output (lines arrive as they are printed), no prompts.
STEP_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

LineCallback = Callable[[str], None]
StepCallback = Callable[[int, int, str], None]


class SetupError(Exception):
    """Creating the environment failed or was cancelled.

    Attributes:
        message: What failed, naming the command and the fix.
        tail: The last output lines of the failed step (pip's error), oldest first.
        cancelled: True when the setup stopped because it was asked to.
    """

    def __init__(self, message: str, tail: Sequence[str] = (), *, cancelled: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.tail = list(tail)
        self.cancelled = cancelled


@dataclass(frozen=True)
class SetupResult:
    """A working worker environment.

    Attributes:
        python: The venv's interpreter (not resolved: a venv's ``python`` is a symlink).
        version: What ``<python> -m core.cli --version`` printed, e.g. ``swimdiff 0.1.0``.
        base_python: The interpreter that created the venv.
    """

    python: Path
    version: str
    base_python: Path


def candidate_pythons() -> list[Path]:
    """Interpreters that may create the venv, most suitable first, without duplicates.

    QGIS's own ``sys.executable`` is usually the QGIS program, not Python, so it comes only when its name
    says it is Python. The system Python comes first on Linux: with ``--system-site-packages`` the worker
    then sees the same GDAL Python bindings as QGIS.

    Returns:
        Existing paths, not checked further (see :func:`probe_python`).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    names: list[str | Path | None] = []
    if sys.platform == "win32":  # QGIS for Windows ships python.exe in its Python folder (sys.base_prefix)
        names += [Path(sys.base_prefix) / "python.exe", shutil.which("python"), shutil.which("py")]
    else:
        names += ["/usr/bin/python3", Path(sys.base_prefix) / "bin" / f"python{version}",
                  shutil.which("python3"), shutil.which("python")]
    if Path(sys.executable).name.lower().startswith("python"):
        names.append(sys.executable)
    found: list[Path] = []
    for name in names:
        if name and Path(name).is_file() and Path(name) not in found:
            found.append(Path(name))
    return found


def probe_python(python: Path, timeout: float = 30) -> tuple[bool, str]:
    """Check that an interpreter is recent enough and can create a venv with pip.

    Args:
        python: The interpreter to check.
        timeout: Seconds to wait for its answer.

    Returns:
        ``(True, "3.11")`` when it fits, else ``(False, reason)``; the reason names what is missing.
    """
    try:
        completed = subprocess.run([str(python), "-c", PROBE_CODE], env=clean_environment(os.environ),
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                   creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"does not start ({exc})"
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or [f"exit code {completed.returncode}"])[-1]
        if "ensurepip" in last or "venv" in last:
            last += " (on Debian/Ubuntu: apt install python3-venv)"
        return False, last
    text = completed.stdout.strip()
    try:
        version = tuple(int(part) for part in text.split("."))
    except ValueError:
        return False, f"answered {text!r} instead of its version"
    if version < MINIMUM_VERSION:
        return False, f"is Python {text}; SwiMDiff needs {'.'.join(map(str, MINIMUM_VERSION))} or newer"
    return True, text


def find_base_python(candidates: Iterable[Path] | None = None, timeout: float = 30) -> tuple[Path | None, str]:
    """The first interpreter that can create the worker's venv.

    Args:
        candidates: Interpreters to try in order; None for :func:`candidate_pythons`.
        timeout: Seconds each candidate gets to answer.

    Returns:
        ``(python, "")``, or ``(None, reason)`` where the reason lists why each candidate was refused and
        what to do.
    """
    refused = []
    for python in candidate_pythons() if candidates is None else candidates:
        ok, text = probe_python(Path(python), timeout)
        if ok:
            return Path(python), ""
        refused.append(f"{python} {text}")
    minimum = ".".join(map(str, MINIMUM_VERSION))
    reason = f"no Python {minimum} or newer that can create a venv was found"
    return None, reason + (": " + "; ".join(refused) if refused else "") + "; choose an interpreter by hand"


def venv_python(venv_dir: Path) -> Path:
    """The interpreter inside a venv folder (``bin/python``, or ``Scripts/python.exe`` on Windows)."""
    relative = VENV_PYTHONS[1] if sys.platform == "win32" else VENV_PYTHONS[0]
    return Path(venv_dir) / Path(*relative.parts[1:])


def setup_commands(base_python: Path, plugin_dir: Path = PLUGIN_DIR, venv_dir: Path | None = None) -> list[list[str]]:
    """The command lines that create and fill the worker environment, in order.

    Args:
        base_python: The interpreter that creates the venv.
        plugin_dir: The plugin folder (holds ``requirements.txt`` and ``pyproject.toml``).
        venv_dir: Where the venv goes; ``<plugin_dir>/.venv`` when None.

    Returns:
        Three argument lists: create the venv, install the runtime requirements (``requirements.txt``, no
        developer tools), install the plugin's ``core``.
    """
    venv_dir = Path(venv_dir) if venv_dir is not None else Path(plugin_dir) / ".venv"
    python = str(venv_python(venv_dir))
    pip = [python, "-m", "pip", "install", "--progress-bar", "off"]
    return [
        [str(base_python), "-m", "venv", "--system-site-packages", str(venv_dir)],
        [*pip, "-r", str(Path(plugin_dir) / "requirements.txt")],
        [*pip, "--no-deps", "--no-build-isolation", "-e", str(plugin_dir)],
    ]


def _pump(stream: IO[str], sink: queue.Queue[str | None]) -> None:
    """Copy lines from a pipe into a queue, then None (runs in a reader thread)."""
    try:
        for line in stream:
            sink.put(line.rstrip("\r\n"))
    finally:
        sink.put(None)


def run_step(argv: Sequence[str], *, cwd: Path, on_line: LineCallback | None = None,
             should_stop: Callable[[], bool] | None = None, grace: float = 5.0, poll: float = 0.1,
             tail_lines: int = 20) -> None:
    """Run one command, passing each line of its output (stdout and stderr) to ``on_line`` as it comes.

    Args:
        argv: The command line.
        cwd: Its working directory.
        on_line: Called with each output line, on the calling thread.
        should_stop: Polled while the command runs; True kills it.
        grace: Seconds a terminated command gets before it is killed.
        poll: Seconds between two checks of ``should_stop`` while no line arrives.
        tail_lines: How many last lines a :class:`SetupError` keeps.

    Raises:
        SetupError: The command could not start, failed (``tail`` holds its last lines) or was stopped
            (``cancelled`` is True).
    """
    command = " ".join(argv)
    logger.debug("setup step: %s", command)
    try:
        process = subprocess.Popen(list(argv), cwd=cwd, env={**clean_environment(os.environ), **STEP_ENVIRONMENT},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, encoding="utf-8", errors="replace", bufsize=1,
                                   start_new_session=sys.platform != "win32",
                                   creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except OSError as exc:
        raise SetupError(f"cannot start `{command}`: {exc}; choose another Python interpreter") from exc
    lines: queue.Queue[str | None] = queue.Queue()
    tail: deque[str] = deque(maxlen=tail_lines)
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    stopped = ended = False
    try:
        while True:
            if should_stop is not None and should_stop():
                stopped = True
                break
            try:
                line = lines.get(timeout=poll)
            except queue.Empty:
                continue
            if line is None:
                break
            tail.append(line)
            if on_line is not None:
                on_line(line)
        ended = True
    finally:
        if stopped or not ended:  # cancelled, or a callback raised: the step must not outlive its caller
            stop_process(process, grace)
        exit_code = process.wait()
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
    if stopped:
        raise SetupError(f"setting up the environment was cancelled during `{command}`", tail, cancelled=True)
    if exit_code != 0:
        raise SetupError(f"`{command}` failed with exit code {exit_code}", tail)


def create_environment(base_python: Path, plugin_dir: Path = PLUGIN_DIR, venv_dir: Path | None = None, *,
                       on_line: LineCallback | None = None, on_step: StepCallback | None = None,
                       should_stop: Callable[[], bool] | None = None, check_timeout: float = 120) -> SetupResult:
    """Create the worker venv, install the requirements and the plugin's ``core``, then check the worker.

    Args:
        base_python: The interpreter that creates the venv (see :func:`find_base_python`).
        plugin_dir: The plugin folder.
        venv_dir: Where the venv goes; ``<plugin_dir>/.venv`` when None (where the plugin looks for it).
        on_line: Called with every output line of every step, as it is printed.
        on_step: Called with ``(index, count, command)`` before each step (the check is the last one).
        should_stop: Polled while a step runs; True kills the step.
        check_timeout: Seconds the final worker check may take (its first import of torch is slow).

    Returns:
        The venv's interpreter and the worker's version.

    Raises:
        SetupError: A step failed or was cancelled, or the new worker does not start; the message names
            the command, ``tail`` holds its last output lines.
    """
    plugin_dir = Path(plugin_dir)
    venv_dir = Path(venv_dir) if venv_dir is not None else plugin_dir / ".venv"
    commands = setup_commands(base_python, plugin_dir, venv_dir)
    python = venv_python(venv_dir)
    count = len(commands) + 1
    started = time.monotonic()
    for index, argv in enumerate(commands):
        if on_step is not None:
            on_step(index, count, " ".join(argv))
        run_step(argv, cwd=plugin_dir, on_line=on_line, should_stop=should_stop)
    if should_stop is not None and should_stop():
        raise SetupError("setting up the environment was cancelled before the worker check", cancelled=True)
    if on_step is not None:
        on_step(count - 1, count, f"{python} -m core.cli --version")
    ok, text = check_worker(python, timeout=check_timeout, cwd=plugin_dir)
    if not ok:
        summary, _, details = text.partition("\n")
        raise SetupError(f"the new environment was installed but its worker does not start: {summary}",
                         details.splitlines())
    (venv_dir / ".installed").touch()  # the stamp `make setup` checks: it need not install again
    logger.info("worker environment %s ready in %.0f s: %s", venv_dir, time.monotonic() - started, text)
    return SetupResult(python=python, version=text, base_python=Path(base_python))
