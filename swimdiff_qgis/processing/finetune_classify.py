"""``swimdiff:finetuneclassify``: train a land-cover classifier on labelled patches (EuroSAT or BigEarthNet)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .base import SwimDiffAlgorithm, advanced


class FinetuneClassifyAlgorithm(SwimDiffAlgorithm):
    """Fine-tune land-cover classification from labelled patches (``swimdiff finetune-classify``)."""

    command = "finetune-classify"

    def name(self) -> str:
        return "finetuneclassify"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Fine-tune land-cover classification"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("Trains a scene classifier on labelled patches: one sub-folder per class of JPG/PNG/GeoTIFF "
                "patches (EuroSAT layout, single-label) or BigEarthNet patch folders (multi-label), starting from "
                "a pre-trained encoder folder (or random weights). Reports accuracy (or micro mAP) on a validation "
                "split; the model folder feeds 'Classify land cover'.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        number, folder = QgsProcessingParameterNumber, QgsProcessingParameterFile.Folder
        self.addParameter(QgsProcessingParameterFile("DATA", "Labelled patches (a sub-folder per class, or "
                                                     "BigEarthNet patches)", behavior=folder))
        self.addParameter(QgsProcessingParameterFile("ENCODER", "Pre-trained encoder folder (empty: random init)",
                                                     behavior=folder, optional=True))
        self.addParameter(number("EPOCHS", "Epochs (passes over the training patches)", minValue=1,
                                 maxValue=100_000, defaultValue=10))
        self.addParameter(QgsProcessingParameterBoolean("LINEAR_PROBE", "Train the linear layer only (frozen "
                                                        "encoder)", defaultValue=False))
        self.addParameter(advanced(number("BATCH_SIZE", "Batch size", minValue=2, maxValue=4096, defaultValue=32)))
        self.addParameter(advanced(number("LR", "Learning rate (empty: 1e-2 linear probe, 3e-4 otherwise)",
                                          type=number.Double, minValue=1e-8, maxValue=1.0, optional=True)))
        self.addParameter(advanced(number("VAL_FRACTION", "Validation share of the patches", type=number.Double,
                                          minValue=0.0, maxValue=0.5, defaultValue=0.2)))
        self.addParameter(advanced(QgsProcessingParameterBoolean("AUGMENT", "Random flips and rotations",
                                                                 defaultValue=True)))
        self.addParameter(advanced(number("SEED", "Seed", minValue=0, maxValue=2**31 - 1, defaultValue=0)))
        self.addParameter(advanced(QgsProcessingParameterString("ARCH", "Backbone without encoder (timm ResNet)",
                                                                defaultValue="resnet18")))
        self.addParameter(advanced(QgsProcessingParameterString("DEVICE", "Device (auto, cpu, cuda, cuda:N)",
                                                                defaultValue="auto")))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Classifier folder"))
        self.addOutput(QgsProcessingOutputString("METRIC", "Validation metric (accuracy or micro_map)"))
        self.addOutput(QgsProcessingOutputNumber("SCORE", "Validation score"))
        self.addOutput(QgsProcessingOutputFile("CONFUSION_MATRIX", "Confusion matrix (PNG)"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        args = ["--data", self.parameterAsFile(parameters, "DATA", context),
                "--out", self.parameterAsFileOutput(parameters, "OUTPUT", context),
                "--epochs", str(self.parameterAsInt(parameters, "EPOCHS", context)),
                "--batch-size", str(self.parameterAsInt(parameters, "BATCH_SIZE", context)),
                "--val-fraction", repr(self.parameterAsDouble(parameters, "VAL_FRACTION", context)),
                "--seed", str(self.parameterAsInt(parameters, "SEED", context)),
                "--arch", self.parameterAsString(parameters, "ARCH", context) or "resnet18",
                "--device", self.parameterAsString(parameters, "DEVICE", context) or "auto"]
        if encoder := self.parameterAsFile(parameters, "ENCODER", context):
            args += ["--encoder", encoder]
        if parameters.get("LR") not in (None, ""):
            args += ["--lr", repr(self.parameterAsDouble(parameters, "LR", context))]
        if self.parameterAsBool(parameters, "LINEAR_PROBE", context):
            args.append("--linear-probe")
        if not self.parameterAsBool(parameters, "AUGMENT", context):
            args.append("--no-augment")
        outputs = self.run_swimdiff(args, feedback)
        metric = "micro_map" if "micro_map" in outputs else "accuracy"
        return {"OUTPUT": outputs["model_dir"], "METRIC": metric, "SCORE": outputs.get(metric),
                "CONFUSION_MATRIX": outputs.get("confusion_matrix")}
