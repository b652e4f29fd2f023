"""Style the change layers that Processing loads into a project, as the SwiMDiff panel does (see ``layers.py``).

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

from ..layers import describe_run, style_mask, style_probability

#: Post-processors stay referenced here: Processing keeps only a pointer until it loads the layers.
_KEPT: list[QgsProcessingLayerPostProcessorInterface] = []
_KEEP_AT_MOST = 256

MASK, PROBABILITY = "mask", "probability"


class ChangeLayerStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded change mask (paletted) or probability (pseudo-colour from the threshold up).

    Attributes:
        role: :data:`MASK` or :data:`PROBABILITY`.
        threshold: The threshold the run used; the probability ramp starts there.
        method: ``model``, ``features`` or ``cva``; a model's probability ramp ends at 1.
        described: The run's parameters and results, for the layer metadata.
    """

    def __init__(self, role: str, threshold: float, method: str, described: Mapping[str, Any]) -> None:
        super().__init__()
        self.role = role
        self.threshold = threshold
        self.method = method
        self.described = dict(described)

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
        if self.role == MASK:
            style_mask(layer)
        else:
            style_probability(layer, self.threshold, 1.0 if self.method == "model" else None)
        describe_run(layer, f"SwiMDiff change {self.role}", self.described)


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
    if not path or not context.willLoadLayerOnCompletion(path):
        return False
    described = {**parameters, **{k: v for k, v in outputs.items() if k not in ("change", "probability")}}
    styler = ChangeLayerStyler(role, float(outputs.get("threshold", 0.5)), str(outputs.get("method", "model")),
                               described)
    _KEPT.append(styler)
    del _KEPT[:-_KEEP_AT_MOST]
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(styler)
    return True
