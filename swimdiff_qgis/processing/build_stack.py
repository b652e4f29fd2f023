"""``swimdiff:buildstack``: one named 10 m raster (VRT) from Sentinel-2 band files, by ``swimdiff stack``."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from .base import SwimDiffAlgorithm, advanced

RESOLUTIONS = ("10", "20", "60")
STACK_SUFFIXES = (".vrt", ".tif", ".tiff")


class BuildStackAlgorithm(SwimDiffAlgorithm):
    """Stack the band files of one Sentinel-2 acquisition into one raster with named bands."""

    command = "stack"

    def name(self) -> str:
        return "buildstack"

    def displayName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "Build a Sentinel-2 band stack"

    def shortHelpString(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return ("One raster whose bands are named B01..B12, B8A (sensor order) on the 10 m grid of the finest band, "
                "from a folder of *_Bxx.tif / *_Bxx.jp2 band files (OSCD layout, a product's IMG_DATA) or an "
                "unzipped .SAFE product (L1C or L2A). 20 and 60 m bands are interpolated bilinearly, as change "
                "detection does for band folders. A .vrt output refers to the band files (keep them where they "
                "are); a .tif output is a self-contained copy. Unlike a plain 'Build virtual raster' (separate), "
                "which averages the pixel sizes to about 30 m, the stack keeps 10 m and names every band.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (name fixed by QGIS)
        self.addParameter(QgsProcessingParameterFile("SOURCE", "Band folder, IMG_DATA folder or .SAFE folder",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterString("BANDS", "Bands (comma-separated, e.g. B02,B03,B04,B08; "
                                                                "empty: all)", optional=True))
        self.addParameter(advanced(QgsProcessingParameterEnum("RESOLUTION", "Grid resolution (m)",
                                                              options=list(RESOLUTIONS), defaultValue=0)))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Band stack (.vrt or .tif)"))

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:  # noqa: N802
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if not out.lower().endswith(STACK_SUFFIXES):
            raise QgsProcessingException(f"OUTPUT: '{out}' is neither a .vrt nor a .tif name; use e.g. 'stack.vrt'")
        args = ["--source", self.parameterAsFile(parameters, "SOURCE", context), "--out", out, "--overwrite",
                "--resolution", RESOLUTIONS[self.parameterAsEnum(parameters, "RESOLUTION", context)]]
        if bands := self.parameterAsString(parameters, "BANDS", context).strip():
            args += ["--bands", bands]
        outputs = self.run_swimdiff(args, feedback, output_files=[out])
        return {"OUTPUT": outputs["stack"]}
