"""The live change threshold: a slider that re-draws a change probability layer as a mask at once, and
"Save the mask at this threshold", which has the worker write that mask (``swimdiff threshold``).

Sliding never starts the worker: the probability layer gets a renderer that draws the pixels above the
threshold in the change red and the others transparent, and is repainted. The renderer is a
:class:`QgsSingleBandPseudoColorRenderer` with a two-class DISCRETE :class:`QgsColorRampShader` (a discrete
shader gives a pixel the colour of the first class whose upper value is at or above it): ``<= threshold``
transparent, ``<= inf`` red. That is exactly the rule of the saved mask (change where probability >
threshold), evaluated per pixel on the float values; a paletted renderer maps exact integer values only, so
it cannot draw ranges of a float probability. NaN (nodata) pixels are not drawn.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgis.core import (
    Qgis,
    QgsColorRampShader,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.gui import QgsDoubleSpinBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QHBoxLayout, QPushButton, QSlider, QVBoxLayout, QWidget

from ..layers import CHANGE_COLOR, PARAMETERS_PROPERTY, add_run_group, describe_run, open_layer, style_mask
from .widgets import Starter, narrow, wrapped_label

if TYPE_CHECKING:
    from ..runs import Runner

logger = logging.getLogger(__name__)

#: Slider steps per unit of probability (0.01 apart).
STEPS = 100
#: Where the slider starts on a probability layer that records no threshold.
FALLBACK_THRESHOLD = 0.5
#: The float data types a probability layer has.
FLOAT_TYPES = (Qgis.Float32, Qgis.Float64)
TRANSPARENT = QColor(0, 0, 0, 0)


def run_parameters(layer: QgsMapLayer) -> dict[str, Any]:
    """The run parameters a SwiMDiff result layer carries (``layers.describe_run``), {} for other layers."""
    try:
        value = json.loads(layer.customProperty(PARAMETERS_PROPERTY) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def is_change_probability(layer: QgsMapLayer | None) -> bool:
    """True for a 1-band float raster holding a change probability (0 to 1): a probability layer of a
    ``model`` detection, or a file whose band is described as "change probability" (what ``detect`` writes)."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid() or layer.bandCount() != 1:
        return False
    if layer.dataProvider().dataType(1) not in FLOAT_TYPES:
        return False
    method = run_parameters(layer).get("method")
    if method is not None:
        return method == "model"
    return layer.bandName(1).lower().endswith(": change probability")  # "Band 1: <description>"


def recorded_threshold(layer: QgsMapLayer) -> float | None:
    """The threshold a probability layer's run used (the model's validated one unless another was asked)."""
    value = run_parameters(layer).get("threshold")
    try:
        threshold = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return None
    return threshold if 0.0 <= threshold <= 1.0 else None


def as_float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (0.3 -> 0.30000001192...), as numpy compares a float32 array."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def threshold_renderer(layer: QgsRasterLayer, threshold: float, band: int = 1) -> QgsSingleBandPseudoColorRenderer:
    """A renderer that draws ``band`` as the change mask at ``threshold``: above it red, at or below it transparent.

    Args:
        layer: A change probability layer.
        threshold: The threshold, 0 to 1.
        band: The band drawn.
    """
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Discrete)
    edge = as_float32(threshold)  # the mask compares float32 probabilities with a float32 threshold: ties alike
    ramp.setColorRampItemList([QgsColorRampShader.ColorRampItem(edge, TRANSPARENT, f"≤ {threshold:.2f}"),
                               QgsColorRampShader.ColorRampItem(math.inf, CHANGE_COLOR, f"change > {threshold:.2f}")])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    return renderer


def shown_threshold(layer: QgsRasterLayer) -> float | None:
    """The threshold a layer is drawn at by :func:`threshold_renderer`, None for any other style."""
    renderer = layer.renderer()
    if not isinstance(renderer, QgsSingleBandPseudoColorRenderer) or renderer.shader() is None:
        return None
    ramp = renderer.shader().rasterShaderFunction()
    if not isinstance(ramp, QgsColorRampShader) or ramp.colorRampType() != QgsColorRampShader.Discrete:
        return None
    items = ramp.colorRampItemList()
    return items[0].value if len(items) == 2 and math.isinf(items[1].value) else None


def show_at_threshold(layer: QgsRasterLayer, threshold: float) -> None:
    """Draw ``layer`` as the change mask at ``threshold`` and repaint it (the worker is not involved).

    The layer is made visible and the saved masks of its run group are hidden: drawn above it, they would
    hide the live threshold.
    """
    layer.setRenderer(threshold_renderer(layer, threshold))
    layer.triggerRepaint()
    project = QgsProject.instance()
    node = project.layerTreeRoot().findLayer(layer.id())
    if node is None:
        return
    node.setItemVisibilityChecked(True)
    group = run_group(layer, project)
    for other in group.findLayers() if group is not None else []:
        if other.layer() is not layer and isinstance(other.layer(), QgsRasterLayer) and not is_change_probability(
                other.layer()):
            other.setItemVisibilityChecked(False)


def run_group(layer: QgsMapLayer, project: QgsProject) -> QgsLayerTreeGroup | None:
    """The layer tree group ``layer`` is in, None when it is not in the tree or at its root."""
    node = project.layerTreeRoot().findLayer(layer.id())
    parent = node.parent() if node is not None else None
    return parent if isinstance(parent, QgsLayerTreeGroup) and parent != project.layerTreeRoot() else None


def add_threshold_mask(outputs: dict[str, Any], parameters: dict[str, Any], probability_id: str,
                       project: QgsProject | None = None) -> QgsRasterLayer:
    """Add the mask ``swimdiff threshold`` wrote, styled like a detection's mask, into the probability's group.

    Args:
        outputs: The worker's result (``change``, ``threshold``, ``changed_fraction``...).
        parameters: The run's parameters, stored in the layer's metadata with the threshold.
        probability_id: The probability layer's id; its group gets the mask (a new group when it is gone).
        project: The project; the current one when None.

    Raises:
        ValueError: The mask file cannot be opened as a raster layer.
    """
    project = project or QgsProject.instance()
    threshold = float(outputs["threshold"])
    mask = open_layer(outputs["change"], f"change mask at {threshold:.2f} ({Path(outputs['change']).name})",
                      "change mask")
    style_mask(mask)
    results = {**parameters, **{k: v for k, v in outputs.items() if k not in ("change", "probability")}}
    describe_run(mask, f"SwiMDiff change mask at threshold {threshold:.2f}", results)
    probability = project.mapLayer(probability_id)
    group = run_group(probability, project) if probability is not None else None
    if group is None:
        add_run_group(project, f"SwiMDiff change mask at {threshold:.2f}", [mask])
    else:
        project.addMapLayer(mask, False)
        group.insertLayer(0, mask)
    return mask


class ThresholdWidget(QWidget):
    """A change probability layer, a threshold slider (0 to 1, steps of 0.01) and "Save the mask at this threshold".

    Attributes:
        layer_combo: The change probability layers of the project.
        slider: The threshold in hundredths; spin: the same threshold as a number.
        note: What the layer shows and what its run's threshold was.
        save_button: Starts ``swimdiff threshold`` on the layer's file.
        run_buttons: The widget's run buttons (disabled by the dock during a run).
    """

    def __init__(self, runner: Runner, start: Starter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner, self.start = runner, start
        self.layer_combo = narrow(QgsMapLayerComboBox())
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_combo.setAllowEmptyLayer(True)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, STEPS)
        self.slider.setPageStep(5)
        self.spin = QgsDoubleSpinBox()
        self.spin.setRange(0.0, 1.0)
        self.spin.setDecimals(2)
        self.spin.setSingleStep(1 / STEPS)
        self.note = wrapped_label("", "SwiMDiffThresholdNote")
        self.save_button = QPushButton("Save the mask at this threshold")
        self.save_button.clicked.connect(self.save)
        self.run_buttons = [self.save_button]
        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for item in (self.layer_combo, row, self.note, self.save_button):
            layout.addLayout(item) if isinstance(item, QHBoxLayout) else layout.addWidget(item)
        self.slider.valueChanged.connect(lambda step: self.spin.setValue(step / STEPS))
        self.spin.valueChanged.connect(self._changed)
        self.layer_combo.layerChanged.connect(self._layer_chosen)
        QgsProject.instance().layersAdded.connect(self.refresh_layers)
        QgsProject.instance().layersRemoved.connect(self.refresh_layers)
        self.refresh_layers()

    def shutdown(self) -> None:
        """Stop following the project (the dock is going)."""
        for signal in (QgsProject.instance().layersAdded, QgsProject.instance().layersRemoved):
            try:
                signal.disconnect(self.refresh_layers)
            except TypeError:  # already disconnected
                pass

    def threshold(self) -> float:
        """The chosen threshold."""
        return round(self.spin.value(), 2)

    def layer(self) -> QgsRasterLayer | None:
        """The chosen probability layer."""
        layer = self.layer_combo.currentLayer()
        return layer if is_change_probability(layer) else None

    def refresh_layers(self, *_: object) -> None:
        """Offer only change probability layers; choose the newest when none is chosen."""
        layers = QgsProject.instance().mapLayers().values()
        self.layer_combo.setExceptedLayerList([layer for layer in layers if not is_change_probability(layer)])
        if self.layer() is None and self.layer_combo.count() > 1:
            self.layer_combo.setLayer(self.layer_combo.layer(1))  # index 0 is the empty entry
        self._layer_chosen(self.layer())

    def _layer_chosen(self, layer: QgsMapLayer | None) -> None:
        """Start the slider at the layer's recorded threshold (or the one it is drawn at)."""
        self.save_button.setEnabled(self.layer() is not None)
        if self.layer() is None:
            self.note.setText("Detect changes with “also the probability” (or load a change probability layer) "
                              "to choose its threshold here.")
            return
        recorded = recorded_threshold(layer)
        start = shown_threshold(layer)
        start = start if start is not None else recorded if recorded is not None else FALLBACK_THRESHOLD
        self._recorded = recorded
        self.spin.blockSignals(True)  # choosing a layer does not restyle it
        self.spin.setValue(start)
        self.spin.blockSignals(False)
        self.slider.blockSignals(True)
        self.slider.setValue(round(start * STEPS))
        self.slider.blockSignals(False)
        self._describe()

    def _describe(self) -> None:
        recorded = getattr(self, "_recorded", None)
        run = (f"the run's threshold: {recorded:.2f}" if recorded is not None
               else f"no threshold recorded for this layer: starting at {FALLBACK_THRESHOLD:.2f}")
        self.note.setText(f"Red: change probability above {self.threshold():.2f} ({run}).")

    def _changed(self, value: float) -> None:
        """Re-draw the layer at the new threshold: a renderer and a repaint, no worker run."""
        self.slider.blockSignals(True)
        self.slider.setValue(round(value * STEPS))
        self.slider.blockSignals(False)
        layer = self.layer()
        if layer is None:
            return
        show_at_threshold(layer, self.threshold())
        self._describe()

    def save(self) -> None:
        """Have the worker write the mask at the chosen threshold; it is added to the layer's group."""
        layer = self.layer()
        self.start(lambda: self.runner.threshold(layer, self.threshold()))
