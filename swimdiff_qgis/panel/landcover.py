"""The dock's land-cover tabs: Classify land cover (a raster with a classifier) and Train classifier.

Widgets only: every run goes through :class:`~.runs.Runner`, started by the dock's ``start`` callback (which
shows a refused run in the status and the message bar).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QCheckBox, QPushButton, QWidget

from ..model_info import CLASSIFIER_FIX, read_classifier_info, read_encoder_info
from ..runs import Runner
from .widgets import Starter, folder_widget, form_layout, geotiff_widget, info_label, narrow, show_info, spin

logger = logging.getLogger(__name__)


class ClassifyTab(QWidget):
    """Classify a raster layer with a land-cover classifier folder; the map comes back as a paletted layer.

    Attributes:
        raster_combo: The raster layer to classify.
        model_widget: The classifier folder.
        model_label: What the folder holds (classes, bands, patch size), or why it is unusable.
        probabilities_check: Also write and show the class probabilities.
        output_widget: The land-cover GeoTIFF (empty: a temporary file).
        classify_button: Starts the run.
        run_buttons: The tab's run buttons (the dock disables them while a run goes on).
    """

    def __init__(self, runner: Runner, start: Starter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.start = start
        form = form_layout(self)
        self.raster_combo = narrow(QgsMapLayerComboBox())
        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.model_widget = folder_widget("a land-cover classifier folder")
        self.model_widget.fileChanged.connect(self._model_changed)
        self.model_label = info_label("SwiMDiffClassifierInfo")
        self.probabilities_check = QCheckBox("also the probabilities")
        self.probabilities_check.setToolTip("Also write and show the class probabilities beside the map, as "
                                            "<map>_probabilities.tif")
        self.output_widget = geotiff_widget("temporary file")
        self.classify_button = QPushButton("Classify land cover")
        self.classify_button.clicked.connect(self.run_classify)
        self.run_buttons = [self.classify_button]
        for label, widget in (("Raster", self.raster_combo), ("Classifier", self.model_widget),
                              ("", self.model_label), ("Land cover", self.output_widget),
                              ("", self.probabilities_check), ("", self.classify_button)):
            form.addRow(label, widget)
        self._model_changed("")

    def set_model(self, folder: str) -> None:
        """Choose a classifier folder (e.g. the one just trained)."""
        self.model_widget.setFilePath(folder)

    def run_classify(self) -> None:
        """Start a classification with the tab's values (an invalid classifier folder is refused at once)."""
        model = self.model_widget.filePath().strip()

        def start() -> None:
            if not model:
                raise ValueError(f"no classifier chosen: {CLASSIFIER_FIX}")
            read_classifier_info(model)  # ValueError: shown in the status and the message bar
            self.runner.classify(self.raster_combo.currentLayer(), model, self.output_widget.filePath().strip(),
                                 self.probabilities_check.isChecked())

        self.start(start)

    def _model_changed(self, folder: str) -> None:
        """Show the classes of the chosen classifier (one line), or why the folder is unusable."""
        folder = folder.strip()
        if not folder:
            show_info(self.model_label, f"No classifier chosen: {CLASSIFIER_FIX}.", "hint")
            return
        try:
            info = read_classifier_info(folder)
        except ValueError as error:
            show_info(self.model_label, str(error), "error")
            return
        show_info(self.model_label, info.describe())


class TrainClassifierTab(QWidget):
    """Train a land-cover classifier on labelled patches (one sub-folder per class, or BigEarthNet patches).

    Attributes:
        data_widget: The labelled patches folder.
        encoder_widget: An optional pre-trained encoder folder.
        encoder_label: What the encoder holds, or why it is unusable.
        epochs_spin: Passes over the training patches.
        linear_probe_check: Train only the linear layer on frozen encoder features.
        output_widget: The classifier folder to write.
        run_buttons: The tab's run buttons.
    """

    def __init__(self, runner: Runner, start: Starter, on_trained: Callable[[str], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.start = start
        self.on_trained = on_trained
        form = form_layout(self)
        self.data_widget = folder_widget("labelled patches (a sub-folder per class)")
        self.encoder_widget = folder_widget("optional: a pre-trained encoder folder")
        self.encoder_widget.fileChanged.connect(self._encoder_changed)
        self.encoder_label = info_label()
        self.epochs_spin = spin(1, 100_000, 10)
        self.linear_probe_check = QCheckBox("linear probe")
        self.linear_probe_check.setToolTip("Train only the linear layer on the frozen encoder's features (fast; "
                                           "the encoder is not changed)")
        self.output_widget = folder_widget("output classifier folder")
        button = QPushButton("Train classifier")
        button.clicked.connect(self.run_train)
        self.run_buttons = [button]
        for label, widget in (("Patches", self.data_widget), ("Encoder", self.encoder_widget),
                              ("", self.encoder_label), ("Epochs", self.epochs_spin), ("", self.linear_probe_check),
                              ("Output", self.output_widget), ("", button)):
            form.addRow(label, widget)
        self._encoder_changed("")

    def run_train(self) -> None:
        """Start a training with the tab's values; once done, the Classify tab gets the new classifier."""
        encoder = self.encoder_widget.filePath().strip()

        def start() -> None:
            if encoder:
                read_encoder_info(encoder)  # ValueError: shown in the status and the message bar
            task = self.runner.finetune_classify(self.data_widget.filePath().strip(),
                                                 self.output_widget.filePath().strip(), encoder,
                                                 self.epochs_spin.value(), self.linear_probe_check.isChecked())
            if (on_trained := self.on_trained) is not None:
                task.succeeded.connect(lambda result: on_trained(str(result.get("model_dir", ""))))

        self.start(start)

    def _encoder_changed(self, folder: str) -> None:
        folder = folder.strip()
        if not folder:
            show_info(self.encoder_label, "Random initialisation (the baseline).", "hint")
            return
        try:
            show_info(self.encoder_label, read_encoder_info(folder).describe())
        except ValueError as error:
            show_info(self.encoder_label, str(error), "error")
