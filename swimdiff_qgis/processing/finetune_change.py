"""``swimdiff:finetunechange``: train a Siamese U-Net change model on labelled OSCD cities."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .base import SwimDiffAlgorithm, advanced

TRAIN_CITIES = "aguasclaras,bercy,bordeaux,paris,saclay_e,pisa,beihai,beirut"
VAL_CITIES = "mumbai,nantes"


class FinetuneChangeAlgorithm(SwimDiffAlgorithm):
    """Fine-tune change detection from labelled change masks (``swimdiff finetune-change``)."""

    command = "finetune-change"

    def name(self) -> str:
        return "finetunechange"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Fine-tune change detection"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("Trains a Siamese U-Net on an OSCD-layout folder (images/<city>/imgs_1|imgs_2, labels/<city>/cm), "
                "starting from a pre-trained encoder folder (or random weights). The step and threshold with the "
                "best F1 on the validation cities are kept; the model folder feeds 'Detect changes'.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        number, folder = QgsProcessingParameterNumber, QgsProcessingParameterFile.Folder
        self.addParameter(QgsProcessingParameterFile("DATA", "Labelled data (OSCD layout)", behavior=folder))
        self.addParameter(QgsProcessingParameterFile("ENCODER", "Pre-trained encoder folder (empty: random init)",
                                                     behavior=folder, optional=True))
        self.addParameter(QgsProcessingParameterString("CITIES", "Training cities", defaultValue=TRAIN_CITIES))
        self.addParameter(QgsProcessingParameterString("VAL_CITIES", "Validation cities", defaultValue=VAL_CITIES,
                                                       optional=True))
        self.addParameter(number("STEPS", "Steps", minValue=1, maxValue=10_000_000, defaultValue=600))
        self.addParameter(QgsProcessingParameterBoolean("FREEZE_ENCODER", "Train the decoder only",
                                                        defaultValue=False))
        self.addParameter(advanced(number("BATCH_SIZE", "Batch size", minValue=1, maxValue=4096, defaultValue=8)))
        self.addParameter(advanced(number("PATCH_SIZE", "Patch size (pixels)", minValue=16, maxValue=1024,
                                          defaultValue=96)))
        self.addParameter(advanced(number("EVAL_EVERY", "Steps between validations", minValue=1,
                                          maxValue=1_000_000, defaultValue=50)))
        self.addParameter(advanced(QgsProcessingParameterString("BANDS", "Bands without encoder (empty: all shared)",
                                                                optional=True)))
        self.addParameter(advanced(QgsProcessingParameterString("DEVICE", "Device (auto, cpu, cuda, cuda:N)",
                                                                defaultValue="auto")))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Change model folder"))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD", "Validated probability threshold"))
        self.addOutput(QgsProcessingOutputNumber("VAL_F1", "Validation F1"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        args = ["--data", self.parameterAsFile(parameters, "DATA", context),
                "--out", self.parameterAsFileOutput(parameters, "OUTPUT", context),
                "--cities", self.parameterAsString(parameters, "CITIES", context),
                "--val-cities", self.parameterAsString(parameters, "VAL_CITIES", context),
                "--steps", str(self.parameterAsInt(parameters, "STEPS", context)),
                "--batch-size", str(self.parameterAsInt(parameters, "BATCH_SIZE", context)),
                "--patch-size", str(self.parameterAsInt(parameters, "PATCH_SIZE", context)),
                "--eval-every", str(self.parameterAsInt(parameters, "EVAL_EVERY", context)),
                "--device", self.parameterAsString(parameters, "DEVICE", context) or "auto"]
        if encoder := self.parameterAsFile(parameters, "ENCODER", context):
            args += ["--encoder", encoder]
        if bands := self.parameterAsString(parameters, "BANDS", context).strip():
            args += ["--bands", bands]
        if self.parameterAsBool(parameters, "FREEZE_ENCODER", context):
            args.append("--freeze-encoder")
        outputs = self.run_swimdiff(args, feedback)
        return {"OUTPUT": outputs["model_dir"], "THRESHOLD": outputs.get("threshold"), "VAL_F1": outputs.get("val_f1")}
