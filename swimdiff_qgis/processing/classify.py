"""``swimdiff:classify``: a land-cover map (and class probabilities) of a raster, by ``swimdiff classify``."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import SwimDiffAlgorithm, advanced
from .styling import LANDCOVER, PROBABILITIES, style_landcover_when_loaded


class ClassifyAlgorithm(SwimDiffAlgorithm):
    """Classify the land cover of a raster with a classifier trained by ``swimdiff finetune-classify``."""

    command = "classify"

    def name(self) -> str:
        return "classify"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Classify land cover"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("Land-cover map of a raster (band 1: class id 0..K-1, 255 nodata, a colour table and the class "
                "names) on the raster's grid, classified tile by tile with a model folder written by 'Fine-tune "
                "land-cover classification'. Bands are matched by their descriptions (B01..B12, B8A), else by count "
                "and order. The class probabilities (one band per class) are optional.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster to classify (its grid is the output's)"))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Classifier folder (from 'Fine-tune land-cover "
                                                     "classification')", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(advanced(number("TILE", "Tile size (pixels; empty: the classifier's patch size)",
                                          minValue=16, maxValue=8192, optional=True)))
        self.addParameter(advanced(number("OVERLAP", "Tile overlap (pixels; empty: half the tile)", minValue=0,
                                          maxValue=4096, optional=True)))
        self.addParameter(advanced(number("BATCH_SIZE", "Tiles per batch", minValue=1, maxValue=4096,
                                          defaultValue=64)))
        self.addParameter(advanced(QgsProcessingParameterString("DEVICE", "Device (auto, cpu, cuda, cuda:N)",
                                                                defaultValue="auto")))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Land cover"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "PROBABILITIES", "Class probabilities (one band per class)", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputString("CLASSES", "Class names (JSON list, index = class id)"))
        self.addOutput(QgsProcessingOutputString("CLASS_FRACTIONS", "Share of valid pixels per class (JSON)"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        out = self.geotiff_path(parameters, "OUTPUT", context)
        probabilities = self.geotiff_path(parameters, "PROBABILITIES", context)
        raster = self.raster_path(parameters, "INPUT", context)
        model = self.parameterAsFile(parameters, "MODEL", context)
        args = ["--raster", raster, "--model", model, "--out", out,
                "--batch-size", str(self.parameterAsInt(parameters, "BATCH_SIZE", context)),
                "--device", self.parameterAsString(parameters, "DEVICE", context) or "auto"]
        for name, option in (("TILE", "--tile"), ("OVERLAP", "--overlap")):
            if parameters.get(name) not in (None, ""):
                args += [option, str(self.parameterAsInt(parameters, name, context))]
        if probabilities:
            args += ["--probabilities", probabilities]
        outputs = self.run_swimdiff(args, feedback, output_files=[out, probabilities] if probabilities else [out])
        described = {"raster": raster, "model": model}
        style_landcover_when_loaded(context, out, LANDCOVER, outputs, described)  # styled like the panel's layers
        style_landcover_when_loaded(context, probabilities, PROBABILITIES, outputs, described)
        return {"OUTPUT": outputs["landcover"], "PROBABILITIES": outputs.get("probabilities"),
                "CLASSES": json.dumps(outputs.get("classes", [])),
                "CLASS_FRACTIONS": json.dumps(outputs.get("class_fractions", {}))}
