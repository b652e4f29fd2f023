"""The SwiMDiff dock: one page per task (Detect changes, Pre-train, Fine-tune, Adapt to this area, Classify land
cover, Train a land-cover classifier) chosen from a drop-down list, then the device, the status, progress, cancel
and a live loss plot.

Widgets only: every run goes through :class:`~swimdiff_qgis.runs.Runner`; the pages are the other modules
of this package (``detect.py``, ``adapt.py``, ``training.py``, ``landcover.py``). Nothing here asks for width:
long device lines, paths and layer names wrap or elide, so the dock stays as narrow as the user makes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from qgis.core import QgsApplication, QgsProject, QgsTask
from qgis.gui import QgisInterface, QgsDockWidget
from qgis.PyQt.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..runs import DONE, Runner
from ..settings import resolve_worker_python
from ..tasks import WorkerTask
from ..worker import WorkerError, probe_device
from .adapt import AdaptPage
from .detect import DEFAULT_MODEL, DetectPage, model_summary
from .landcover import ClassifyTab, TrainClassifierTab
from .plot import LossPlot
from .training import FinetunePage, PretrainPage
from .widgets import TaskPages, wrapped_label

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "LossPlot", "SwimDiffDock", "model_summary"]

CANCELLING = "cancelling… (the worker stops at the end of its current step)"


class SwimDiffDock(QgsDockWidget):
    """The plugin's panel.

    Attributes:
        tabs: The task pages: detect_page, pretrain_page, finetune_page, adapt_page, classify_tab,
            train_classifier_tab.
        device_label: The device the worker uses (wrapped; the full text is also its tooltip).
        status: What the run is doing, or how it ended (done, failed: ..., cancelled..., stopped at step N of M).
        progress: The run's progress; cancel_button: stops it.
        plot: The training loss.
    """

    def __init__(self, iface: QgisInterface, runner: Runner, parent: QWidget | None = None) -> None:
        super().__init__("SwiMDiff", parent)
        self.setObjectName("SwiMDiffDock")
        self.iface = iface
        self.runner = runner
        self._device_task: QgsTask | None = None
        self._cancelling = False
        self._task: WorkerTask | None = None
        self._detect_next: tuple[str, str] | None = None  # the dates an adapted model runs on once adapting ends
        body = QWidget()
        layout = QVBoxLayout(body)
        self.tabs = TaskPages()
        self.detect_page = DetectPage(runner, self._start)
        self.pretrain_page = PretrainPage(runner, self._start)
        self.finetune_page = FinetunePage(runner, self._start)
        self.adapt_page = AdaptPage(runner, self._start, self.detect_page.model_widget.filePath)
        self.detect_page.model_widget.fileChanged.connect(self.adapt_page.show_model)
        self.classify_tab = ClassifyTab(runner, self._start)
        self.train_classifier_tab = TrainClassifierTab(runner, self._start, self.classify_tab.set_model)
        pages = ((self.detect_page, "Detect changes"), (self.pretrain_page, "Pre-train an encoder"),
                 (self.finetune_page, "Fine-tune a change model"), (self.adapt_page, "Adapt to this area"),
                 (self.classify_tab, "Classify land cover"),
                 (self.train_classifier_tab, "Train a land-cover classifier"))
        self.run_buttons: list[QPushButton] = []
        for page, label in pages:
            self.tabs.addTab(page, label)
            self.run_buttons += page.run_buttons
        self._alias_page_widgets()
        layout.addWidget(self.tabs)
        self.device_label = wrapped_label("Device: not checked yet", "SwiMDiffDevice")
        self.status = wrapped_label("", "SwiMDiffStatus")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        self.plot = LossPlot()
        for widget in (self.device_label, self.status):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.plot)
        layout.addStretch(0)
        self.setWidget(body)
        runner.started.connect(self._watch)
        runner.ended.connect(self._idle)
        runner.model_ready.connect(self._hand_on)

    def _alias_page_widgets(self) -> None:
        """The pages' widgets under the names the dock has always had (scripts and tests use them)."""
        detect, pretrain, finetune = self.detect_page, self.pretrain_page, self.finetune_page
        for page, names in ((detect, ("t1_combo", "t2_combo", "model_widget", "model_label", "method_combo",
                                      "threshold_spin", "output_widget", "probability_check", "detect_button")),
                            (pretrain, ("scene_list", "scene_folder", "pretrain_steps", "pretrain_batch",
                                        "pretrain_out")),
                            (finetune, ("finetune_data", "finetune_encoder", "encoder_label", "finetune_steps",
                                        "finetune_out"))):
            for name in names:
                setattr(self, name, getattr(page, name))
        self.run_detect, self.run_pretrain, self.run_finetune = (detect.run_detect, pretrain.run_pretrain,
                                                                 finetune.run_finetune)
        self.refresh_scene_layers = pretrain.refresh_scene_layers

    # --- the device ---------------------------------------------------------------------------------
    def check_device(self) -> None:
        """Ask the worker, in a background task, which device it will use, and show it."""
        if self._device_task is not None:
            return
        try:
            python = resolve_worker_python()
        except WorkerError as error:
            self.show_device(f"unknown ({error.message})")
            return
        self.show_device("checking…")
        self._device_task = QgsTask.fromFunction("SwiMDiff: checking the device", lambda _task: probe_device(python),
                                                 on_finished=self._device_checked)
        QgsApplication.taskManager().addTask(self._device_task)

    def show_device(self, text: str) -> None:
        """Show the device line (wrapped, whatever its length; the tooltip holds it too)."""
        self.device_label.setText(f"Device: {text}")
        self.device_label.setToolTip(self.device_label.text())

    def shutdown(self) -> None:
        """Stop listening to the device check and the project (the plugin is unloading)."""
        if self._device_task is not None:
            self._device_task.cancel()
            self._device_task = None
        self.detect_page.shutdown()
        self.pretrain_page.shutdown()
        self.adapt_page.shutdown()

    def _device_checked(self, exception: Exception | None, device: str | None = None) -> None:
        if self._device_task is None:  # the dock is gone or going
            return
        self._device_task = None
        self.show_device(str(device if exception is None else exception))

    # --- runs ---------------------------------------------------------------------------------------
    def _start(self, start: Callable[[], object]) -> None:
        """Call ``start``; a refused run (ValueError) or a missing worker shows in the status and the message bar."""
        try:
            start()
        except (ValueError, WorkerError) as error:
            self.status.setText(str(error))
            self.iface.messageBar().pushWarning("SwiMDiff", str(error))

    def cancel(self) -> None:
        """Ask the running task to stop, and say so at once (the worker needs a moment to stop cleanly)."""
        if not self.runner.busy():
            return
        self._cancelling = True
        self.cancel_button.setEnabled(False)
        self.status.setText(CANCELLING)
        self.runner.cancel()

    def _watch(self, task: WorkerTask) -> None:
        self._task, self._cancelling = task, False
        self.progress.setValue(0)
        self.plot.clear()
        self.status.setText(task.description())
        self.cancel_button.setEnabled(True)
        for button in self.run_buttons:
            button.setEnabled(False)  # one run at a time
        # bound methods, never lambdas: PyQt drops a bound method's connection when the dock is destroyed, while
        # a lambda would outlive it and touch a deleted widget (an exception in a slot aborts QGIS)
        task.progressChanged.connect(self._progress)
        task.message.connect(self._message)
        task.metric.connect(self.plot.add)

    def _progress(self, value: float) -> None:
        self.progress.setValue(int(value))

    def _message(self, text: str) -> None:
        if not self._cancelling:  # "cancelling…" stays until the run has ended
            self.status.setText(text)

    def _idle(self, state: str, text: str) -> None:
        self._cancelling = False
        self.cancel_button.setEnabled(False)
        for button in self.run_buttons:
            button.setEnabled(True)
        self.status.setText(text)
        task, self._task = self._task, None
        self.progress.setValue(100 if state == DONE else int(100 * task.fraction) if task is not None else 0)
        dates, self._detect_next = self._detect_next, None
        if state == DONE and dates is not None:
            self.detect_adapted(*dates)

    def _hand_on(self, command: str, folder: str) -> None:
        """A new model goes to the page that uses it: pre-trained encoder -> Fine-tune, change model -> Detect;
        an adapted model also runs on the dates it was adapted on, once its run has ended."""
        if command == "pretrain":
            self.finetune_page.set_encoder(folder)
        elif command in ("finetune-change", "adapt"):
            self.detect_page.set_model(folder)
        if command == "adapt":
            self._detect_next = self.adapt_page.ran_on

    def detect_adapted(self, t1_id: str, t2_id: str) -> None:
        """Show the Detect page with the adapted model on the two dates and detect changes (the threshold back to
        auto: the adapted model's validated one)."""
        project = QgsProject.instance()
        t1, t2 = project.mapLayer(t1_id), project.mapLayer(t2_id)
        if t1 is None or t2 is None:  # removed while adapting: the model waits on the Detect page
            return
        page = self.detect_page
        self.tabs.setCurrentWidget(page)
        page.t1_combo.setLayer(t1)
        page.t2_combo.setLayer(t2)
        page.threshold_spin.setValue(0.0)
        page.run_detect()
