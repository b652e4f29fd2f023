"""What every SwiMDiff algorithm shares: running the worker with Processing feedback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsRasterLayer,
)

from ..settings import resolve_worker_python
from ..worker import WorkerError, run_worker

logger = logging.getLogger(__name__)

GEOTIFF_SUFFIXES = (".tif", ".tiff")


def advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """Mark a parameter as advanced (folded away in the algorithm dialog) and return it."""
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


class SwimDiffAlgorithm(QgsProcessingAlgorithm):
    """Base of the SwiMDiff algorithms: ``processAlgorithm`` builds CLI options and calls :meth:`run_swimdiff`."""

    #: The ``swimdiff`` command this algorithm runs.
    command = ""

    def createInstance(self) -> SwimDiffAlgorithm:  # noqa: N802 (name fixed by QGIS)
        """A fresh copy, as Processing requires for each run."""
        return type(self)()

    def helpUrl(self) -> str:  # noqa: N802 (name fixed by QGIS)
        """The plugin's home page."""
        return "https://example.org/swimdiff-qgis"

    def raster_path(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """The file behind a raster layer parameter (what the worker opens).

        Raises:
            QgsProcessingException: The layer is missing or not a GDAL raster (a web or database layer).
        """
        layer: QgsRasterLayer | None = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(f"{name}: {parameters.get(name)!r} is not a readable raster layer")
        if layer.providerType() != "gdal":
            raise QgsProcessingException(f"{name}: layer '{layer.name()}' comes from the {layer.providerType()} "
                                         "provider; SwiMDiff reads files: export it to GeoTIFF first")
        return layer.source().split("|")[0]

    def geotiff_path(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """The file a raster destination parameter names, '' when it is skipped.

        Raises:
            QgsProcessingException: The file name does not end with .tif or .tiff.
        """
        path = self.parameterAsOutputLayer(parameters, name, context)
        if path and not path.lower().endswith(GEOTIFF_SUFFIXES):
            raise QgsProcessingException(f"{name}: '{path}' is not a GeoTIFF name; SwiMDiff writes GeoTIFF, "
                                         f"so use a name ending with .tif, e.g. '{Path(path).with_suffix('.tif')}'")
        return path

    def run_swimdiff(self, args: Sequence[str], feedback: QgsProcessingFeedback | None,
            output_files: Sequence[str] = ()) -> dict[str, Any]:
        """Run ``swimdiff <command> <args>`` with progress, log and cancel through ``feedback``.

        Args:
            args: The command's options.
            feedback: The algorithm's feedback (None in some scripted runs).
            output_files: Files the command writes (partial ones are removed after a forced stop).

        Returns:
            The worker's result outputs.

        Raises:
            QgsProcessingException: With the worker's plain message (details in the log) when it fails,
                is cancelled or cannot start.
        """
        feedback = feedback or QgsProcessingFeedback()
        last_message = [""]

        def progress(fraction: float, message: str) -> None:
            feedback.setProgress(100.0 * fraction)
            if message and message != last_message[0]:
                last_message[0] = message
                feedback.setProgressText(message)

        def log(level: str, message: str) -> None:
            if level in ("error", "critical"):  # the error event that follows becomes the exception's message
                feedback.pushDebugInfo(message)
            elif level == "warning":
                feedback.pushWarning(message)
            else:
                feedback.pushInfo(message)

        def metric(step: int, values: dict[str, float]) -> None:
            feedback.pushInfo(f"step {step}: " + ", ".join(f"{k} = {v:.4g}" for k, v in values.items()))

        try:
            python = resolve_worker_python()
            feedback.pushDebugInfo(f"worker: {python} -m core.cli {self.command} {' '.join(args)}")
            result = run_worker(self.command, args, python=python, on_progress=progress, on_metric=metric,
                                on_log=log, should_stop=feedback.isCanceled, output_files=output_files)
        except WorkerError as error:
            if error.details and not error.user_error:
                feedback.pushDebugInfo(error.details)
            logger.debug("swimdiff %s failed (%s, exit code %s)", self.command, error.kind, error.exit_code)
            raise QgsProcessingException(error.message) from error
        return result.outputs
