"""The plugin object that QGIS loads: the Processing provider, and a toolbar that checks the worker environment.

Nothing here imports torch, rasterio, timm or diffusers: the heavy work runs in a worker process (see
``environment.py``), and this module only starts it.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from qgis.core import Qgis, QgsApplication, QgsProcessingProvider, QgsTask
from qgis.gui import QgisInterface
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QToolBar

from .environment import PLUGIN_DIR, worker_status
from .qgis_log import LOG_TAG, MessageLogHandler, log

if TYPE_CHECKING:
    from .dock import SwimDiffDock
    from .runs import Runner

MENU = "&SwiMDiff"
TOOLBAR_NAME = "SwiMDiffToolbar"
ICON_PATH = PLUGIN_DIR / "resources" / "icon.png"

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
        panel.setToolTip("Detect changes, pre-train and fine-tune with SwiMDiff")
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

    def unload(self) -> None:
        """Remove the Processing provider, the actions, the menu entries, the toolbar and the log handler."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)  # deletes the provider
            self.provider = None
        if self._check_task is not None:
            self._check_task.cancel()
            self._check_task = None
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
            from .dock import SwimDiffDock  # lazy: QGIS starts faster without the panel's widgets
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
        self._check_task = QgsTask.fromFunction(
            "Checking the SwiMDiff worker environment",
            lambda _task: worker_status(plugin_dir),
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
        level, duration = (Qgis.Success, 10) if ok else (Qgis.Warning, 0)
        summary, _, details = message.partition("\n")
        bar = self.iface.messageBar()
        if details:  # e.g. the worker's last error lines, behind the bar's "Show more" button
            bar.pushMessage(LOG_TAG, summary, message, level, duration)
        else:
            bar.pushMessage(LOG_TAG, summary, level, duration)
