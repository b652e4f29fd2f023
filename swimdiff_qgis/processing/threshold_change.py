"""``swimdiff:thresholdchange``: the change mask of a saved change probability at a threshold, by ``swimdiff
threshold`` (no model run)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..panel.threshold import recorded_threshold
from .base import SwimDiffAlgorithm
from .styling import MASK, style_when_loaded


class ThresholdChangeAlgorithm(SwimDiffAlgorithm):
    """Cut a change mask from a change probability raster at a chosen threshold."""

    command = "threshold"

    def name(self) -> str:
        return "thresholdchange"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Change mask at a threshold"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("Change mask (0 no change, 1 change, 255 nodata) of a change probability raster written by "
                "'Detect changes' (its probability output): change where the probability is above the threshold. "
                "The mask is the one 'Detect changes' writes at that threshold, without running the model again. "
                "An empty threshold takes the one the layer's detection used (a layer the SwiMDiff panel or "
                "Processing loaded records it).")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer("PROBABILITY", "Change probability raster"))
        self.addParameter(number("THRESHOLD", "Threshold (0 to 1; empty: the one the detection used)",
                                 type=number.Double, minValue=0.0, maxValue=1.0, optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Change mask"))
        self.addOutput(QgsProcessingOutputNumber("USED_THRESHOLD", "Threshold used"))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_FRACTION", "Changed fraction of valid pixels"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        probability = self.raster_path(parameters, "PROBABILITY", context)
        out = self.geotiff_path(parameters, "OUTPUT", context)
        if parameters.get("THRESHOLD") not in (None, ""):
            threshold = self.parameterAsDouble(parameters, "THRESHOLD", context)
        elif (threshold := recorded_threshold(self.parameterAsRasterLayer(parameters, "PROBABILITY", context))) is None:
            raise QgsProcessingException(f"THRESHOLD: '{probability}' records no threshold of its detection; give a "
                                         "threshold from 0 to 1 (e.g. 0.3, the shipped model's validated one)")
        args = ["--probability", probability, "--threshold", repr(threshold), "--out", out]
        outputs = self.run_swimdiff(args, feedback, output_files=[out])
        described = {"probability": probability, "method": "threshold", "threshold_asked": threshold}
        style_when_loaded(context, out, MASK, outputs, described)  # styled like the panel's masks
        return {"OUTPUT": outputs["change"], "USED_THRESHOLD": outputs.get("threshold"),
                "CHANGED_FRACTION": outputs.get("changed_fraction")}
