"""Style the layers that Processing loads into a project as the SwiMDiff panel does: change layers (see
``layers.py``) and land-cover layers (see ``landcover.py``).

Processing loads an algorithm's raster outputs after the run (toolbox, batch mode, models, and
``processing.runAndLoadResults``) and then calls the post-processor attached to each; ``qgis_process`` and
``processing.run`` load nothing, so nothing is styled there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
)

from ..landcover import KEYWORDS, dominant_class, style_class_probabilities, style_landcover
from ..layers import describe_run, run_results, style_mask, style_probability

#: Post-processors stay referenced here: Processing keeps only a pointer until it loads the layers.
_KEPT: list[QgsProcessingLayerPostProcessorInterface] = []
_KEEP_AT_MOST = 256

MASK, PROBABILITY = "mask", "probability"
LANDCOVER, PROBABILITIES = "land cover", "class probabilities"


class RunLayerStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer Processing has just loaded, and puts the run's parameters in its metadata.

    Subclasses say how (:meth:`style`) and under which title.

    Attributes:
        role: What the layer is (e.g. :data:`MASK` or :data:`LANDCOVER`).
        described: The run's parameters and results, for the layer metadata.
    """

    title = "SwiMDiff"
    keywords: tuple[str, ...] | None = None

    def __init__(self, role: str, described: Mapping[str, Any]) -> None:
        super().__init__()
        self.role = role
        self.described = dict(described)

    def style(self, layer: QgsRasterLayer) -> None:
        """Give ``layer`` its renderer."""
        raise NotImplementedError

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802 (QGIS name)
                         feedback: QgsProcessingFeedback) -> None:
        """Style the layer Processing has just added to the project.

        Args:
            layer: The loaded output layer.
            context: The algorithm's context.
            feedback: The algorithm's feedback.
        """
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            return
        self.style(layer)
        describe_run(layer, f"{self.title} {self.role}", self.described, self.keywords)


class ChangeLayerStyler(RunLayerStyler):
    """Styles a loaded change mask (paletted) or probability (pseudo-colour from the threshold up).

    Attributes:
        threshold: The threshold the run used; the probability ramp starts there.
        method: ``model``, ``features`` or ``cva``; a model's probability ramp ends at 1.
    """

    title = "SwiMDiff change"

    def __init__(self, role: str, threshold: float, method: str, described: Mapping[str, Any]) -> None:
        super().__init__(role, described)
        self.threshold = threshold
        self.method = method

    def style(self, layer: QgsRasterLayer) -> None:
        if self.role == MASK:
            style_mask(layer)
        else:
            style_probability(layer, self.threshold, 1.0 if self.method == "model" else None)


class LandCoverLayerStyler(RunLayerStyler):
    """Styles a loaded land-cover map (paletted, class names as legend) or its class probabilities.

    Attributes:
        outputs: The worker's result (``classes``, ``colors``, ``class_fractions``...).
    """

    keywords = KEYWORDS

    def __init__(self, role: str, outputs: Mapping[str, Any], described: Mapping[str, Any]) -> None:
        super().__init__(role, described)
        self.outputs = dict(outputs)

    def style(self, layer: QgsRasterLayer) -> None:
        if self.role == LANDCOVER:
            style_landcover(layer, [str(name) for name in self.outputs.get("classes") or []],
                            self.outputs.get("colors"))
        else:
            style_class_probabilities(layer, dominant_class(self.outputs) + 1)


def style_when_loaded(context: QgsProcessingContext, path: str, role: str, outputs: Mapping[str, Any],
                      parameters: Mapping[str, Any]) -> bool:
    """Attach a :class:`ChangeLayerStyler` to an output that Processing will load into a project.

    Args:
        context: The algorithm's context.
        path: The output file, as the destination parameter gave it.
        role: :data:`MASK` or :data:`PROBABILITY`.
        outputs: The worker's result (``threshold``, ``method``, ``changed_fraction``...).
        parameters: What the run was asked, for the metadata.

    Returns:
        True when the output will be loaded (and so styled), False otherwise.
    """
    styler = ChangeLayerStyler(role, float(outputs.get("threshold", 0.5)), str(outputs.get("method", "model")),
                               run_results(outputs, parameters))
    return _attach(context, path, styler)


def style_landcover_when_loaded(context: QgsProcessingContext, path: str, role: str, outputs: Mapping[str, Any],
                                parameters: Mapping[str, Any]) -> bool:
    """Attach a :class:`LandCoverLayerStyler` to an output that Processing will load into a project.

    Args:
        context: The algorithm's context.
        path: The output file, as the destination parameter gave it.
        role: :data:`LANDCOVER` or :data:`PROBABILITIES`.
        outputs: The worker's result (``classes``, ``colors``, ``class_fractions``...).
        parameters: What the run was asked, for the metadata.

    Returns:
        True when the output will be loaded (and so styled), False otherwise.
    """
    return _attach(context, path, LandCoverLayerStyler(role, outputs, run_results(outputs, parameters)))


def _attach(context: QgsProcessingContext, path: str, styler: QgsProcessingLayerPostProcessorInterface) -> bool:
    """Make ``styler`` the post-processor of ``path`` if Processing loads it (and keep it referenced)."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return False
    _KEPT.append(styler)
    del _KEPT[:-_KEEP_AT_MOST]
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(styler)
    return True
