"""The plugin object that QGIS loads: the Processing provider, and a toolbar that checks and sets up the worker.

Nothing here imports torch, rasterio, timm or diffusers: the heavy work runs in a worker process (see
``environment.py``), and this module only starts it.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from qgis.core import Qgis, QgsApplication, QgsProcessingProvider, QgsTask
from qgis.gui import QgisInterface, QgsMessageBar, QgsMessageBarItem
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QInputDialog, QLineEdit, QPushButton, QToolBar

from .environment import PLUGIN_DIR, find_worker_python, worker_status
from .qgis_log import LOG_TAG, MessageLogHandler, log
from .settings import chosen_worker_python, set_setup_python, setup_python
from .setup_env import find_base_python
from .tasks import SetupTask

if TYPE_CHECKING:
    from .panel.dock import SwimDiffDock
    from .runs import Runner

MENU = "&SwiMDiff"
TOOLBAR_NAME = "SwiMDiffToolbar"
ICON_PATH = PLUGIN_DIR / "resources" / "icon.png"
SETUP_ICON = "/mActionOptions.svg"  # a QGIS theme icon
SETUP_BUTTON = "Set up environment"
#: The first start's message: short, as the message bar shows one or two lines (the path is in its tooltip).
START_OFFER = "its worker environment (PyTorch, in the plugin folder) needs a one-time set-up."
#: How many of pip's last lines a failed setup shows behind the message bar's "Show more".
FAILURE_LINES = 12

package_logger = logging.getLogger(__package__)


class SwimDiffPlugin:
    """The SwiMDiff plugin: creates its GUI in :meth:`initGui` and removes every trace in :meth:`unload`.

    Attributes:
        iface: The QGIS interface.
        plugin_dir: The plugin folder, where the worker environment is looked for.
        toolbar: The "SwiMDiff" toolbar, None while the plugin is unloaded.
        actions: Every action the plugin added to the toolbar and the Raster menu.
        provider: The registered Processing provider, None while the plugin is unloaded.
        runner: Starts the dock's runs (created with the dock, on first show).
        dock: The SwiMDiff panel, None until it is first shown.
    """

    def __init__(self, iface: QgisInterface) -> None:
        """Keep the interface; the GUI is created later, in :meth:`initGui`.

        Args:
            iface: The interface of the running QGIS.
        """
        self.iface = iface
        self.plugin_dir: Path = PLUGIN_DIR
        self.toolbar: QToolBar | None = None
        self.actions: list[QAction] = []
        self._log_handler: MessageLogHandler | None = None
        self._check_task: QgsTask | None = None  # kept referenced until it finishes
        self._configured_check = False  # whether the running check is of a configured interpreter
        self._setup_task: SetupTask | None = None  # likewise
        #: The message bar items that offer "Set up environment"; kept referenced, so that Python's garbage
        #: collector never frees what their buttons call (a freed slot crashes QGIS on the click).
        self._setup_offers: list[QgsMessageBarItem] = []
        self.provider: QgsProcessingProvider | None = None
        self.runner: Runner | None = None
        self.dock: SwimDiffDock | None = None

    def initProcessing(self) -> None:  # noqa: N802 (name fixed by QGIS)
        """Register the "SwiMDiff" Processing provider; ``qgis_process`` calls only this (there is no ``iface``).

        QGIS calls it when it loads the plugin (``metadata.txt`` declares ``hasProcessingProvider=yes``)
        and :meth:`initGui` calls it again; the provider is registered once.
        """
        if self.provider is not None:
            return
        from .processing.provider import SwimDiffProvider  # lazy: qgis_process loads only what it needs

        self.provider = SwimDiffProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (name fixed by QGIS)
        """Create the toolbar and the Raster menu entries (panel, environment), and forward logging to QGIS."""
        self.initProcessing()
        self._log_handler = MessageLogHandler()
        package_logger.addHandler(self._log_handler)
        package_logger.setLevel(logging.INFO)

        self.toolbar = self.iface.addToolBar("SwiMDiff")
        self.toolbar.setObjectName(TOOLBAR_NAME)

        panel = QAction(QIcon(str(ICON_PATH)), "SwiMDiff panel", self.iface.mainWindow())
        panel.setObjectName("SwiMDiffPanelAction")
        panel.setToolTip("Detect changes, classify land cover, pre-train and fine-tune with SwiMDiff")
        panel.setCheckable(True)
        panel.toggled.connect(self.show_dock)
        self.toolbar.addAction(panel)
        self.iface.addPluginToRasterMenu(MENU, panel)
        self.actions.append(panel)

        action = QAction(QIcon(str(ICON_PATH)), "SwiMDiff environment…", self.iface.mainWindow())
        action.setObjectName("SwiMDiffEnvironmentAction")
        action.setToolTip("Show which Python runs the SwiMDiff worker and whether it works")
        action.triggered.connect(self.check_environment)
        self.toolbar.addAction(action)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)

        setup = QAction(QgsApplication.getThemeIcon(SETUP_ICON), "Set up SwiMDiff environment…",
                        self.iface.mainWindow())
        setup.setObjectName("SwiMDiffSetupAction")
        setup.setToolTip("Create the worker's Python environment (.venv in the plugin folder) and install its "
                         "requirements with pip")
        setup.triggered.connect(self.ask_setup_environment)
        self.toolbar.addAction(setup)
        self.iface.addPluginToRasterMenu(MENU, setup)
        self.actions.append(setup)

        if chosen_worker_python()[0] is None and find_worker_python(
                self.plugin_dir) is None:  # a fresh install (e.g. from a ZIP): offer the setup at once
            self.offer_setup(START_OFFER, f"{self.plugin_dir / '.venv'} is missing")

    def unload(self) -> None:
        """Remove the Processing provider, the actions, the menu entries, the toolbar and the log handler."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)  # deletes the provider
            self.provider = None
        if self._check_task is not None:
            self._check_task.cancel()
            self._check_task = None
        if self._setup_task is not None:
            task, self._setup_task = self._setup_task, None  # its end reports to nobody
            task.line.disconnect()
            task.cancel()  # kills the running pip
        self.withdraw_setup_offers()  # their buttons would call an unloaded plugin
        if self.runner is not None:
            self.runner.shutdown()  # the worker process ends; its task reports to nobody
            self.runner = None
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            if self.toolbar is not None:
                self.toolbar.removeAction(action)
            action.deleteLater()
        self.actions.clear()
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self._log_handler is not None:
            package_logger.removeHandler(self._log_handler)
            package_logger.setLevel(logging.NOTSET)
            self._log_handler = None

    def show_dock(self, visible: bool = True) -> None:  # noqa: FBT001, FBT002 (toggled signal)
        """Show or hide the SwiMDiff panel; it is created the first time it is shown.

        Args:
            visible: Show (True) or hide (False).
        """
        if self.dock is None:
            if not visible:
                return
            from .panel.dock import SwimDiffDock  # lazy: QGIS starts faster without the panel's widgets
            from .runs import Runner

            self.runner = Runner(self.iface)
            self.dock = SwimDiffDock(self.iface, self.runner)  # addDockWidget gives it its parent
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            if self.actions:
                self.dock.visibilityChanged.connect(self.actions[0].setChecked)
            self.dock.check_device()
        self.dock.setVisible(visible)

    def check_environment(self) -> None:
        """Check the worker environment in a background task and report in the message bar.

        The check starts the worker's interpreter, which can take seconds (it may import torch), so it
        runs in a :class:`QgsTask`; the result is shown on the main thread when the task finishes.
        """
        if self._check_task is not None:
            self.iface.messageBar().pushMessage(LOG_TAG, "The environment check is running.", Qgis.Info, 5)
            return
        plugin_dir = self.plugin_dir  # copied on the main thread, as the task must not touch the plugin
        python, source = chosen_worker_python()  # the interpreter the runs use: the variable, the setting
        self._configured_check = python is not None
        self._check_task = QgsTask.fromFunction(
            "Checking the SwiMDiff worker environment",
            lambda _task: worker_status(plugin_dir, python=python, source=source),
            on_finished=self._show_environment,
        )
        QgsApplication.taskManager().addTask(self._check_task)

    def _show_environment(self, exception: Exception | None, result: tuple[bool, str] | None = None) -> None:
        """Show the result of the environment check (runs on the main thread).

        Args:
            exception: The exception the check raised, None when it completed.
            result: ``(ok, message)`` from :func:`worker_status` when it completed.
        """
        if self._check_task is None:  # unloaded or cancelled meanwhile
            return
        self._check_task = None
        if exception is not None or result is None:  # a bug: worker_status reports problems in its result
            log("".join(traceback.format_exception(exception)) if exception else "no result", Qgis.Critical)
            self.iface.messageBar().pushMessage(
                LOG_TAG, f"The environment check failed: {exception}", Qgis.Critical, 0
            )
            return
        ok, message = result
        log(message, Qgis.Info if ok else Qgis.Warning)
        summary, _, details = message.partition("\n")
        if ok:
            self.withdraw_setup_offers()
            self.iface.messageBar().pushMessage(LOG_TAG, summary, Qgis.Success, 10)
        elif self._configured_check:  # a new .venv would not help: the configured interpreter wins over it
            self.iface.messageBar().pushMessage(LOG_TAG, summary, details or summary, Qgis.Warning, 0)
        else:  # the worker's last error lines, if any, are in the log and the message's tooltip
            self.offer_setup(summary, details)

    # --- setting up the worker environment ----------------------------------------------------------------
    def offer_setup(self, text: str, details: str = "") -> QgsMessageBarItem:
        """Show a warning in the message bar with a "Set up environment" button; it replaces earlier offers.

        The button calls a bound method and the item stays referenced in ``_setup_offers``: a closure
        connected here would live only in a reference cycle (bar, item, button, slot) that Python's garbage
        collector frees, and the click would then crash QGIS.

        Args:
            text: What is wrong, in one line.
            details: More lines (the worker's error), shown as the message's tooltip.

        Returns:
            The message bar item.
        """
        self.withdraw_setup_offers()
        item = QgsMessageBar.createMessage(LOG_TAG, text)
        if details:
            item.setToolTip(details)
        button = QPushButton(SETUP_BUTTON, item)
        button.setObjectName("SwiMDiffSetupButton")
        button.setToolTip(f"Create {self.plugin_dir / '.venv'} and install the worker's requirements with pip")
        button.clicked.connect(self._setup_offer_taken)
        item.layout().addWidget(button)
        self._setup_offers.append(item)
        self.iface.messageBar().pushWidget(item, Qgis.Warning, 0)
        return item

    def withdraw_setup_offers(self) -> None:
        """Remove the "Set up environment" messages from the message bar (those the user did not close)."""
        offers, self._setup_offers = self._setup_offers, []
        bar = self.iface.messageBar()
        for item in offers:
            if not sip.isdeleted(item):  # the bar deletes the items the user closes
                bar.popWidget(item)

    def _setup_offer_taken(self) -> None:
        """The "Set up environment" button was clicked: the set-up dialog comes; the offer goes once it is taken."""
        self.ask_setup_environment()
        if self._setup_task is not None:  # started (not cancelled in the dialog)
            self.withdraw_setup_offers()

    def ask_setup_environment(self) -> None:
        """Ask which Python creates the environment (a found one is proposed), then set it up in a task."""
        if self._setup_task is not None:
            self.iface.messageBar().pushMessage(LOG_TAG, "The worker environment is being set up; see the "
                                                "task manager and the SwiMDiff log.", Qgis.Info, 5)
            return
        proposed, reason = (Path(setup_python()), "") if setup_python() else find_base_python()
        venv = self.plugin_dir / ".venv"
        label = (f"SwiMDiff will create\n{venv}\nwith this Python (3.11 or newer) and install PyTorch and the other "
                 "worker requirements\nwith pip: several GB and minutes, and a network connection.\n"
                 + (f"Note: {reason}.\n" if reason else "") + "Python interpreter:")
        text, ok = QInputDialog.getText(self.iface.mainWindow(), "Set up the SwiMDiff environment", label,
                                        QLineEdit.Normal, str(proposed or ""))
        if not ok:
            return
        if not text.strip():
            self.iface.messageBar().pushMessage(LOG_TAG, "No Python interpreter given; enter the path of a "
                                                "Python 3.11 or newer, e.g. /usr/bin/python3", Qgis.Warning, 10)
            return
        self.setup_environment(Path(text.strip()))

    def setup_environment(self, base_python: Path) -> SetupTask | None:
        """Create ``<plugin>/.venv`` with ``base_python`` and fill it with pip, in a cancellable QgsTask.

        pip's output goes line by line to the SwiMDiff log panel and the task's description; the end is
        announced in the message bar.

        Args:
            base_python: The interpreter that creates the venv.

        Returns:
            The started task, or None while another setup runs.
        """
        if self._setup_task is not None:
            return None
        task = SetupTask(base_python, self.plugin_dir)
        task.line.connect(log)
        task.taskCompleted.connect(self._setup_ended)  # bound methods: no closure for the collector to free
        task.taskTerminated.connect(self._setup_ended)
        self._setup_task = task
        set_setup_python(base_python)
        log(f"setting up the worker environment {self.plugin_dir / '.venv'} with {base_python}")
        self.iface.messageBar().pushMessage(
            LOG_TAG, f"Setting up the worker environment with {base_python}: pip's progress is in the SwiMDiff "
            "log panel; cancel it in the task manager.", Qgis.Info, 10)
        QgsApplication.taskManager().addTask(task)
        return task

    def _setup_ended(self) -> None:
        """Announce how the setup ended (main thread); a success also withdraws the stale set-up offers."""
        task, self._setup_task = self._setup_task, None
        if task is None:  # unloaded meanwhile
            return
        bar = self.iface.messageBar()
        if task.result is not None:
            self.withdraw_setup_offers()
            message = (f"SwiMDiff worker environment ready: {task.result.python} runs {task.result.version} "
                       f"(created with {task.base_python})")
            python, source = chosen_worker_python()
            if python is not None:
                message += f"; runs still use {python} from {source}: clear it to use the new environment"
            log(message, Qgis.Success)
            bar.pushMessage(LOG_TAG, message, Qgis.Success, 0)
            if self.dock is not None:
                self.dock.check_device()
            return
        error = task.error
        if error is None or error.cancelled:
            message = (f"Setting up the worker environment was cancelled; {self.plugin_dir / '.venv'} may be "
                       "incomplete: run Set up SwiMDiff environment again")
            log(message, Qgis.Info)
            bar.pushMessage(LOG_TAG, message, Qgis.Info, 10)
            return
        last_lines = "\n".join(error.tail[-FAILURE_LINES:])
        log(f"{error.message}\n{last_lines}".rstrip(), Qgis.Critical)
        last = f": {error.tail[-1]}" if error.tail else ""
        bar.pushMessage(LOG_TAG, f"Setting up the worker environment failed: {error.message}{last}",
                        last_lines or error.message, Qgis.Critical, 0)
