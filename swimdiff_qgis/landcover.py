"""Result layers of a land-cover classification run, styled, grouped per run, with the run's parameters in
their metadata (the change layers' counterpart is ``layers.py``).

The land-cover map (band 1: class ids 0..K-1, nodata 255) is paletted: one colour per class, the class
names as legend, nodata transparent. The class probabilities (K float bands, one per class) show the band
of the most frequent class as a 0..1 ramp. Both layers are backed by the worker's GeoTIFF files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import QgsLayerTreeGroup, QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer
from qgis.PyQt.QtGui import QColor

from .layers import add_run_group, describe_run, open_layer, run_results, style_probability

logger = logging.getLogger(__name__)

#: Colours of classes for which neither the run nor the file's colour table gives one (ColorBrewer Paired).
FALLBACK_COLORS = ((31, 120, 180), (51, 160, 44), (227, 26, 28), (255, 127, 0), (106, 61, 154), (177, 89, 40),
                   (166, 206, 227), (178, 223, 138), (251, 154, 153), (253, 191, 111), (202, 178, 214),
                   (255, 255, 153))
KEYWORDS = ("land cover", "classification")


@dataclass(frozen=True)
class ClassificationLayers:
    """The layers one classification run added.

    Attributes:
        group: The layer tree group of the run.
        landcover: The land-cover map layer.
        probabilities: The class probabilities layer, None when the run wrote none.
    """

    group: QgsLayerTreeGroup
    landcover: QgsRasterLayer
    probabilities: QgsRasterLayer | None


def class_colors(layer: QgsRasterLayer, count: int, colors: Sequence[Sequence[int]] | None = None) -> list[QColor]:
    """One colour per class id: the run's colours, else the file's colour table, else a fixed palette.

    Args:
        layer: The land-cover layer (its band 1 colour table is the second choice).
        count: The number of classes.
        colors: ``[[r, g, b], ...]`` by class id, as the worker reports them; None or short when unknown.

    Returns:
        ``count`` colours, index = class id.
    """
    table = {int(item.value): item.color for item in layer.dataProvider().colorTable(1)}
    chosen = []
    for index in range(count):
        if colors is not None and index < len(colors) and len(colors[index]) >= 3:
            chosen.append(QColor(*(int(c) for c in colors[index][:3])))
        else:
            chosen.append(table.get(index, QColor(*FALLBACK_COLORS[index % len(FALLBACK_COLORS)])))
    return chosen


def style_landcover(layer: QgsRasterLayer, classes: Sequence[str],
                    colors: Sequence[Sequence[int]] | None = None) -> None:
    """Paletted style with the class names as legend; nodata (255) is not in the palette, so transparent.

    Args:
        layer: A land-cover map layer (band 1: class ids 0..K-1).
        classes: The class names, index = class id.
        colors: ``[[r, g, b], ...]`` by class id; see :func:`class_colors` for missing ones.
    """
    palette = class_colors(layer, len(classes), colors)
    items = [QgsPalettedRasterRenderer.Class(index, palette[index], name) for index, name in enumerate(classes)]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, items))
    layer.triggerRepaint()


def dominant_class(outputs: Mapping[str, Any]) -> int:
    """The id of the class that covers the largest share of the map (0 when the run does not say)."""
    classes = list(outputs.get("classes") or [])
    fractions = outputs.get("class_fractions") or {}
    if not classes or not isinstance(fractions, Mapping):
        return 0
    return max(range(len(classes)), key=lambda index: float(fractions.get(classes[index], 0.0)))


def style_class_probabilities(layer: QgsRasterLayer, band: int = 1) -> None:
    """Show one class's probability (one band of the K) as a 0..1 pseudo-colour ramp.

    Args:
        layer: A class probabilities layer (band i + 1: class i).
        band: The band (1-based) to show.
    """
    style_probability(layer, 0.0, 1.0, band=min(max(band, 1), layer.bandCount()))


def add_classification_layers(outputs: Mapping[str, Any], parameters: Mapping[str, Any], run_name: str,
                              project: QgsProject | None = None) -> ClassificationLayers:
    """Add the land-cover map (and class probabilities) of a ``swimdiff classify`` run in a new group.

    Args:
        outputs: The worker's result outputs (``landcover``, ``probabilities``, ``classes``, ``colors``...).
        parameters: The run's parameters, stored in the layers' metadata.
        run_name: The group's name, e.g. ``"SwiMDiff land cover 14:02:11"``.
        project: The project to add to; the current one when None.

    Returns:
        The group and the layers.

    Raises:
        ValueError: An output file cannot be opened as a raster layer, or the run names no classes.
    """
    project = project or QgsProject.instance()
    classes = [str(name) for name in outputs.get("classes") or []]
    if not classes:
        raise ValueError(f"the classification of '{outputs.get('landcover')}' reported no class names")
    described = run_results(outputs, parameters)
    landcover = open_layer(outputs["landcover"], f"land cover ({Path(outputs['landcover']).name})", "land-cover map")
    style_landcover(landcover, classes, outputs.get("colors"))
    describe_run(landcover, f"{run_name}: land cover", described, KEYWORDS)
    probabilities = None
    if outputs.get("probabilities"):
        probabilities = open_layer(outputs["probabilities"], "class probabilities", "class probabilities")
        style_class_probabilities(probabilities, dominant_class(outputs) + 1)
        describe_run(probabilities, f"{run_name}: class probabilities", described, KEYWORDS)

    group = add_run_group(project, run_name, [landcover, probabilities])
    logger.info("added the layers of %s: %s", run_name, outputs["landcover"])
    return ClassificationLayers(group, landcover, probabilities)
