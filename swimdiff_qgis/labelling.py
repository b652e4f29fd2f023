"""The labelling layer of "Adapt to this area": polygons an analyst draws over a pair of dates, field ``change``
(1 = change, 0 = no change), and what the panel reads from it.

A new labelling layer is ready to draw on at once, as SCP's training polygons are: a GeoPackage beside the
project (or a memory layer) in the CRS of the earlier date, its ``change`` field shown as a value map, the
class being drawn set as the field's default value with the attribute form suppressed (no form per polygon),
styled red (change) / green (no change) with a see-through fill, added above the rasters, made active, put in
edit mode and the add-polygon tool chosen. The worker never reads the layer itself: :func:`export_labels`
writes the polygons as they are drawn (saved or not) to a GeoPackage of its own.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDefaultValue,
    QgsEditFormConfig,
    QgsEditorWidgetSetup,
    QgsFeatureRequest,
    QgsField,
    QgsFieldConstraints,
    QgsFields,
    QgsFillSymbol,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsSimpleLineSymbolLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgisInterface
from qgis.PyQt.QtCore import Qt, QVariant
from qgis.PyQt.QtGui import QColor

from .panel.outputs import unused_output

logger = logging.getLogger(__name__)

CHANGE_FIELD = "change"
CHANGE, NO_CHANGE = 1, 0
#: The two classes: value -> (legend text, colour).
CLASSES = {CHANGE: ("change", QColor(215, 25, 28)), NO_CHANGE: ("no change", QColor(26, 152, 80))}
#: Opacity of the polygons' fill (0-255); the outline is opaque, so the imagery stays readable under them.
FILL_ALPHA = 70
#: The casing under the outlines.
CASING = QColor(255, 255, 255, 230)
#: Labelled pixels of each class ``swimdiff adapt`` needs (``MIN_PIXELS`` in core/change/adapt.py).
MIN_PIXELS = 200
#: The layer name inside a new GeoPackage.
GPKG_LAYER = "labels"
#: Custom property that marks a SwiMDiff labelling layer; its value is the label field.
LABELS_PROPERTY = "swimdiff/labels"


def labelling_fields(name: str = CHANGE_FIELD) -> QgsFields:
    """The fields of a new labelling layer: one integer field ``name``."""
    fields = QgsFields()
    fields.append(QgsField(name, QVariant.Int))
    return fields


def writable_folder(folder: Path) -> bool:
    """True when a file can be made in ``folder`` (a probe, since ``os.access`` says yes to root everywhere)."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".swimdiff-probe-", suffix=".tmp", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


def default_labels_path(raster: QgsRasterLayer | None, project: QgsProject | None = None) -> Path:
    """Where a new labelling GeoPackage goes when none is chosen: beside the project when it is saved, else
    beside the earlier date's file, else in the home folder; a taken name becomes ``swimdiff-labels-2.gpkg``..."""
    project = project or QgsProject.instance()
    candidates = [Path(project.homePath())] if project.fileName() else []
    if raster is not None and raster.providerType() == "gdal":
        candidates.append(Path(raster.source().split("|")[0]).parent)
    folder = next((f for f in candidates if f.is_dir() and writable_folder(f)), Path.home())
    return unused_output(folder / "swimdiff-labels.gpkg")


def new_labelling_layer(crs: QgsCoordinateReferenceSystem, path: str | Path | None = None,
                        name: str = "SwiMDiff labels", label_field: str = CHANGE_FIELD) -> QgsVectorLayer:
    """A new, empty, styled polygon layer for change / no-change labels (not yet in the project).

    Args:
        crs: Its CRS (the earlier date's).
        path: A GeoPackage to create; None for a memory layer (lost when QGIS closes). A taken name becomes
            ``<stem>-2.gpkg``..., never overwritten.
        name: The layer's name.
        label_field: The integer field holding the class.

    Raises:
        ValueError: The GeoPackage cannot be created (the message names it and why).
    """
    fields = labelling_fields(label_field)
    if path is None:
        layer = QgsVectorLayer(f"MultiPolygon?crs={crs.authid()}" if crs.authid() else "MultiPolygon", name,
                               "memory")
        if not crs.authid():
            layer.setCrs(crs)
        layer.dataProvider().addAttributes(fields.toList())
        layer.updateFields()
    else:
        path = Path(path)
        if path.suffix.lower() != ".gpkg":
            raise ValueError(f"labels file '{path}' is not a GeoPackage name; use a name ending with .gpkg")
        path = unused_output(path)
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName, options.layerName, options.fileEncoding = "GPKG", GPKG_LAYER, "UTF-8"
        writer = QgsVectorFileWriter.create(str(path), fields, QgsWkbTypes.MultiPolygon, crs,
                                            QgsProject.instance().transformContext(), options)
        failed = writer.hasError() != QgsVectorFileWriter.NoError
        message = writer.errorMessage()
        del writer  # closes the file
        if failed:
            raise ValueError(f"the labels file '{path}' cannot be created ({message}); choose another file")
        layer = QgsVectorLayer(f"{path}|layername={GPKG_LAYER}", name, "ogr")
    if not layer.isValid():
        raise ValueError(f"the new labelling layer '{path or name}' cannot be opened")
    set_up_labelling(layer, label_field)
    return layer


def set_up_labelling(layer: QgsVectorLayer, label_field: str = CHANGE_FIELD, drawing: int = CHANGE) -> None:
    """Make ``layer``'s ``label_field`` a labelling field: value map 1 = change / 0 = no change, not empty,
    default value ``drawing``, no attribute form per new polygon, and the red / green style."""
    index = layer.fields().indexOf(label_field)
    mapping = [{text: str(value)} for value, (text, _) in CLASSES.items()]
    layer.setEditorWidgetSetup(index, QgsEditorWidgetSetup("ValueMap", {"map": mapping}))
    layer.setFieldConstraint(index, QgsFieldConstraints.ConstraintNotNull)
    layer.setConstraintExpression(index, f'"{label_field}" IN (0, 1)', "1 = change, 0 = no change")
    form = layer.editFormConfig()
    form.setSuppress(QgsEditFormConfig.SuppressOn)  # each polygon takes the class being drawn, no form
    layer.setEditFormConfig(form)
    layer.setCustomProperty(LABELS_PROPERTY, label_field)
    set_drawing_class(layer, drawing, label_field)
    style_labels(layer, label_field)


def style_labels(layer: QgsVectorLayer, label_field: str = CHANGE_FIELD) -> None:
    """Categorized style: change red, no change green; see-through fills and a coloured outline on a white casing,
    so a polygon stays legible over the imagery and over a change map of the same red."""
    categories = []
    for value, (text, color) in CLASSES.items():
        fill = QColor(color)
        fill.setAlpha(FILL_ALPHA)
        symbol = QgsFillSymbol.createSimple({"color": ",".join(map(str, fill.getRgb())), "style": "solid",
                                             "outline_style": "no"})
        for line_color, width in ((CASING, 1.3), (color, 0.6)):  # millimetres
            line = QgsSimpleLineSymbolLayer(line_color, width)
            line.setPenJoinStyle(Qt.RoundJoin)
            symbol.appendSymbolLayer(line)
        categories.append(QgsRendererCategory(value, symbol, text))
    layer.setRenderer(QgsCategorizedSymbolRenderer(label_field, categories))
    layer.triggerRepaint()


def label_field_of(layer: QgsMapLayer | None) -> str:
    """The label field of a SwiMDiff labelling layer, else ``change`` when the layer has such a field, else ""."""
    if not isinstance(layer, QgsVectorLayer):
        return ""
    marked = str(layer.customProperty(LABELS_PROPERTY) or "")
    if marked and layer.fields().indexOf(marked) >= 0:
        return marked
    return CHANGE_FIELD if layer.fields().indexOf(CHANGE_FIELD) >= 0 else ""


def set_drawing_class(layer: QgsVectorLayer, value: int, label_field: str = CHANGE_FIELD) -> None:
    """New polygons of ``layer`` get ``value`` (1 change, 0 no change) in ``label_field``: its default value."""
    index = layer.fields().indexOf(label_field)
    if index >= 0:
        layer.setDefaultValueDefinition(index, QgsDefaultValue(str(int(value))))


def drawing_class(layer: QgsVectorLayer, label_field: str = CHANGE_FIELD) -> int | None:
    """The class new polygons get (the field's default value), None when it is not 1 or 0."""
    index = layer.fields().indexOf(label_field)
    expression = layer.defaultValueDefinition(index).expression().strip() if index >= 0 else ""
    return int(expression) if expression in ("0", "1") else None


def add_labelling_layer(layer: QgsVectorLayer, iface: QgisInterface | None, project: QgsProject | None = None
                        ) -> None:
    """Put ``layer`` at the top of the layer tree (above the rasters), make it active, start editing and choose
    the add-polygon tool, so the analyst draws at once."""
    project = project or QgsProject.instance()
    project.addMapLayer(layer, False)
    project.layerTreeRoot().insertLayer(0, layer)
    layer.startEditing()
    if iface is not None:
        iface.setActiveLayer(layer)
        iface.actionAddFeature().trigger()


def class_of(value: Any) -> int | None:
    """1 or 0 for a label value that is one of them, else None (NULL, other numbers, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value in (CHANGE, NO_CHANGE) else None


@dataclass(frozen=True)
class LabelCounts:
    """What a labelling layer holds.

    Attributes:
        polygons: ``{1: change polygons, 0: no-change polygons}``.
        pixels: ``{1: ..., 0: ...}`` pixels of the earlier date's grid the polygons cover (polygon area / pixel
            area: an estimate that ignores overlaps and the raster's edges); empty without a raster.
        unclassified: Polygons whose class is empty or neither 1 nor 0.
    """

    polygons: dict[int, int] = field(default_factory=lambda: {CHANGE: 0, NO_CHANGE: 0})
    pixels: dict[int, float] = field(default_factory=dict)
    unclassified: int = 0

    def missing(self, minimum: int = MIN_PIXELS) -> dict[int, int]:
        """Pixels still to draw per class to reach ``minimum`` (only the classes short of it)."""
        return {value: max(1, round(minimum - self.pixels.get(value, 0))) for value in CLASSES
                if self.pixels.get(value, 0) < minimum}


def count_labels(layer: QgsVectorLayer, label_field: str, raster: QgsRasterLayer | None = None) -> LabelCounts:
    """Polygons and estimated pixels per class in ``layer`` (its edit buffer included), on ``raster``'s grid."""
    index = layer.fields().indexOf(label_field)
    if index < 0:
        return LabelCounts()
    polygons, areas, unclassified = {CHANGE: 0, NO_CHANGE: 0}, {CHANGE: 0.0, NO_CHANGE: 0.0}, 0
    transform = None
    if raster is not None and raster.isValid() and raster.crs() != layer.crs():
        transform = QgsCoordinateTransform(layer.crs(), raster.crs(), QgsProject.instance())
    for feature in layer.getFeatures(QgsFeatureRequest().setSubsetOfAttributes([index])):
        geometry = feature.geometry()
        if geometry is None or geometry.isEmpty():
            continue
        value = class_of(feature.attribute(index))
        if value is None:
            unclassified += 1
            continue
        polygons[value] += 1
        if transform is not None:
            geometry.transform(transform)
        areas[value] += geometry.area()
    if raster is None or not raster.isValid():
        return LabelCounts(polygons, {}, unclassified)
    pixel = abs(raster.rasterUnitsPerPixelX() * raster.rasterUnitsPerPixelY()) or 1.0
    return LabelCounts(polygons, {value: area / pixel for value, area in areas.items()}, unclassified)


def describe_counts(counts: LabelCounts, minimum: int = MIN_PIXELS) -> tuple[str, bool]:
    """What the analyst has drawn and still needs to draw, and whether adapting can start.

    E.g. ``("change: 3 polygons, ≈ 450 px; no change: 1 polygon, ≈ 120 px. Draw ≈ 80 more no-change pixels
    (adapting needs ≥ 200 of each class).", False)``.
    """
    parts = []
    for value, (text, _) in CLASSES.items():
        n = counts.polygons.get(value, 0)
        parts.append(f"{text}: {n} polygon{'' if n == 1 else 's'}"
                     + (f", ≈ {counts.pixels[value]:,.0f} px" if value in counts.pixels else ""))
    text = "; ".join(parts) + "."
    advice = []
    if counts.unclassified:
        advice.append(f"{counts.unclassified} polygon{' has' if counts.unclassified == 1 else 's have'} no class: "
                      "set it to 1 (change) or 0 (no change) in the attribute table")
    if counts.pixels:
        missing = counts.missing(minimum)
        advice += [f"draw ≈ {need:,} more {CLASSES[value][0]} pixels" for value, need in missing.items()]
        if missing:
            advice[-1] += f" (adapting needs ≥ {minimum} of each class)"
    else:
        advice.append("choose the earlier date to estimate the pixels")
    if advice:
        sentence = "; ".join(advice)
        return f"{text} {sentence[0].upper()}{sentence[1:]}.", False
    text += " Enough to adapt"
    if min(counts.polygons.values()) < 2:  # the worker then cuts the class's polygon in two
        text += ("; polygons in several places make a fairer check: about a quarter of each class (whole "
                 "polygons) is held out to measure the adapted model")
    return text + ".", True


def check_labels(layer: QgsMapLayer | None, label_field: str) -> QgsVectorLayer:
    """Refuse a labels layer ``swimdiff adapt`` could not use, before any worker starts.

    Returns:
        The layer, when it is usable.

    Raises:
        ValueError: No polygon layer, no such field, no polygon, or polygons without a 1 / 0 class.
    """
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise ValueError("choose the labels layer (polygons with 1 = change, 0 = no change), or click New "
                         "labelling layer and draw them")
    if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise ValueError(f"the labels layer '{layer.name()}' holds no polygons; choose a polygon layer")
    if layer.fields().indexOf(label_field) < 0:
        names = ", ".join(layer.fields().names()) or "none"
        raise ValueError(f"the labels layer '{layer.name()}' has no field '{label_field}' (it has {names}); "
                         "choose its class field (1 = change, 0 = no change)")
    counts = count_labels(layer, label_field)
    if counts.unclassified:
        raise ValueError(f"{counts.unclassified} polygon(s) of '{layer.name()}' have no class in '{label_field}': "
                         "set each to 1 (change) or 0 (no change) in the attribute table")
    if not any(counts.polygons.values()):
        raise ValueError(f"the labels layer '{layer.name()}' holds no polygon yet; draw change and no-change "
                         "polygons over the two dates")
    return layer


def export_labels(layer: QgsVectorLayer, label_field: str, path: Path) -> int:
    """Write ``layer``'s polygons as they are drawn (unsaved edits included, the layer untouched) with only
    ``label_field`` to a new GeoPackage ``path`` (layer ``labels``), for the worker.

    Returns:
        The number of polygons written.

    Raises:
        ValueError: The file cannot be written (the message names it and why).
    """
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName, options.fileEncoding = "GPKG", GPKG_LAYER, "UTF-8"
    options.attributes = [layer.fields().indexOf(label_field)]
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(path), QgsProject.instance().transformContext(), options)
    if error != QgsVectorFileWriter.NoError:
        raise ValueError(f"the labels cannot be copied to '{path}' for the worker ({message}); choose another "
                         "output folder")
    return layer.featureCount()
