"""The "SwiMDiff" Processing provider (id ``swimdiff``) and its algorithms."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..environment import PLUGIN_DIR
from .adapt_change import AdaptChangeAlgorithm
from .build_stack import BuildStackAlgorithm
from .classify import ClassifyAlgorithm
from .detect_change import DetectChangeAlgorithm
from .evaluate_change import EvaluateChangeAlgorithm
from .finetune_change import FinetuneChangeAlgorithm
from .finetune_classify import FinetuneClassifyAlgorithm
from .pretrain import PretrainAlgorithm
from .threshold_change import ThresholdChangeAlgorithm

ICON_PATH = PLUGIN_DIR / "resources" / "icon.png"


class SwimDiffProvider(QgsProcessingProvider):
    """Pre-training, fine-tuning, adapting, evaluation, change detection and land-cover classification, each run
    by the ``swimdiff`` worker."""

    def id(self) -> str:
        return "swimdiff"

    def name(self) -> str:
        return "SwiMDiff"

    def longName(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "SwiMDiff self-supervised change detection and land-cover classification"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def loadAlgorithms(self) -> None:  # noqa: N802 (name fixed by QGIS)
        for algorithm in (DetectChangeAlgorithm(), PretrainAlgorithm(), FinetuneChangeAlgorithm(),
                          EvaluateChangeAlgorithm(), ClassifyAlgorithm(), FinetuneClassifyAlgorithm(),
                          BuildStackAlgorithm(), ThresholdChangeAlgorithm(), AdaptChangeAlgorithm()):
            self.addAlgorithm(algorithm)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 (name fixed by QGIS)
        """The worker writes GeoTIFF only."""
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802 (name fixed by QGIS)
        return "tif"
