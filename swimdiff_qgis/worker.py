"""Run one ``swimdiff`` command in the worker interpreter and follow its JSON-lines events.

The worker is ``<python> -m core.cli <command> ... --events jsonl``, started in the plugin folder with a
clean environment (see :func:`~.environment.clean_environment`). Every stdout line is one JSON object
(``core/events.py``)::

    {"event": "progress", "fraction": 0.42, "message": "change magnitude"}
    {"event": "metric", "step": 10, "name": "loss", "value": 0.53}
    {"event": "log", "level": "warning", "message": "..."}
    {"event": "result", "outputs": {...}}
    {"event": "error", "kind": "BandMismatchError", "message": "..."}

Exit codes: 0 success, 2 a user error, 1 a bug, 130 cancelled. :func:`run_worker` calls the callbacks
on the calling thread, polls ``should_stop`` while the worker runs, and on a stop request terminates the
process (SIGTERM: the worker stops at its next step and removes what it was writing), then kills it
after a grace period. Standard library only, like ``environment.py``: the Processing algorithms, the
QgsTasks and the tests share it, and it never imports torch or rasterio.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .environment import PLUGIN_DIR, SETUP_HINT, clean_environment, find_worker_python

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130

#: Environment variable that names the worker interpreter (headless runs, tests); wins over the setting.
PYTHON_VARIABLE = "SWIMDIFF_PYTHON"

#: Error kinds that mean the job was stopped on request rather than failed.
CANCELLED_KINDS = frozenset({"Cancelled", "Interrupted"})

#: The worker's log levels (``logging`` level names, lower case) as ``logging`` numbers.
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
              "critical": logging.CRITICAL}

ProgressCallback = Callable[[float, str], None]
MetricCallback = Callable[[int, dict[str, float]], None]
LogCallback = Callable[[str, str], None]


class WorkerError(Exception):
    """The worker failed, was cancelled or could not start.

    Attributes:
        kind: The error class the worker reported (``BandMismatchError``, ``Cancelled``...), or one of
            ``WorkerMissing``, ``WorkerStartError``, ``WorkerCrashed``, ``NoResult`` from this module.
        message: The plain message for the user; it names the file or option and the fix.
        exit_code: The worker's exit code, None when it never ran.
        details: The worker's last stderr lines (a traceback for bugs), possibly empty.
    """

    def __init__(self, kind: str, message: str, exit_code: int | None = None, details: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.exit_code = exit_code
        self.details = details

    @property
    def cancelled(self) -> bool:
        """True when the job stopped because it was asked to (exit code 130 or a cancel event)."""
        return self.exit_code == EXIT_CANCELLED or self.kind in CANCELLED_KINDS

    @property
    def user_error(self) -> bool:
        """True for errors the user fixes by changing the input (exit code 2), not for bugs or crashes."""
        return self.exit_code == EXIT_USER_ERROR and not self.cancelled


@dataclass
class WorkerRun:
    """What a finished worker reported, kept for callers that want more than the outputs.

    Attributes:
        outputs: The ``outputs`` of the result event.
        metrics: Every metric event as ``(step, {name: value})``, in order.
        exit_code: The worker's exit code.
    """

    outputs: dict[str, Any]
    metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    exit_code: int = 0


def worker_python(configured: str | Path | None = None, plugin_dir: Path = PLUGIN_DIR) -> Path:
    """Choose the worker interpreter: ``$SWIMDIFF_PYTHON``, else ``configured``, else the plugin's .venv.

    Args:
        configured: The interpreter from the plugin settings; None or empty for the default.
        plugin_dir: The plugin folder holding the ``.venv`` that ``make setup`` creates.

    Returns:
        The interpreter to start (not resolved: a venv's ``python`` is a symlink).

    Raises:
        WorkerError: ``WorkerMissing`` when nothing is configured and the plugin has no ``.venv``; the
            message names the expected path and the command that creates it.
    """
    chosen = os.environ.get(PYTHON_VARIABLE) or (str(configured) if configured else "")
    if chosen:
        return Path(chosen)
    python = find_worker_python(plugin_dir)
    if python is None:
        expected = Path(plugin_dir) / ".venv" / "bin" / "python"
        raise WorkerError(
            "WorkerMissing",
            f"No worker Python environment: {expected} is missing; {SETUP_HINT.format(plugin_dir=plugin_dir)}, "
            f"or point the {PYTHON_VARIABLE} variable or the SwiMDiff settings to an interpreter with the "
            "requirements installed",
        )
    return python


def worker_command(python: Path, command: str, args: Sequence[str]) -> list[str]:
    """The command line of one worker run.

    Args:
        python: The worker interpreter.
        command: The ``swimdiff`` command (``detect``, ``pretrain``, ``finetune-change``, ``evaluate``).
        args: The command's options, already strings (``["--t1", "a.tif", ...]``).

    Returns:
        ``[python, "-m", "core.cli", command, *args, "--events", "jsonl"]``.
    """
    return [str(python), "-m", "core.cli", command, *[str(arg) for arg in args], "--events", "jsonl"]


def _pump(stream: IO[str], sink: queue.Queue[str | None]) -> None:
    """Copy lines from a pipe into a queue, then None (runs in a reader thread)."""
    try:
        for line in stream:
            sink.put(line)
    finally:
        sink.put(None)


def _keep_tail(stream: IO[str], tail: deque[str]) -> None:
    """Keep the last lines of a pipe (runs in a reader thread)."""
    for line in stream:
        tail.append(line.rstrip("\n"))


def _parse(line: str) -> dict[str, Any] | None:
    """One event, or None for a line that is not a JSON object (a stray print in the worker)."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def remove_partial_outputs(paths: Iterable[str | Path], pid: int | None = None) -> None:
    """Remove what a killed worker may have left beside its outputs.

    The worker writes ``<folder>/.<name>.<pid>.<random>.tmp`` and renames it into place when complete; a
    worker killed mid-write leaves that temporary file. Complete outputs are not touched, nor (given
    ``pid``) the temporaries of another process writing the same name.

    Args:
        paths: The output files the worker was asked to write.
        pid: The killed worker's process id; None removes every temporary of those names.
    """
    for path in map(Path, paths):
        if not path.name or not path.parent.is_dir():
            continue
        for partial in path.parent.glob(f".{glob.escape(path.name)}.{'' if pid is None else f'{pid}.'}*.tmp"):
            partial.unlink(missing_ok=True)
            logger.info("removed the partial output %s", partial)


def stop_process(process: subprocess.Popen[str], grace: float) -> bool:
    """Terminate a child (the worker stops at its next step), then kill its process group after ``grace`` s.

    Returns:
        True when the worker had to be killed.
    """
    if process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(timeout=grace)
        return False
    except subprocess.TimeoutExpired:
        pass
    if sys.platform != "win32":
        try:  # data-loading children too: the worker was started in its own session
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()
    else:
        process.kill()
    process.wait()
    return True


def run_worker(
    command: str,
    args: Sequence[str],
    *,
    python: Path | None = None,
    cwd: Path = PLUGIN_DIR,
    on_progress: ProgressCallback | None = None,
    on_metric: MetricCallback | None = None,
    on_log: LogCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    output_files: Sequence[str | Path] = (),
    grace: float = 10.0,
    poll: float = 0.1,
) -> WorkerRun:
    """Run ``swimdiff <command> <args> --events jsonl`` in the worker and follow it to the end.

    Args:
        command: The ``swimdiff`` command to run.
        args: Its options as strings.
        python: The worker interpreter; None for :func:`worker_python`'s choice.
        cwd: Working directory, the plugin folder (``core`` is imported from there).
        on_progress: Called with ``(fraction in [0, 1], message)`` for each progress event.
        on_metric: Called with ``(step, {name: value})`` for each metric event.
        on_log: Called with ``(level, message)`` for each log event (``info``, ``warning``, ``error``...);
            None sends them to this module's logger.
        should_stop: Polled every ``poll`` seconds; when it returns True the worker is stopped.
        output_files: Files the command writes; their temporary siblings are removed after a kill.
        grace: Seconds a terminated worker gets to stop cleanly before it is killed.
        poll: Seconds between two checks of ``should_stop`` while no event arrives.

    Returns:
        The result outputs and the metrics.

    Raises:
        WorkerError: The worker could not start, reported an error, crashed or was cancelled (then
            ``error.cancelled`` is True).
    """
    python = python or worker_python()
    argv = worker_command(python, command, args)
    logger.debug("starting the worker: %s", argv)
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=clean_environment(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=sys.platform != "win32",
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # no console window on Windows
        )
    except OSError as exc:
        raise WorkerError(
            "WorkerStartError",
            f"cannot start the worker interpreter {python}: {exc}; {SETUP_HINT.format(plugin_dir=cwd)}",
        ) from exc

    lines: queue.Queue[str | None] = queue.Queue()
    stderr_tail: deque[str] = deque(maxlen=40)
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True),
        threading.Thread(target=_keep_tail, args=(process.stderr, stderr_tail), daemon=True),
    ]
    for reader in readers:
        reader.start()

    run = WorkerRun(outputs={})
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    stop_requested = killed = ended = False
    try:
        while True:
            if not stop_requested and should_stop is not None and should_stop():
                stop_requested = True
                logger.info("stopping the worker (pid %d)", process.pid)
                killed = stop_process(process, grace)
            try:
                line = lines.get(timeout=poll)
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the worker is ending
                break
            event = _parse(line)
            if event is None:
                if line.strip():
                    logger.debug("worker: %s", line.rstrip())
                continue
            kind = event.get("event")
            if kind == "progress" and on_progress is not None:
                on_progress(min(max(float(event.get("fraction", 0.0)), 0.0), 1.0), str(event.get("message", "")))
            elif kind == "metric":
                values = event.get("values") or {str(event.get("name", "value")): event.get("value")}
                metric = (int(event.get("step", 0)), {str(k): float(v) for k, v in values.items() if v is not None})
                run.metrics.append(metric)
                if on_metric is not None:
                    on_metric(*metric)
            elif kind == "log":
                level, message = str(event.get("level", "info")), str(event.get("message", ""))
                if on_log is not None:
                    on_log(level, message)
                else:
                    logger.log(LOG_LEVELS.get(level, logging.INFO), "%s", message)
            elif kind == "result":
                result = event.get("outputs") or {}
            elif kind == "error":
                error = event
        ended = True
    finally:
        if not ended:  # a callback raised: the worker must not outlive its caller
            killed = stop_process(process, grace) or killed
        exit_code = process.wait()
        for reader in readers:
            reader.join(timeout=5)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        if killed:
            remove_partial_outputs(output_files, process.pid)

    details = "\n".join(stderr_tail)
    run.exit_code = exit_code
    if stop_requested and not (exit_code == 0 and result is not None):  # else it finished before stopping
        raise WorkerError("Cancelled", f"swimdiff {command} was cancelled; nothing was written",
                          EXIT_CANCELLED, details)
    if error is not None:
        raise WorkerError(str(error.get("kind") or "WorkerError"), str(error.get("message") or "failed"),
                          exit_code, details)
    if exit_code != 0:
        last = stderr_tail[-1] if stderr_tail else "no error message"
        raise WorkerError("WorkerCrashed", f"the worker ({python} -m core.cli {command}) ended with exit code "
                          f"{exit_code}: {last}", exit_code, details)
    if result is None:
        raise WorkerError("NoResult", f"the worker ({python} -m core.cli {command}) ended without a result",
                          exit_code, details)
    run.outputs = result
    return run


def probe_device(python: Path, cwd: Path = PLUGIN_DIR, timeout: float = 120) -> str:
    """Describe the device the worker will use, e.g. ``CPU (2 threads)`` or ``CUDA:0 NVIDIA H100 (79 GiB)``.

    Args:
        python: The worker interpreter.
        cwd: The plugin folder.
        timeout: Seconds to wait (the first import of torch can be slow).

    Returns:
        The device line, or a short explanation when the worker cannot tell.
    """
    try:
        completed = subprocess.run([str(python), "-m", "core.cli", "device", "--events", "jsonl"], cwd=cwd,
                                   env=clean_environment(os.environ),
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                   creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({python} did not answer: {exc})"
    events = []
    for line in completed.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    for event in events:
        if isinstance(event, dict) and event.get("event") == "result":
            return str(event.get("outputs", {}).get("device", "unknown"))
    errors = [e.get("message") for e in events if isinstance(e, dict) and e.get("event") == "error"]
    lines = completed.stderr.strip().splitlines()
    return f"unknown ({errors[-1] if errors else lines[-1] if lines else f'exit code {completed.returncode}'})"
