"""The SwiMDiff dock: one page per task (Detect changes, Pre-train, Fine-tune, Classify land cover, Train a
land-cover classifier) chosen from a drop-down list, then progress, cancel, device and a live loss plot.

Widgets only: every run goes through :class:`~.runs.Runner`; the land-cover tabs are in ``landcover_tabs.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from qgis.core import QgsApplication, QgsMapLayerProxyModel, QgsProject, QgsRasterLayer, QgsTask
from qgis.gui import QgisInterface, QgsDockWidget, QgsDoubleSpinBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QPointF, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPen, QPolygonF
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .environment import PLUGIN_DIR
from .landcover_tabs import ClassifyTab, TrainClassifierTab
from .model_info import read_encoder_info
from .runs import METHODS, Runner
from .settings import resolve_worker_python
from .tasks import WorkerTask
from .widgets import TaskPages, folder_widget, geotiff_widget, info_label, show_info, spin
from .worker import WorkerError, probe_device

logger = logging.getLogger(__name__)

DEFAULT_MODEL = PLUGIN_DIR / "resources" / "models" / "oscd-change"


def model_summary(folder: str | Path) -> tuple[str, float | None]:
    """A one-line description of a model folder from its ``config.json``, and its validated threshold.

    Args:
        folder: A ``swimdiff`` model folder.

    Returns:
        ``(text, threshold or None)``; the text says what is wrong when the folder holds no readable config.
    """
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"no readable model in {folder} ({exc.__class__.__name__})", None
    threshold = config.get("threshold")
    bands = ", ".join(config.get("bands", [])) or "?"
    text = f"{config.get('kind', 'model')}: bands {bands}"
    return (text + (f"; threshold {threshold:.2f}" if isinstance(threshold, float | int) else "")), (
        float(threshold) if isinstance(threshold, float | int) else None)


class LossPlot(QWidget):
    """A small live plot of the training loss (one polyline, auto-scaled)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[tuple[int, float]] = []
        self.setMinimumHeight(90)

    def clear(self) -> None:
        """Forget the points."""
        self.points = []
        self.update()

    def add(self, step: int, values: dict[str, float]) -> None:
        """Add the ``loss`` of a metric event (other metrics are ignored)."""
        if "loss" in values:
            self.points.append((step, values["loss"]))
            self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(255, 255, 255))
        painter.setPen(QColor(120, 120, 120))
        painter.drawText(4, 12, f"loss {self.points[-1][1]:.4g} at step {self.points[-1][0]}" if self.points
                         else "loss (shown while training)")
        if len(self.points) < 2:
            return
        steps, losses = [p[0] for p in self.points], [p[1] for p in self.points]
        x0, x1, y0, y1 = min(steps), max(steps), min(losses), max(losses)
        width, height = self.width() - 8, self.height() - 22
        polygon = QPolygonF([QPointF(4 + width * (s - x0) / max(x1 - x0, 1),
                                     18 + height * (1 - (v - y0) / max(y1 - y0, 1e-12))) for s, v in self.points])
        painter.setPen(QPen(QColor(31, 119, 180), 1.5))
        painter.drawPolyline(polygon)


class SwimDiffDock(QgsDockWidget):
    """The plugin's panel."""

    def __init__(self, iface: QgisInterface, runner: Runner, parent: QWidget | None = None) -> None:
        super().__init__("SwiMDiff", parent)
        self.setObjectName("SwiMDiffDock")
        self.iface = iface
        self.runner = runner
        self._device_task: QgsTask | None = None
        self.run_buttons: list[QPushButton] = []
        body = QWidget()
        layout = QVBoxLayout(body)
        self.tabs = TaskPages()
        self.classify_tab = ClassifyTab(runner, self._start)
        self.train_classifier_tab = TrainClassifierTab(runner, self._start, self.classify_tab.set_model)
        for page, label in ((self._detect_tab(), "Detect changes"), (self._pretrain_tab(), "Pre-train an encoder"),
                            (self._finetune_tab(), "Fine-tune a change model"),
                            (self.classify_tab, "Classify land cover"),
                            (self.train_classifier_tab, "Train a land-cover classifier")):
            self.tabs.addTab(page, label)
        self.run_buttons += self.classify_tab.run_buttons + self.train_classifier_tab.run_buttons
        layout.addWidget(self.tabs)
        self.device_label = QLabel("Device: not checked yet")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.runner.cancel)
        row = QHBoxLayout()
        row.addWidget(self.progress)
        row.addWidget(self.cancel_button)
        self.plot = LossPlot()
        for widget in (self.device_label, self.status):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.plot)
        self.setWidget(body)
        runner.started.connect(self._watch)
        runner.ended.connect(self._idle)

    # --- tabs ---------------------------------------------------------------------------------------
    def _detect_tab(self) -> QWidget:
        tab, form = QWidget(), QFormLayout()
        tab.setLayout(form)
        self.t1_combo, self.t2_combo = QgsMapLayerComboBox(), QgsMapLayerComboBox()
        for combo in (self.t1_combo, self.t2_combo):
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.model_widget = folder_widget("default: the shipped model")
        self.model_widget.fileChanged.connect(self._model_changed)
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.threshold_spin = QgsDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1e6)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setSpecialValueText("auto")
        self.threshold_spin.setClearValue(0.0)
        self.output_widget = geotiff_widget("temporary file")
        self.probability_check = QCheckBox("also the change probability")
        self.probability_check.setChecked(True)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        self.detect_button = QPushButton("Detect changes")
        self.detect_button.clicked.connect(self.run_detect)
        self.run_buttons.append(self.detect_button)
        for label, widget in (("Earlier (t1)", self.t1_combo), ("Later (t2)", self.t2_combo),
                              ("Model", self.model_widget), ("", self.model_label), ("Method", self.method_combo),
                              ("Threshold", self.threshold_spin), ("Change mask", self.output_widget),
                              ("", self.probability_check), ("", self.detect_button)):
            form.addRow(label, widget)
        self._model_changed("")
        return tab

    def _pretrain_tab(self) -> QWidget:
        tab, form = QWidget(), QFormLayout()
        tab.setLayout(form)
        self.scene_list = QListWidget()
        self.scene_folder = folder_widget("optional: a folder of scenes")
        self.pretrain_steps, self.pretrain_batch = spin(1, 10_000_000, 1000), spin(2, 65536, 64)
        self.pretrain_out = folder_widget("output model folder")
        button = QPushButton("Pre-train")
        button.clicked.connect(self.run_pretrain)
        self.run_buttons.append(button)
        refresh = QPushButton("Refresh layers")
        refresh.clicked.connect(self.refresh_scene_layers)
        for label, widget in (("Dated rasters", self.scene_list), ("", refresh), ("Folder", self.scene_folder),
                              ("Steps", self.pretrain_steps), ("Batch size", self.pretrain_batch),
                              ("Output", self.pretrain_out), ("", button)):
            form.addRow(label, widget)
        self.refresh_scene_layers()
        return tab

    def _finetune_tab(self) -> QWidget:
        tab, form = QWidget(), QFormLayout()
        tab.setLayout(form)
        self.finetune_data = folder_widget("labelled data (OSCD layout)")
        self.finetune_encoder = folder_widget("optional: a pre-trained encoder folder")
        self.finetune_encoder.fileChanged.connect(self._encoder_changed)
        self.encoder_label = info_label("SwiMDiffEncoderInfo")  # what the encoder's config.json fixes
        self.finetune_steps = spin(1, 10_000_000, 600)
        self.finetune_out = folder_widget("output model folder")
        button = QPushButton("Fine-tune")
        button.clicked.connect(self.run_finetune)
        self.run_buttons.append(button)
        for label, widget in (("Data", self.finetune_data), ("Encoder", self.finetune_encoder),
                              ("", self.encoder_label), ("Steps", self.finetune_steps), ("Output", self.finetune_out),
                              ("", button)):
            form.addRow(label, widget)
        self._encoder_changed("")
        return tab

    # --- actions ------------------------------------------------------------------------------------
    def refresh_scene_layers(self) -> None:
        """List the project's raster layers, unchecked, for pre-training."""
        self.scene_list.clear()
        for layer in QgsProject.instance().mapLayers().values():
            if isinstance(layer, QgsRasterLayer) and layer.providerType() == "gdal":
                item = QListWidgetItem(layer.name())
                item.setData(Qt.UserRole, layer.source().split("|")[0])
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Unchecked)
                self.scene_list.addItem(item)

    def run_detect(self) -> None:
        """Start a detection with the tab's values."""
        threshold = self.threshold_spin.value()
        self._start(lambda: self.runner.detect(
            self.t1_combo.currentLayer(), self.t2_combo.currentLayer(), self.output_widget.filePath().strip(),
            self.model_widget.filePath().strip(), self.method_combo.currentText(),
            threshold if threshold > 0 else None, self.probability_check.isChecked()))

    def run_pretrain(self) -> None:
        """Start a pre-training with the tab's values."""
        data = [self.scene_list.item(i).data(Qt.UserRole) for i in range(self.scene_list.count())
                if self.scene_list.item(i).checkState() == Qt.Checked]
        if folder := self.scene_folder.filePath().strip():
            data.append(folder)
        self._start(lambda: self.runner.pretrain(data, self.pretrain_out.filePath().strip(),
                                                 self.pretrain_steps.value(), self.pretrain_batch.value()))

    def run_finetune(self) -> None:
        """Start a fine-tuning with the tab's values (an invalid encoder folder is refused before the worker)."""
        encoder = self.finetune_encoder.filePath().strip()

        def start() -> None:
            if encoder:
                read_encoder_info(encoder)  # ValueError: shown in the status and the message bar
            self.runner.finetune(self.finetune_data.filePath().strip(), self.finetune_out.filePath().strip(),
                                 encoder, self.finetune_steps.value())

        self._start(start)

    def check_device(self) -> None:
        """Ask the worker, in a background task, which device it will use, and show it."""
        if self._device_task is not None:
            return
        try:
            python = resolve_worker_python()
        except WorkerError as error:
            self.device_label.setText(f"Device: unknown ({error.message})")
            return
        self.device_label.setText("Device: checking…")
        self._device_task = QgsTask.fromFunction("SwiMDiff: checking the device", lambda _task: probe_device(python),
                                                 on_finished=self._show_device)
        QgsApplication.taskManager().addTask(self._device_task)

    def shutdown(self) -> None:
        """Stop listening to the device check (the plugin is unloading)."""
        if self._device_task is not None:
            self._device_task.cancel()
            self._device_task = None

    def _show_device(self, exception: Exception | None, device: str | None = None) -> None:
        if self._device_task is None:  # the dock is gone or going
            return
        self._device_task = None
        self.device_label.setText(f"Device: {device if exception is None else exception}")

    def _start(self, start: Callable[[], object]) -> None:
        """Call ``start``; a refused run (ValueError) or a missing worker shows in the status and the message bar."""
        try:
            start()
        except (ValueError, WorkerError) as error:
            self.status.setText(str(error))
            self.iface.messageBar().pushWarning("SwiMDiff", str(error))

    def _model_changed(self, folder: str) -> None:
        if not folder and not (DEFAULT_MODEL / "config.json").is_file():
            text, threshold = "the default model is not installed: choose a model folder or the cva method", None
        else:
            text, threshold = model_summary(folder or DEFAULT_MODEL)
        self.model_label.setText(text)
        # "auto" (0) lets the worker use the model's validated threshold, or Otsu's without a model
        self.threshold_spin.setSpecialValueText("auto" if threshold is None else f"auto ({threshold:.2f})")

    def _encoder_changed(self, folder: str) -> None:
        """Show what the chosen encoder's config.json fixes (bands, patch size), or why the folder is unusable."""
        folder = folder.strip()
        if not folder:
            show_info(self.encoder_label, "Random initialisation: the bands both dates share.", "hint")
            return
        try:
            info = read_encoder_info(folder)
        except ValueError as error:
            show_info(self.encoder_label, str(error), "error")
            return
        show_info(self.encoder_label, info.describe())

    def _watch(self, task: WorkerTask) -> None:
        self.progress.setValue(0)
        self.plot.clear()
        self.status.setText(task.description())
        self.cancel_button.setEnabled(True)
        for button in self.run_buttons:
            button.setEnabled(False)  # one run at a time
        task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        task.message.connect(self.status.setText)
        task.metric.connect(self.plot.add)

    def _idle(self, ok: bool) -> None:  # noqa: FBT001 (signal argument)
        self.cancel_button.setEnabled(False)
        for button in self.run_buttons:
            button.setEnabled(True)
        self.status.setText("done" if ok else "stopped")
        if ok:
            self.progress.setValue(100)
