"""``swimdiff:adapt``: fine-tune a change model on change / no-change polygons drawn over a pair of dates."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import SwimDiffAlgorithm, advanced

LABEL_FORMATS = ["gpkg", "shp", "geojson"]  # what the worker's GDAL/OGR reads; anything else is exported to gpkg


class AdaptChangeAlgorithm(SwimDiffAlgorithm):
    """Adapt a change model to a place from polygons an analyst drew (``swimdiff adapt``)."""

    command = "adapt"

    def name(self) -> str:
        return "adapt"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Adapt change detection to this area"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("Teaches a change model what counts as change in your area. Over the two dates, draw polygons "
                "with a whole-number field (default 'change'): 1 where something changed, 0 where nothing did. "
                "Draw several of each, in different spots; pixels outside every polygon are ignored, and where "
                "polygons overlap, change wins. The polygons may be in any CRS, in a temporary layer, or only the "
                "selected ones (save a file layer's edits first). About a quarter of each class (whole polygons) "
                "is held out to pick the best step and threshold; the starting model's score on the same polygons "
                "is reported beside the adapted one's. It starts from the shipped model unless you give another "
                "change model, or a pre-trained encoder (not both). The result is a model folder for the 'Detect "
                "changes' algorithm or panel.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        number, folder = QgsProcessingParameterNumber, QgsProcessingParameterFile.Folder
        self.addParameter(QgsProcessingParameterRasterLayer("T1", "Earlier raster (T1)"))
        self.addParameter(QgsProcessingParameterRasterLayer("T2", "Later raster (T2)"))
        self.addParameter(QgsProcessingParameterFeatureSource("LABELS", "Change / no-change polygons",
                                                              types=[QgsProcessing.TypeVectorPolygon]))
        # optional: QGIS 3.22 refuses a left-out mandatory field parameter despite its default
        self.addParameter(QgsProcessingParameterField("LABEL_FIELD", "Field with 1 = change, 0 = no change",
                                                      defaultValue="change", parentLayerParameterName="LABELS",
                                                      type=QgsProcessingParameterField.Numeric, optional=True))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Change model to start from (empty: the shipped model)",
                                                     behavior=folder, optional=True))
        self.addParameter(QgsProcessingParameterFile("ENCODER", "Or a pre-trained encoder folder (new decoder)",
                                                     behavior=folder, optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "KEEP_VEGETATION", "Green at both dates can be change (drop the starting model's stable-vegetation rule)",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            "KEEP_WATER", "Water at both dates can be change (drop the starting model's stable-water rule)",
            defaultValue=False))
        self.addParameter(number("STEPS", "Steps", minValue=1, maxValue=1_000_000, defaultValue=120))
        self.addParameter(advanced(number("BATCH_SIZE", "Batch size", minValue=1, maxValue=4096, defaultValue=8)))
        self.addParameter(advanced(number("LR", "Peak learning rate", type=number.Double, minValue=1e-7,
                                          maxValue=1.0, defaultValue=2e-4)))
        self.addParameter(advanced(number("EVAL_EVERY", "Steps between validations", minValue=1,
                                          maxValue=1_000_000, defaultValue=20)))
        self.addParameter(advanced(number("SEED", "Seed of patches and the hold-out", minValue=0,
                                          maxValue=2**31 - 1, defaultValue=0)))
        self.addParameter(advanced(QgsProcessingParameterString("DEVICE", "Device (auto, cpu, cuda, cuda:N)",
                                                                defaultValue="auto")))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Adapted change model folder"))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD", "Validated probability threshold"))
        self.addOutput(QgsProcessingOutputNumber("VAL_F1", "Held-out F1 of the adapted model"))
        self.addOutput(QgsProcessingOutputNumber("ZERO_SHOT_F1", "Held-out F1 of the starting model"))
        self.addOutput(QgsProcessingOutputNumber("BEST_STEP", "Step kept (0: the starting model)"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        model, encoder = (self.parameterAsFile(parameters, n, context) for n in ("MODEL", "ENCODER"))
        if model and encoder:  # here, not in checkParameterValues, which QGIS 3.22 skips for a model's steps
            raise QgsProcessingException(f"give a change model ('{model}') or a pre-trained encoder ('{encoder}'), "
                                         "not both: a change model is adapted as it is, an encoder gets a new decoder")
        # Processing passes a file layer's path even while it has unsaved edits (and 3.22 fails to export them)
        labels = self.parameterAsVectorLayer(parameters, "LABELS", context)
        if labels is not None and labels.providerType() == "ogr" and labels.isModified():
            raise QgsProcessingException(f"LABELS: layer '{labels.name()}' has unsaved edits, which are not in its "
                                         "file yet; save them (Layer > Save Layer Edits) and run again")
        # a memory layer (edits included), another provider's or a selection: exported to a temporary GeoPackage
        path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(parameters, "LABELS", context,
                                                                           LABEL_FORMATS, "gpkg", feedback)
        args = ["--t1", self.raster_path(parameters, "T1", context),
                "--t2", self.raster_path(parameters, "T2", context),
                "--labels", f"{path}|layername={layer}" if layer else path,
                "--label-field", self.parameterAsString(parameters, "LABEL_FIELD", context) or "change",
                "--out", self.parameterAsFileOutput(parameters, "OUTPUT", context),
                "--steps", str(self.parameterAsInt(parameters, "STEPS", context)),
                "--batch-size", str(self.parameterAsInt(parameters, "BATCH_SIZE", context)),
                "--lr", repr(self.parameterAsDouble(parameters, "LR", context)),
                "--eval-every", str(self.parameterAsInt(parameters, "EVAL_EVERY", context)),
                "--seed", str(self.parameterAsInt(parameters, "SEED", context)),
                "--device", self.parameterAsString(parameters, "DEVICE", context) or "auto"]
        args += ["--model", model] if model else ["--encoder", encoder] if encoder else []
        args += ["--keep-vegetation"] if self.parameterAsBool(parameters, "KEEP_VEGETATION", context) else []
        args += ["--keep-water"] if self.parameterAsBool(parameters, "KEEP_WATER", context) else []
        outputs = self.run_swimdiff(args, feedback)
        return {"OUTPUT": outputs["model_dir"], "THRESHOLD": outputs.get("threshold"),
                "VAL_F1": outputs.get("val_f1"), "ZERO_SHOT_F1": outputs.get("zero_shot_val_f1"),
                "BEST_STEP": outputs.get("best_step")}
