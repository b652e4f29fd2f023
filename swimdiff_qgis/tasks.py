"""A QgsTask that runs one ``swimdiff`` command in the worker, so the QGIS window never freezes.

``run()`` (a background thread) only drives the worker with values copied on the main thread; progress
reaches the task manager through ``setProgress`` and the description, metrics reach the dock through a
queued signal, and the results or the error are announced by signals from ``finished()`` (main thread).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .setup_env import SetupError, SetupResult, create_environment
from .worker import LOG_LEVELS, WorkerError, WorkerRun, run_worker

logger = logging.getLogger(__name__)


class WorkerTask(QgsTask):
    """Runs ``swimdiff <command> <args>``; cancelling it really ends the worker process.

    Signals:
        message: ``(text)``, what the worker is doing (main thread).
        metric: ``(step, {name: value})`` for each metric event, e.g. the training loss (main thread).
        warning: ``(text)`` for each warning the worker logs before a stop is asked (main thread), e.g.
            that it took unnamed bands in order; the log has them too.
        succeeded: ``(outputs)`` when the worker returned a result.
        failed: ``(WorkerError)`` when it failed, crashed or was cancelled.

    Attributes:
        command: The ``swimdiff`` command.
        args: Its options.
        python: The worker interpreter.
        parameters: What the user chose, kept for the result layers' metadata.
        error: The error, once the task failed.
        result: The worker's run, once the task succeeded.
        fraction: The share of the work the worker last reported (QGIS sets the task's own progress to
            100 % whenever it ends, even when the work stopped early).
    """

    message = pyqtSignal(str)
    metric = pyqtSignal(int, "PyQt_PyObject")
    warning = pyqtSignal(str)
    succeeded = pyqtSignal("PyQt_PyObject")
    failed = pyqtSignal("PyQt_PyObject")

    def __init__(self, description: str, command: str, args: Sequence[str], python: Path,
                 parameters: dict[str, Any] | None = None, output_files: Sequence[str] = ()) -> None:
        """Prepare the task; nothing runs before the task manager starts it.

        Args:
            description: The task manager's label.
            command: The ``swimdiff`` command.
            args: Its options (strings).
            python: The worker interpreter.
            parameters: The run's parameters, for metadata.
            output_files: Files the run writes (partial ones are removed after a forced stop).
        """
        super().__init__(description, QgsTask.CanCancel)
        self.base_description = description
        self.command = command
        self.args = list(args)
        self.python = python
        self.parameters = dict(parameters or {})
        self.output_files = list(output_files)
        self.error: WorkerError | None = None
        self.result: WorkerRun | None = None
        self.fraction = 0.0
        self.message.connect(self._describe)  # queued to the main thread, where the task lives
        self._errors: list[str] = []  # the worker's error lines, logged once the run's own error is known

    @property
    def stopped(self) -> bool:
        """True when the worker returned a result but says it stopped early (a cancelled pre-training)."""
        return self.result is not None and bool(self.result.outputs.get("stopped"))

    def _describe(self, text: str) -> None:
        self.setDescription(f"{self.base_description}: {text}" if text else self.base_description)

    def run(self) -> bool:
        """Run the worker (background thread); True when it returned a result."""
        last = [""]

        def progress(fraction: float, text: str) -> None:
            self.fraction = fraction
            self.setProgress(100.0 * fraction)
            if text != last[0]:
                last[0] = text
                self.message.emit(text)

        try:
            self.result = run_worker(self.command, self.args, python=self.python, on_progress=progress,
                                     on_metric=lambda step, values: self.metric.emit(step, values),
                                     on_log=self._log, should_stop=self.isCanceled, output_files=self.output_files)
        except WorkerError as error:
            self.error = error
        except Exception as error:  # a bug in the plugin: keep its traceback for the log
            self.error = WorkerError("InternalError", f"{type(error).__name__}: {error}",
                                     details="".join(traceback.format_exception(error)))
        final = self.error.message if self.error is not None else None
        for message in self._errors:
            if message != final:  # the run's error is reported once, by whoever shows it
                logger.error("%s", message)
        return self.error is None

    def _log(self, level: str, message: str) -> None:
        """A worker log line (background thread): errors wait for the end, warnings also reach the dock."""
        number = LOG_LEVELS.get(level, logging.INFO)
        if number >= logging.ERROR:
            self._errors.append(message)
            return
        if number >= logging.WARNING and not self.isCanceled():  # once stopping, warnings say just that
            logger.warning("%s", message)
            self.warning.emit(message)
            return
        logger.log(number if number < logging.WARNING else logging.INFO, "%s", message)

    def finished(self, ok: bool) -> None:  # noqa: FBT001 (signature fixed by QGIS)
        """Announce the outcome (main thread)."""
        if ok and self.result is not None:
            self.succeeded.emit(self.result.outputs)
            return
        if self.error is None:  # cancelled before run() started
            self.error = WorkerError("Cancelled", f"swimdiff {self.command} was cancelled; nothing was written", 130)
        self.failed.emit(self.error)


class SetupTask(QgsTask):
    """Creates the worker environment (see :mod:`.setup_env`); cancelling it kills the running pip.

    Signals:
        line: ``(text)``, each output line of venv and pip, as it is printed (main thread).

    Attributes:
        base_python: The interpreter that creates the venv.
        plugin_dir: The plugin folder; the venv is ``<plugin_dir>/.venv``.
        error: The error, once the task failed or was cancelled.
        result: The new interpreter and the worker's version, once the task succeeded.
    """

    line = pyqtSignal(str)

    def __init__(self, base_python: Path, plugin_dir: Path) -> None:
        """Prepare the task; nothing runs before the task manager starts it.

        Args:
            base_python: The interpreter that creates the venv.
            plugin_dir: The plugin folder.
        """
        super().__init__(f"SwiMDiff: setting up the worker environment with {base_python}", QgsTask.CanCancel)
        self.base_description = "SwiMDiff environment"
        self.base_python = Path(base_python)
        self.plugin_dir = Path(plugin_dir)
        self.error: SetupError | None = None
        self.result: SetupResult | None = None
        self.line.connect(self._describe)  # queued to the main thread, where the task lives

    def _describe(self, text: str) -> None:
        self.setDescription(f"{self.base_description}: {text}")

    def run(self) -> bool:
        """Run the steps (background thread); True when the new worker answered."""

        def step(index: int, count: int, command: str) -> None:
            self.setProgress(100.0 * index / count)
            self.line.emit(f"$ {command}")

        try:
            self.result = create_environment(self.base_python, self.plugin_dir, on_line=self.line.emit,
                                             on_step=step, should_stop=self.isCanceled)
            self.line.emit("ready")  # the last description is what QGIS's task list shows once it ends
            return True
        except SetupError as error:
            self.error = error
        except Exception as error:  # a bug in the plugin: keep its traceback for the log
            self.error = SetupError(f"{type(error).__name__}: {error}",
                                    "".join(traceback.format_exception(error)).splitlines())
        return False
