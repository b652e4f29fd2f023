"""``swimdiff:pretrain``: SwiMDiff self-supervised pre-training on unlabelled rasters (``swimdiff pretrain``)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .base import SwimDiffAlgorithm, advanced


class PretrainAlgorithm(SwimDiffAlgorithm):
    """Pre-train an encoder on unlabelled multi-date rasters; the model folder feeds fine-tuning."""

    command = "pretrain"

    def name(self) -> str:
        return "pretrain"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Pre-train an encoder (self-supervised)"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("SwiMDiff pre-training (MoCo v2 + scene-wide matching + diffusion constraint) without labels. "
                "Raster layers given together are the dates of one scene, oldest first; a folder may hold "
                "dated rasters of one place, city folders (imgs_1/imgs_2) or an OSCD root. Cancelling saves a "
                "checkpoint that 'Resume' continues.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterMultipleLayers("LAYERS", "Dated rasters of one scene",
                                                               QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile("FOLDER", "Folder of scenes", optional=True,
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(number("STEPS", "Steps", minValue=1, maxValue=10_000_000, defaultValue=1000))
        self.addParameter(number("BATCH_SIZE", "Batch size (patches per step)", minValue=2, maxValue=65536,
                                 defaultValue=64))
        self.addParameter(advanced(number("PATCH_SIZE", "Patch size (pixels, multiple of 16)", minValue=16,
                                          maxValue=1024, defaultValue=96)))
        self.addParameter(advanced(QgsProcessingParameterString("BANDS", "Bands (comma-separated; empty: all shared)",
                                                                optional=True)))
        self.addParameter(advanced(QgsProcessingParameterString(
            "ASSUME_BAND_NAMES", "Names of undescribed bands (l2a, l1c or a list)", optional=True)))
        self.addParameter(advanced(QgsProcessingParameterString("DEVICE", "Device (auto, cpu, cuda, cuda:N)",
                                                                defaultValue="auto")))
        self.addParameter(advanced(QgsProcessingParameterBoolean("RESUME", "Resume the run in the output folder",
                                                                 defaultValue=False)))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Model folder"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        layers = self.parameterAsLayerList(parameters, "LAYERS", context)
        data = [layer.source().split("|")[0] for layer in layers]
        if folder := self.parameterAsFile(parameters, "FOLDER", context):
            data.append(folder)
        if not data:
            raise QgsProcessingException("LAYERS and FOLDER are both empty: choose the dated rasters of a scene or "
                                         "a folder of scenes")
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = ["--data", *data, "--out", out, "--steps", str(self.parameterAsInt(parameters, "STEPS", context)),
                "--batch-size", str(self.parameterAsInt(parameters, "BATCH_SIZE", context)),
                "--patch-size", str(self.parameterAsInt(parameters, "PATCH_SIZE", context)),
                "--device", self.parameterAsString(parameters, "DEVICE", context) or "auto"]
        for name, option in (("BANDS", "--bands"), ("ASSUME_BAND_NAMES", "--assume-band-names")):
            if value := self.parameterAsString(parameters, name, context).strip():
                args += [option, value]
        if self.parameterAsBool(parameters, "RESUME", context):
            args.append("--resume")
        outputs = self.run_swimdiff(args, feedback)
        if outputs.get("stopped"):
            feedback.pushWarning(f"stopped after {outputs.get('steps_done')} steps; 'Resume' continues the run")
        return {"OUTPUT": outputs["model_dir"]}
