"""``swimdiff:detectchange``: a change mask (and probability) of two rasters, by ``swimdiff detect``."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import SwimDiffAlgorithm, advanced
from .styling import MASK, PROBABILITY, style_when_loaded

METHODS = ("model", "features", "cva")
METHOD_LABELS = ("Change model (fine-tuned)", "Encoder feature distance (no labels)", "Change vector analysis")


class DetectChangeAlgorithm(SwimDiffAlgorithm):
    """Detect changes between an earlier (T1) and a later (T2) raster of the same place."""

    command = "detect"

    def name(self) -> str:
        return "detectchange"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Detect changes"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("Change mask (0 no change, 1 change, 255 nodata) of two rasters of one place, on T1's grid. "
                "Bands are matched by their descriptions (B01..B12, B8A), else by count and order; T2 is "
                "warped onto T1's grid when they differ. Without a model folder the model shipped with the "
                "plugin is used; the CVA method needs no model. On places unlike the model's training cities a "
                "threshold below the validated one (e.g. 0.15) finds more of the real changes, with more false "
                "alarms; the probability output lets you choose by eye. Masking clouds (s2cloudless, on Sentinel-2 "
                "L1C rasters with B01, B02, B04, B05, B08, B8A, B09, B10, B11, B12) makes the cloudy pixels of either "
                "date nodata and reports the cloudy fraction of the valid pixels; it does not find cloud shadows.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer("T1", "Earlier raster (T1, its grid is the output's)"))
        self.addParameter(QgsProcessingParameterRasterLayer("T2", "Later raster (T2)"))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model folder (empty: the shipped default model)",
                                                     behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterEnum("METHOD", "Method", options=list(METHOD_LABELS), defaultValue=0))
        self.addParameter(number("THRESHOLD", "Threshold (empty: the model's validated one, or Otsu's)",
                                 type=number.Double, minValue=0.0, optional=True))
        self.addParameter(QgsProcessingParameterBoolean("MASK_CLOUDS", "Mask clouds (Sentinel-2 L1C, s2cloudless)",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            "KEEP_VEGETATION", "Score pixels green at both dates too (model: drop its stable-vegetation rule)",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            "KEEP_WATER", "Score pixels that are open water at both dates too (model: drop its stable-water rule)",
            defaultValue=False))
        self.addParameter(advanced(number("TILE", "Tile size (pixels)", minValue=64, maxValue=8192, defaultValue=256)))
        self.addParameter(advanced(number("OVERLAP", "Tile overlap (pixels)", minValue=0, maxValue=4096,
                                          defaultValue=32)))
        self.addParameter(advanced(number("BATCH_SIZE", "Tiles per batch", minValue=1, maxValue=1024, defaultValue=8)))
        self.addParameter(advanced(QgsProcessingParameterString("DEVICE", "Device (auto, cpu, cuda, cuda:N)",
                                                                defaultValue="auto")))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Change mask"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "PROBABILITY", "Change probability (model) or magnitude (CVA)", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("USED_THRESHOLD", "Threshold used"))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_FRACTION", "Changed fraction of valid pixels"))
        self.addOutput(QgsProcessingOutputNumber("CLOUDY_FRACTION", "Cloudy fraction (either date) of valid pixels"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        out = self.geotiff_path(parameters, "OUTPUT", context)
        probability = self.geotiff_path(parameters, "PROBABILITY", context)
        t1, t2 = self.raster_path(parameters, "T1", context), self.raster_path(parameters, "T2", context)
        method = METHODS[self.parameterAsEnum(parameters, "METHOD", context)]
        args = ["--t1", t1, "--t2", t2, "--out", out, "--method", method,
                "--tile", str(self.parameterAsInt(parameters, "TILE", context)),
                "--overlap", str(self.parameterAsInt(parameters, "OVERLAP", context)),
                "--batch-size", str(self.parameterAsInt(parameters, "BATCH_SIZE", context)),
                "--device", self.parameterAsString(parameters, "DEVICE", context) or "auto"]
        if model := self.parameterAsFile(parameters, "MODEL", context):
            args += ["--model", model]
        if parameters.get("THRESHOLD") not in (None, ""):
            args += ["--threshold", repr(self.parameterAsDouble(parameters, "THRESHOLD", context))]
        if probability:
            args += ["--probability", probability]
        if self.parameterAsBool(parameters, "MASK_CLOUDS", context):
            args.append("--mask-clouds")
        if method == "model" and self.parameterAsBool(parameters, "KEEP_VEGETATION", context):
            args.append("--keep-vegetation")
        if method == "model" and self.parameterAsBool(parameters, "KEEP_WATER", context):
            args.append("--keep-water")
        outputs = self.run_swimdiff(args, feedback, output_files=[out, probability] if probability else [out])
        described = {"t1": t1, "t2": t2, "method": method, "model": model or "default"}
        style_when_loaded(context, out, MASK, outputs, described)  # styled like the panel's layers
        style_when_loaded(context, probability, PROBABILITY, outputs, described)
        return {"OUTPUT": outputs["change"], "PROBABILITY": outputs.get("probability"),
                "USED_THRESHOLD": outputs.get("threshold"), "CHANGED_FRACTION": outputs.get("changed_fraction"),
                "CLOUDY_FRACTION": outputs.get("cloudy_fraction")}
