"""Result layers of a detection run: styled, grouped per run, with the run's parameters in their metadata.

The change probability (or CVA magnitude) is a pseudo-colour ramp from the threshold up, transparent below
it; the change mask is paletted with only "change" coloured (no-change and nodata are transparent). Both
layers are backed by the worker's GeoTIFF files. (Land-cover layers: ``landcover.py``.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsColorRampShader,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtGui import QColor

logger = logging.getLogger(__name__)

CHANGE_VALUE = 1
CHANGE_COLOR = QColor(215, 25, 28)
#: Pseudo-colour ramp of the probability, from the threshold (light) to the maximum (dark red).
RAMP = (QColor(255, 255, 178), QColor(254, 178, 76), QColor(240, 59, 32), QColor(189, 0, 38))
#: Custom property holding the run's parameters as JSON.
PARAMETERS_PROPERTY = "swimdiff/parameters"
#: What a run's outputs name the files by; they are left out of the metadata's parameters.
OUTPUT_FILES = ("change", "probability", "landcover", "probabilities")


@dataclass(frozen=True)
class DetectionLayers:
    """The layers one detection run added.

    Attributes:
        group: The layer tree group of the run.
        mask: The change mask layer.
        probability: The probability (or magnitude) layer, None when the run wrote none.
    """

    group: QgsLayerTreeGroup
    mask: QgsRasterLayer
    probability: QgsRasterLayer | None


def style_mask(layer: QgsRasterLayer) -> None:
    """Paletted style: "change" in red; no change (0) and nodata (255) are not in the palette, so transparent.

    Args:
        layer: A change mask layer (band 1: 0 no change, 1 change, 255 nodata).
    """
    classes = [QgsPalettedRasterRenderer.Class(CHANGE_VALUE, CHANGE_COLOR, "change")]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.triggerRepaint()


def style_probability(layer: QgsRasterLayer, threshold: float, maximum: float | None = None, band: int = 1) -> None:
    """Pseudo-colour ramp from ``threshold`` to ``maximum``, clipped: values below the threshold are transparent.

    Args:
        layer: A probability (0..1) or magnitude layer.
        threshold: The change threshold of the run; the ramp starts there.
        maximum: The top of the ramp; None for the band's maximum.
        band: The band shown.
    """
    if maximum is None:
        stats = layer.dataProvider().bandStatistics(band, QgsRasterBandStats.Max)
        maximum = float(stats.maximumValue)
    maximum = max(maximum, threshold + 1e-6)
    step = (maximum - threshold) / (len(RAMP) - 1)
    items = [QgsColorRampShader.ColorRampItem(threshold + i * step, color, f"{threshold + i * step:.3g}")
             for i, color in enumerate(RAMP)]
    ramp = QgsColorRampShader(threshold, maximum)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(items)
    ramp.setClip(True)  # outside [threshold, maximum]: no colour, i.e. transparent
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(threshold)
    renderer.setClassificationMax(maximum)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def describe_run(layer: QgsRasterLayer, title: str, parameters: Mapping[str, Any],
                 keywords: Sequence[str] | None = None) -> None:
    """Put the run's parameters into the layer's metadata (abstract, keywords, history) and a custom property.

    Args:
        layer: The layer to describe.
        title: The metadata title.
        parameters: The run's parameters and results (JSON-serialisable values).
        keywords: The "SwiMDiff" keywords; None for change detection and the run's method.
    """
    metadata = layer.metadata()
    metadata.setTitle(title)
    metadata.setAbstract("\n".join(f"{name}: {value}" for name, value in parameters.items()))
    metadata.addKeywords("SwiMDiff", list(keywords) if keywords is not None
                         else ["change detection", str(parameters.get("method", ""))])
    metadata.addHistoryItem("swimdiff " + json.dumps(dict(parameters), default=str))
    layer.setMetadata(metadata)
    layer.setCustomProperty(PARAMETERS_PROPERTY, json.dumps(dict(parameters), default=str))


def run_results(outputs: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's layers describe: its parameters and its results, without the output file names."""
    return {**parameters, **{k: v for k, v in outputs.items() if k not in OUTPUT_FILES}}


def open_layer(path: str, name: str, what: str) -> QgsRasterLayer:
    """A GDAL raster layer of a worker output.

    Raises:
        ValueError: The file cannot be opened as a raster layer (the message names it).
    """
    layer = QgsRasterLayer(str(path), name, "gdal")
    if not layer.isValid():
        raise ValueError(f"the {what} '{path}' cannot be opened as a raster layer")
    return layer


def add_run_group(project: QgsProject, run_name: str, layers: list[QgsRasterLayer | None]) -> QgsLayerTreeGroup:
    """A new group named ``run_name`` at the top of the layer tree holding ``layers`` (None skipped)."""
    group = project.layerTreeRoot().insertGroup(0, run_name)
    for layer in layers:
        if layer is not None:
            project.addMapLayer(layer, False)
            group.addLayer(layer)
    return group


def is_result_layer(layer: QgsMapLayer) -> bool:
    """True for a layer of a SwiMDiff result (the panel's or Processing's): it carries the run's parameters."""
    return bool(layer.customProperty(PARAMETERS_PROPERTY))


def zoom_if_outside(canvas: QgsMapCanvas | None, layer: QgsMapLayer) -> bool:
    """Zoom the map to ``layer`` when none of it is in view (a result far from the view would go unseen).

    Args:
        canvas: The map canvas; None (no window) does nothing.
        layer: The new result layer.

    Returns:
        True when the map was zoomed.
    """
    if canvas is None:
        return False
    extent = canvas.mapSettings().layerExtentToOutputExtent(layer, layer.extent())
    if extent.isEmpty() or canvas.extent().intersects(extent):
        return False
    canvas.setExtent(extent.buffered(0.05 * max(extent.width(), extent.height())))
    canvas.refresh()
    return True


def add_detection_layers(outputs: Mapping[str, Any], parameters: Mapping[str, Any], run_name: str,
                         project: QgsProject | None = None) -> DetectionLayers:
    """Add the mask (and probability) of a ``swimdiff detect`` run as styled layers in a new group.

    Args:
        outputs: The worker's result outputs (``change``, ``probability``, ``threshold``, ``method``...).
        parameters: The run's parameters, stored in the layers' metadata.
        run_name: The group's name, e.g. ``"SwiMDiff change 14:02:11"``.
        project: The project to add to; the current one when None.

    Returns:
        The group and the layers.

    Raises:
        ValueError: An output file cannot be opened as a raster layer (the message names it).
    """
    project = project or QgsProject.instance()
    described = run_results(outputs, parameters)
    threshold = float(outputs.get("threshold", 0.5))
    mask = open_layer(outputs["change"], f"change mask ({Path(outputs['change']).name})", "change mask")
    style_mask(mask)
    describe_run(mask, f"{run_name}: change mask", described)
    probability = None
    if outputs.get("probability"):
        label = "change probability" if outputs.get("method", "model") == "model" else "change score"
        probability = open_layer(outputs["probability"], label, "probability")
        style_probability(probability, threshold, 1.0 if outputs.get("method", "model") == "model" else None)
        describe_run(probability, f"{run_name}: {label}", described)

    group = add_run_group(project, run_name, [mask, probability])
    logger.info("added the layers of %s: %s", run_name, outputs["change"])
    return DetectionLayers(group, mask, probability)
