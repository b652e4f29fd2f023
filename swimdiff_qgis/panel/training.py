"""The dock's training pages: "Pre-train an encoder" (with Resume and Overwrite) and "Fine-tune a change
model". Each hands its new model to the next page through the dock (pre-train -> fine-tune -> detect)."""

from __future__ import annotations

import logging

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QWidget,
)

from ..layers import is_result_layer
from ..model_info import holds_model, read_encoder_info
from ..runs import Runner
from .bands import BandNamesChoice
from .widgets import Asker, Starter, ask, folder_widget, form_layout, info_label, show_info, spin

logger = logging.getLogger(__name__)

RESUME, OVERWRITE = "resume", "overwrite"


class PretrainPage(QWidget):
    """Pre-train an encoder on dated rasters of the project (SwiMDiff results are not listed) or a folder.

    Attributes:
        scene_list: The project's raster layers, each with a check box.
        scene_folder: An optional folder of scenes.
        pretrain_steps: The run's total steps; pretrain_batch: patches per step.
        band_names: Names for unnamed bands (``--assume-band-names``).
        pretrain_out: The model folder.
        resume_check: Continue the stopped run in the output folder.
        overwrite_check: Replace the model in the output folder (asked before).
        ask: How the page asks before replacing a model (tests replace it).
        run_buttons: The page's run buttons.
    """

    def __init__(self, runner: Runner, start: Starter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner, self.start = runner, start
        self.ask: Asker = ask
        form = form_layout(self)
        self.scene_list = QListWidget()
        self.scene_folder = folder_widget("optional: a folder of scenes")
        self.pretrain_steps, self.pretrain_batch = spin(1, 10_000_000, 1000), spin(2, 65536, 64)
        self.band_names = BandNamesChoice()
        self.pretrain_out = folder_widget("output model folder")
        self.resume_check = QCheckBox("Resume")
        self.resume_check.setToolTip("Continue the stopped pre-training in the output folder from its last "
                                     "checkpoint, up to Steps in all")
        self.overwrite_check = QCheckBox("Overwrite")
        self.overwrite_check.setToolTip("Replace the model in the output folder (you are asked first)")
        self.resume_check.toggled.connect(lambda on: on and self.overwrite_check.setChecked(False))
        self.overwrite_check.toggled.connect(lambda on: on and self.resume_check.setChecked(False))
        modes = QWidget()
        row = QHBoxLayout(modes)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.resume_check)
        row.addWidget(self.overwrite_check)
        row.addStretch(1)
        button = QPushButton("Pre-train")
        button.clicked.connect(self.run_pretrain)
        self.run_buttons = [button]
        refresh = QPushButton("Refresh layers")
        refresh.clicked.connect(self.refresh_scene_layers)
        for label, widget in (("Dated rasters", self.scene_list), ("", refresh), ("Folder", self.scene_folder),
                              ("Steps", self.pretrain_steps), ("Batch size", self.pretrain_batch),
                              ("Band names", self.band_names), ("Output", self.pretrain_out),
                              ("If it exists", modes), ("", button)):
            form.addRow(label, widget)
        project = QgsProject.instance()
        project.layersAdded.connect(self.refresh_scene_layers)
        project.layersRemoved.connect(self.refresh_scene_layers)
        self.refresh_scene_layers()

    def shutdown(self) -> None:
        """Stop following the project (the dock is going)."""
        project = QgsProject.instance()
        for signal in (project.layersAdded, project.layersRemoved):
            try:
                signal.disconnect(self.refresh_scene_layers)
            except TypeError:  # already disconnected
                pass

    def refresh_scene_layers(self, *_: object) -> None:
        """List the project's file rasters that are not SwiMDiff results; checked ones stay checked."""
        checked = {self.scene_list.item(i).data(Qt.UserRole) for i in range(self.scene_list.count())
                   if self.scene_list.item(i).checkState() == Qt.Checked}
        self.scene_list.clear()
        for layer in QgsProject.instance().mapLayers().values():
            if isinstance(layer, QgsRasterLayer) and layer.providerType() == "gdal" and not is_result_layer(layer):
                source = layer.source().split("|")[0]
                item = QListWidgetItem(layer.name())
                item.setData(Qt.UserRole, source)
                item.setToolTip(source)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if source in checked else Qt.Unchecked)
                self.scene_list.addItem(item)

    def run_pretrain(self) -> None:
        """Start a pre-training with the page's values; a folder that holds a model is continued or replaced
        only when the user says so."""
        data = [self.scene_list.item(i).data(Qt.UserRole) for i in range(self.scene_list.count())
                if self.scene_list.item(i).checkState() == Qt.Checked]
        if folder := self.scene_folder.filePath().strip():
            data.append(folder)
        out = self.pretrain_out.filePath().strip()

        def start() -> None:
            band_names = self.band_names.value()  # ValueError: shown in the status and the message bar
            choice = self.choose_mode(out)
            if choice is not None:
                self.runner.pretrain(data, out, self.pretrain_steps.value(), self.pretrain_batch.value(),
                                     resume=choice == RESUME, overwrite=choice == OVERWRITE, band_names=band_names)

        self.start(start)

    def choose_mode(self, out: str) -> str | None:
        """``resume``, ``overwrite`` or ``""`` (a new model) for ``out``; None when the user says no.

        Raises:
            ValueError: Resume is checked but ``out`` holds no training state to continue.
        """
        model, state = holds_model(out) if out else (False, False)
        if self.resume_check.isChecked():
            if not state:
                raise ValueError(f"Resume: '{out}' holds no training state to continue; choose the folder of a "
                                 "stopped pre-training, or uncheck Resume")
            return RESUME
        if not (model or state):
            return OVERWRITE if self.overwrite_check.isChecked() else ""
        what = "a pre-trained model" if model else "a stopped pre-training"
        if self.overwrite_check.isChecked():
            choices = [("Replace it", OVERWRITE)]
            text = f"'{out}' already holds {what}. Replace it? Its model and training state are overwritten."
        else:
            choices = ([("Continue it (resume)", RESUME)] if state else []) + [("Replace it", OVERWRITE)]
            text = (f"'{out}' already holds {what}. "
                    + ("Continue it from its last checkpoint, or replace it? " if state else "Replace it? ")
                    + "Replacing overwrites its model and training state.")
        answer = self.ask(self, "SwiMDiff: the output folder holds a model", text, choices)
        if answer is not None:
            self.resume_check.setChecked(answer == RESUME)
            self.overwrite_check.setChecked(answer == OVERWRITE)
        return answer


class FinetunePage(QWidget):
    """Fine-tune a change model on labelled pairs (OSCD layout), from a pre-trained encoder or random weights.

    Attributes:
        finetune_data: The labelled data folder.
        finetune_encoder: An optional pre-trained encoder folder; encoder_label: what it holds.
        finetune_steps: Optimisation steps.
        finetune_out: The model folder.
        run_buttons: The page's run buttons.
    """

    def __init__(self, runner: Runner, start: Starter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner, self.start = runner, start
        form = form_layout(self)
        self.finetune_data = folder_widget("labelled data (OSCD layout)")
        self.finetune_encoder = folder_widget("optional: a pre-trained encoder folder")
        self.finetune_encoder.fileChanged.connect(self._encoder_changed)
        self.encoder_label = info_label("SwiMDiffEncoderInfo")  # what the encoder's config.json fixes
        self.finetune_steps = spin(1, 10_000_000, 600)
        self.finetune_out = folder_widget("output model folder")
        button = QPushButton("Fine-tune")
        button.clicked.connect(self.run_finetune)
        self.run_buttons = [button]
        for label, widget in (("Data", self.finetune_data), ("Encoder", self.finetune_encoder),
                              ("", self.encoder_label), ("Steps", self.finetune_steps), ("Output", self.finetune_out),
                              ("", button)):
            form.addRow(label, widget)
        self._encoder_changed("")

    def set_encoder(self, folder: str) -> None:
        """Choose a pre-trained encoder folder (e.g. the one just pre-trained)."""
        self.finetune_encoder.setFilePath(folder)

    def run_finetune(self) -> None:
        """Start a fine-tuning with the page's values (an invalid encoder folder is refused before the worker)."""
        encoder = self.finetune_encoder.filePath().strip()

        def start() -> None:
            if encoder:
                read_encoder_info(encoder)  # ValueError: shown in the status and the message bar
            self.runner.finetune(self.finetune_data.filePath().strip(), self.finetune_out.filePath().strip(),
                                 encoder, self.finetune_steps.value())

        self.start(start)

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
