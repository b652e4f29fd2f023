"""``swimdiff:evaluatechange``: precision, recall, F1 and IoU of change detection on labelled OSCD cities."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterString,
)

from .base import SwimDiffAlgorithm, advanced
from .detect_change import METHOD_LABELS, METHODS

SCORES = ("precision", "recall", "f1", "iou")


class EvaluateChangeAlgorithm(SwimDiffAlgorithm):
    """Score a change model (or the CVA baseline) on labelled cities (``swimdiff evaluate``)."""

    command = "evaluate"

    def name(self) -> str:
        return "evaluatechange"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Evaluate change detection"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("Pooled change-class precision, recall, F1 and IoU over every labelled pixel of the chosen cities "
                "of an OSCD-layout folder; optionally a Markdown report with previews and the scores as JSON.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        folder = QgsProcessingParameterFile.Folder
        self.addParameter(QgsProcessingParameterFile("DATA", "Labelled data (OSCD layout)", behavior=folder))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model folder (empty: the shipped default model)",
                                                     behavior=folder, optional=True))
        self.addParameter(QgsProcessingParameterEnum("METHOD", "Method", options=list(METHOD_LABELS), defaultValue=0))
        self.addParameter(QgsProcessingParameterString(
            "CITIES", "Cities (comma-separated; empty: the cities the model was not trained on)", optional=True))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            "INCLUDE_TRAINING_CITIES", "Allow the model's own training cities (their scores are not held out)",
            defaultValue=False)))
        self.addParameter(advanced(QgsProcessingParameterString("DEVICE", "Device (auto, cpu, cuda, cuda:N)",
                                                                defaultValue="auto")))
        self.addParameter(QgsProcessingParameterFolderDestination("REPORT", "Report folder", optional=True,
                                                                  createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination("JSON", "Scores (JSON)", "JSON files (*.json)",
                                                                optional=True, createByDefault=False))
        for score in SCORES:
            self.addOutput(QgsProcessingOutputNumber(score.upper(), f"Pooled {score}"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        args = ["--data", self.parameterAsFile(parameters, "DATA", context),
                "--method", METHODS[self.parameterAsEnum(parameters, "METHOD", context)],
                "--device", self.parameterAsString(parameters, "DEVICE", context) or "auto"]
        if model := self.parameterAsFile(parameters, "MODEL", context):
            args += ["--model", model]
        if cities := self.parameterAsString(parameters, "CITIES", context).strip():
            args += ["--cities", cities]
        if self.parameterAsBool(parameters, "INCLUDE_TRAINING_CITIES", context):
            args.append("--include-training-cities")
        report = self.parameterAsFileOutput(parameters, "REPORT", context)
        scores_file = self.parameterAsFileOutput(parameters, "JSON", context)
        if report:
            args += ["--report", report]
        if scores_file:
            args += ["--json", scores_file]
        outputs = self.run_swimdiff(args, feedback, output_files=[scores_file] if scores_file else [])
        pooled = outputs.get("pooled", {})
        return {"REPORT": outputs.get("report"), "JSON": scores_file or None,
                **{score.upper(): pooled.get(score) for score in SCORES}}
