"""The dock's "Adapt to this area" page: draw change / no-change polygons over two dates, then fine-tune a change
model on them in the background.

The analyst picks the two dates, clicks "New labelling layer" (a GeoPackage, or a memory layer, ready to draw
on: see :mod:`~swimdiff_qgis.labelling`), chooses which class the next polygons get and draws; the page counts
the polygons and the pixels of each class as they are drawn and says how many more are needed. "Adapt the
model" runs ``swimdiff adapt`` through the runner; the dock then hands the new model to the Detect page and
runs it on the same two dates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsFieldProxyModel, QgsMapLayer, QgsMapLayerProxyModel, QgsProject, QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QRadioButton, QWidget

from ..labelling import (
    CHANGE,
    CHANGE_FIELD,
    LABELS_PROPERTY,
    NO_CHANGE,
    add_labelling_layer,
    count_labels,
    default_labels_path,
    describe_counts,
    drawing_class,
    label_field_of,
    new_labelling_layer,
    set_drawing_class,
)
from ..outcomes import adapt_sentence
from ..qgis_log import LOG_TAG, log
from ..runs import Runner
from ..tasks import WorkerTask
from .bands import BandNamesChoice
from .detect import DEFAULT_MODEL, model_summary, pick_other_date
from .outputs import date_or_name
from .widgets import ChoiceBox, Starter, folder_widget, form_layout, info_label, narrow, show_info, spin

logger = logging.getLogger(__name__)

#: Where the starting model comes from: id -> what the page shows.
STARTS = {"default": "the shipped model", "detect": "the Detect page's model", "folder": "a model folder…"}
#: What the analyst is told once a new labelling layer is ready.
DRAW_HINT = ("Draw polygons on the map: new ones are “change” (red). Choose “no change” on the Adapt page to draw "
             "green ones where nothing changed. Save the layer's edits when you like; adapting uses them either way.")


def row(*widgets: QWidget) -> QWidget:
    """Widgets side by side in one form field."""
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    layout.addStretch(1)
    return holder


class AdaptPage(QWidget):
    """Adapt a change model to the analyst's area from polygons drawn over two dates.

    Attributes:
        t1_combo, t2_combo: The two dates (a different layer for t2 by default, never a SwiMDiff result).
        labels_combo: The polygon layer of labels; field_combo: its class field (1 change, 0 no change).
        draw_change, draw_no_change: The class the next drawn polygons get (the field's default value).
        counts_label: Polygons and estimated pixels per class, and what is still needed.
        new_layer_button: Creates a labelling layer ready to draw on: a GeoPackage, labels_file (empty: beside the
            project, else beside t1), or with memory_check a memory layer.
        start_combo: The model to start from (shipped, the Detect page's, a folder); model_widget: the folder;
            model_label: what the model holds.
        steps_spin, batch_spin: Optimisation steps and patch pairs per step.
        vegetation_check: Drop the starting model's stable-vegetation rule (``--keep-vegetation``).
        water_check: Drop the starting model's stable-water rule (``--keep-water``).
        band_names: Names for unnamed bands (``--assume-band-names``).
        output_widget: The new model folder (empty: a new folder beside the labels).
        adapt_button: Starts the run; result_label: live and final held-out F1.
        ran_on: The layer ids ``(t1, t2)`` of the last run started, for the detection that follows it.
        run_buttons: The page's run buttons.
    """

    def __init__(self, runner: Runner, start: Starter, detect_model: Callable[[], str] = lambda: "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner, self.start, self.detect_model = runner, start, detect_model
        self.ran_on: tuple[str, str] | None = None
        self._watched: QgsVectorLayer | None = None
        form = form_layout(self)
        self.t1_combo, self.t2_combo = narrow(QgsMapLayerComboBox()), narrow(QgsMapLayerComboBox())
        for combo in (self.t1_combo, self.t2_combo):
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.labels_combo = narrow(QgsMapLayerComboBox())
        self.labels_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.labels_combo.setAllowEmptyLayer(True)
        self.field_combo = narrow(QgsFieldComboBox(), icons=True)
        self.field_combo.setFilters(QgsFieldProxyModel.Int | QgsFieldProxyModel.LongLong)
        self.draw_change, self.draw_no_change = QRadioButton("change"), QRadioButton("no change")
        self.draw_change.setChecked(True)
        for button in (self.draw_change, self.draw_no_change):
            button.setToolTip("The class of the polygons you draw next: change (1, red) or no change (0, green); it "
                              "is the class field's default value")
        self.counts_label = info_label("SwiMDiffLabelCounts")
        self.new_layer_button = QPushButton("New labelling layer")
        self.new_layer_button.setToolTip("A polygon layer in t1's CRS with a 'change' field (1 change, 0 no change), "
                                         "styled, in edit mode with the add-polygon tool: draw at once")
        self.memory_check = QCheckBox("memory")
        self.memory_check.setToolTip("Make a temporary memory layer, lost when QGIS closes, instead of a GeoPackage "
                                     "file that keeps the drawings")
        self.labels_file = QgsFileWidget()
        self.labels_file.setStorageMode(QgsFileWidget.SaveFile)
        self.labels_file.setFilter("GeoPackage (*.gpkg)")
        self.labels_file.lineEdit().setPlaceholderText("beside the project (or t1)")
        self.start_combo = ChoiceBox([(text, value) for value, text in STARTS.items()])
        self.model_widget = folder_widget("a change model folder")
        self.model_label = info_label("SwiMDiffAdaptModelInfo")
        self.steps_spin, self.batch_spin = spin(1, 100_000, 120), spin(1, 1024, 8)
        self.band_names = BandNamesChoice()
        self.vegetation_check = QCheckBox("Green areas can change")
        self.vegetation_check.setToolTip(
            "The shipped model gives pixels green at both dates no change. Tick this when the changes you draw "
            "include changes within green areas (forest thinning, crop type): the adapted model then scores them")
        self.water_check = QCheckBox("Water can change")
        self.water_check.setToolTip(
            "The shipped model gives pixels that are open water at both dates no change. Tick this "
            "when the changes you draw include changes on the water (moorings, fish farms, floating solar): the "
            "adapted model then scores them")
        self.output_widget = folder_widget("new folder beside the labels")
        self.adapt_button = QPushButton("Adapt the model")
        self.adapt_button.clicked.connect(self.run_adapt)
        self.result_label = info_label("SwiMDiffAdaptResult")
        self.run_buttons = [self.adapt_button]
        for label, widget in (("Earlier (t1)", self.t1_combo), ("Later (t2)", self.t2_combo),
                              ("Labels", self.labels_combo), ("Class field", self.field_combo),
                              ("Drawing", row(self.draw_change, self.draw_no_change)), ("", self.counts_label),
                              ("", row(self.new_layer_button, self.memory_check)), ("", self.labels_file),
                              ("Start from", self.start_combo), ("", self.model_widget), ("", self.model_label),
                              ("Steps", row(self.steps_spin, QLabel("batch"), self.batch_spin)),
                              ("Band names", self.band_names), ("", self.vegetation_check), ("", self.water_check),
                              ("Model folder", self.output_widget),
                              ("", self.adapt_button), ("", self.result_label)):
            form.addRow(label, widget)
        self.new_layer_button.clicked.connect(self.new_labelling_layer)
        self.memory_check.toggled.connect(self._store_changed)
        self.start_combo.currentIndexChanged.connect(self.show_model)
        self.model_widget.fileChanged.connect(self.show_model)
        self.labels_combo.layerChanged.connect(self._labels_chosen)
        self.field_combo.fieldChanged.connect(self._field_chosen)
        self.t1_combo.layerChanged.connect(self.refresh_counts)
        self.draw_no_change.toggled.connect(self._drawing_changed)
        runner.started.connect(self._watch)
        runner.model_ready.connect(self._model_ready)
        QgsProject.instance().layersAdded.connect(self._layers_added)
        self._layers_added()
        self._store_changed()
        self.show_model()
        self._labels_chosen(self.labels_combo.currentLayer())

    def shutdown(self) -> None:
        """Stop following the project and the labels layer (the dock is going)."""
        self._watch_labels(None)
        try:
            QgsProject.instance().layersAdded.disconnect(self._layers_added)
        except TypeError:  # already disconnected
            pass

    # --- the labels -----------------------------------------------------------------------------------
    def labels_layer(self) -> QgsVectorLayer | None:
        """The chosen labels layer."""
        layer = self.labels_combo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    def label_field(self) -> str:
        """The chosen class field."""
        return self.field_combo.currentField() or CHANGE_FIELD

    def drawing(self) -> int:
        """The class the next polygons get: 1 (change) or 0 (no change)."""
        return NO_CHANGE if self.draw_no_change.isChecked() else CHANGE

    def new_labelling_layer(self) -> None:
        """Create a labelling layer in t1's CRS, add it above the rasters in edit mode with the add-polygon tool."""

        def make() -> None:
            t1, t2 = self.t1_combo.currentLayer(), self.t2_combo.currentLayer()
            if t1 is None:
                raise ValueError("choose the earlier date (t1) first: the labelling layer takes its CRS")
            memory = self.memory_check.isChecked()
            path = None if memory else (self.labels_file.filePath().strip() or default_labels_path(t1))
            dates = " → ".join(date_or_name(layer) for layer in (t1, t2) if layer is not None)
            layer = new_labelling_layer(t1.crs(), path, f"SwiMDiff labels {dates}")
            set_drawing_class(layer, self.drawing())
            add_labelling_layer(layer, self.runner.iface)
            self.labels_combo.setLayer(layer)
            log(f"new labelling layer '{layer.name()}': {layer.source() if path else 'memory (temporary)'}")
            self.runner.iface.messageBar().pushMessage(LOG_TAG, DRAW_HINT, Qgis.Info, 10)

        self.start(make)

    def refresh_counts(self, *_: object) -> None:
        """Count the labels layer's polygons and pixels per class (its unsaved edits included) and say what is
        still needed."""
        layer, field = self.labels_layer(), self.label_field()
        if layer is None or layer.fields().indexOf(field) < 0:
            show_info(self.counts_label, "Choose a polygon layer with a class field, or click New labelling layer "
                                         "to draw one.", "hint")
            return
        text, ready = describe_counts(count_labels(layer, field, self.t1_combo.currentLayer()))
        show_info(self.counts_label, text, "" if ready else "hint")

    def _layers_added(self, layers: list[QgsMapLayer] | None = None) -> None:
        """Give t2 another date than t1, and choose a new SwiMDiff labelling layer."""
        pick_other_date(self.t1_combo, self.t2_combo)
        for layer in layers or []:
            if layer.customProperty(LABELS_PROPERTY):
                self.labels_combo.setLayer(layer)

    def _labels_chosen(self, layer: QgsMapLayer | None) -> None:
        layer = layer if isinstance(layer, QgsVectorLayer) else None
        self.field_combo.setLayer(layer)
        field = label_field_of(layer)
        if field:
            self.field_combo.setField(field)
        self._watch_labels(layer)
        self._field_chosen(self.field_combo.currentField())

    def _field_chosen(self, field: str) -> None:
        layer = self.labels_layer()
        drawn = drawing_class(layer, field) if layer is not None and field else None
        if drawn is not None:
            for button, value in ((self.draw_change, CHANGE), (self.draw_no_change, NO_CHANGE)):
                button.blockSignals(True)
                button.setChecked(drawn == value)
                button.blockSignals(False)
        self.refresh_counts()

    def _drawing_changed(self, *_: object) -> None:
        layer = self.labels_layer()
        if layer is not None:
            set_drawing_class(layer, self.drawing(), self.label_field())

    def _watch_labels(self, layer: QgsVectorLayer | None) -> None:
        """Count again whenever the labels layer changes: drawn, deleted or reshaped polygons, edited classes,
        saved or rolled back edits."""
        old, self._watched = self._watched, layer
        if old is not None and not sip.isdeleted(old):
            for signal in (old.layerModified, old.editingStopped, old.dataChanged):
                try:
                    signal.disconnect(self.refresh_counts)
                except TypeError:  # not connected
                    pass
        if layer is not None:
            for signal in (layer.layerModified, layer.editingStopped, layer.dataChanged):
                signal.connect(self.refresh_counts)  # bound method: dropped with the page

    def _store_changed(self, *_: object) -> None:
        self.labels_file.setHidden(self.memory_check.isChecked())

    # --- the model ------------------------------------------------------------------------------------
    def start_model(self) -> str:
        """The model folder to start from; "" for the shipped model."""
        start = self.start_combo.currentData()
        if start == "detect":
            return self.detect_model().strip()
        return self.model_widget.filePath().strip() if start == "folder" else ""

    def show_model(self, *_: object) -> None:
        """Show the folder row for "a model folder…" and what the starting model holds."""
        self.model_widget.setVisible(self.start_combo.currentData() == "folder")
        folder = self.start_model()
        if not folder and not (DEFAULT_MODEL / "config.json").is_file():
            show_info(self.model_label, "the shipped model is not installed: choose a model folder", "error")
            return
        text, _ = model_summary(folder or DEFAULT_MODEL)
        show_info(self.model_label, text, "error" if text.startswith("no readable model") else "")

    # --- the run --------------------------------------------------------------------------------------
    def run_adapt(self) -> None:
        """Start adapting with the page's values."""

        def run() -> None:
            t1, t2 = self.t1_combo.currentLayer(), self.t2_combo.currentLayer()
            self.runner.adapt(t1, t2, self.labels_layer(), self.output_widget.filePath().strip(), self.start_model(),
                              self.label_field(), self.steps_spin.value(), self.batch_spin.value(),
                              self.band_names.value(), keep_vegetation=self.vegetation_check.isChecked(),
                              keep_water=self.water_check.isChecked())
            self.ran_on = (t1.id(), t2.id())

        self.start(run)

    def _watch(self, task: WorkerTask) -> None:
        """Follow an adapt run's held-out F1 (connected before the task manager may start it)."""
        if task.command == "adapt":
            show_info(self.result_label, "Adapting: the held-out F1 shows at each validation.", "hint")
            task.metric.connect(self._metric)  # bound method: dropped with the page

    def _metric(self, step: int, values: dict[str, Any]) -> None:
        if isinstance(values.get("val_f1"), float | int):
            show_info(self.result_label, f"Step {step}: held-out F1 {values['val_f1']:.2f}"
                      + (f" at threshold {values['threshold']:.2f}" if "threshold" in values else ""), "hint")

    def _model_ready(self, command: str, folder: str) -> None:
        if command == "adapt":  # the folder's name here, its path in the tooltip and the message bar
            show_info(self.result_label, adapt_sentence(self.runner.last_result, Path(folder).name))
            self.result_label.setToolTip(folder)
