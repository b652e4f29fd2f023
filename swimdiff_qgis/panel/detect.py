"""The dock's "Detect changes" page: two dates, a method, a model (not for CVA), a threshold, band names."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qgis.core import QgsMapLayerProxyModel, QgsProject
from qgis.gui import QgsDoubleSpinBox, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QCheckBox, QPushButton, QWidget

from ..environment import PLUGIN_DIR
from ..layers import is_result_layer
from ..runs import METHOD_NAMES, Runner
from .bands import BandNamesChoice
from .threshold import ThresholdWidget
from .widgets import ChoiceBox, Starter, folder_widget, form_layout, geotiff_widget, info_label, narrow, show_info

logger = logging.getLogger(__name__)

DEFAULT_MODEL = PLUGIN_DIR / "resources" / "models" / "oscd-change"
#: What the Threshold box's "auto" means for methods that have no validated threshold.
OTSU = "auto (Otsu's)"
CVA_NOTE = "Change vector analysis compares the bands of the two dates directly: no model is used."


def model_summary(folder: str | Path) -> tuple[str, float | None]:
    """A one-line description of a model folder from its ``config.json``, and its validated threshold.

    Args:
        folder: A ``swimdiff`` model folder.

    Returns:
        ``(text, threshold or None)``; the text says what is wrong when the folder holds no readable config.
    """
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"no readable model in {folder} ({exc.__class__.__name__})", None
    threshold = config.get("threshold")
    bands = ", ".join(config.get("bands", [])) or "?"
    text = f"{config.get('kind', 'model')}: bands {bands}"
    text += f"; threshold {threshold:.2f}" if isinstance(threshold, float | int) else ""
    cut = config.get("stable_vegetation_ndvi")  # the rules of core.change.stable_cover
    text += f"; green at both dates (NDVI > {cut:g}) is not change" if isinstance(cut, float | int) else ""
    cut = config.get("stable_water_mndwi")
    text += f"; open water at both dates (MNDWI > {cut:g}) is not change" if isinstance(cut, float | int) else ""
    return text, (
        float(threshold) if isinstance(threshold, float | int) else None)


def pick_other_date(t1_combo: QgsMapLayerComboBox, t2_combo: QgsMapLayerComboBox) -> None:
    """When both dates show the same layer, give the later date another raster (not a SwiMDiff result)."""
    t1, t2 = t1_combo.currentLayer(), t2_combo.currentLayer()
    if t1 is None or (t2 is not None and t2.id() != t1.id()):
        return
    others = [layer for layer in (t2_combo.layer(i) for i in range(t2_combo.count()))
              if layer is not None and layer.id() != t1.id() and not is_result_layer(layer)]
    if others:
        t2_combo.setLayer(others[0])


class DetectPage(QWidget):
    """Detect changes between two raster layers.

    Attributes:
        t1_combo: The earlier date; t2_combo: the later one (a different layer by default).
        method_combo: The method, shown in words (ids ``model``, ``features``, ``cva`` as item data).
        model_widget: The model folder (empty: the shipped one), hidden for CVA.
        model_label: What the model holds, or that CVA uses none.
        threshold_spin: The threshold; 0 is "auto", which names what auto means for the method.
        band_names: Names for unnamed bands (``--assume-band-names``).
        output_widget: The change mask GeoTIFF (empty: a temporary file).
        probability_check: Also write the probability (or CVA magnitude).
        clouds_check: Mask clouds (``--mask-clouds``): cloudy pixels of either date are left out.
        vegetation_check: Score pixels green at both dates too (``--keep-vegetation``; method model only).
        water_check: Score pixels that are open water at both dates too (``--keep-water``; method model only).
        detect_button: Starts the run.
        threshold_widget: The live threshold of a change probability layer and "Save the mask at this threshold".
        run_buttons: The page's run buttons.
    """

    def __init__(self, runner: Runner, start: Starter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner, self.start = runner, start
        self.form = form = form_layout(self)
        self.t1_combo, self.t2_combo = narrow(QgsMapLayerComboBox()), narrow(QgsMapLayerComboBox())
        for combo in (self.t1_combo, self.t2_combo):
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.method_combo = ChoiceBox([(text, value) for value, text in METHOD_NAMES.items()])
        self.model_widget = folder_widget("default: the shipped model")
        self.model_label = info_label("SwiMDiffModelInfo")
        self.threshold_spin = QgsDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1e6)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setClearValue(0.0)
        self.band_names = BandNamesChoice()
        self.output_widget = geotiff_widget("temporary file")
        self.probability_check = QCheckBox("also the probability")
        self.probability_check.setChecked(True)
        self.probability_check.setToolTip("Also write and show the change probability (CVA: the change magnitude) "
                                          "beside the mask, as <mask>_probability.tif")
        self.clouds_check = QCheckBox("Mask clouds (Sentinel-2 L1C)")
        self.clouds_check.setToolTip("Leave the pixels that are cloudy on either date (found from the Sentinel-2 "
                                     "L1C bands) out of the change map; the message says how much was cloudy")
        self.vegetation_check = QCheckBox("Green areas can change")
        self.vegetation_check.setToolTip(
            "The shipped model gives pixels that are green (NDVI above a cut) at both dates no change: fields and "
            "woods changing with the season were its commonest false alarms. Tick this to score them like the "
            "others, e.g. for changes within forests or crops")
        self.water_check = QCheckBox("Water can change")
        self.water_check.setToolTip(
            "The shipped model gives pixels that are open water (MNDWI above a cut) at both dates no "
            "change: rivers and lakes changing colour with silt, algae or sun glint are not change. Tick this to "
            "score them like the others, e.g. for changes on the water (moorings, fish farms, floating solar)")
        self.detect_button = QPushButton("Detect changes")
        self.detect_button.clicked.connect(self.run_detect)
        self.threshold_widget = ThresholdWidget(runner, start)
        self.run_buttons = [self.detect_button, *self.threshold_widget.run_buttons]
        for label, widget in (("Earlier (t1)", self.t1_combo), ("Later (t2)", self.t2_combo),
                              ("Method", self.method_combo), ("Model", self.model_widget), ("", self.model_label),
                              ("Threshold", self.threshold_spin), ("Band names", self.band_names),
                              ("Change mask", self.output_widget), ("", self.probability_check),
                              ("", self.clouds_check), ("", self.vegetation_check), ("", self.water_check),
                              ("", self.detect_button), ("Live threshold", self.threshold_widget)):
            form.addRow(label, widget)
        self.model_widget.fileChanged.connect(self._update)
        self.method_combo.currentIndexChanged.connect(self._update)
        QgsProject.instance().layersAdded.connect(self.pick_dates)
        self.pick_dates()
        self._update()

    def shutdown(self) -> None:
        """Stop following the project (the dock is going)."""
        self.threshold_widget.shutdown()
        try:
            QgsProject.instance().layersAdded.disconnect(self.pick_dates)
        except TypeError:  # already disconnected
            pass

    def set_model(self, folder: str) -> None:
        """Choose a change model folder (e.g. the one just fine-tuned) and the method that uses it."""
        self.method_combo.select("model")
        self.model_widget.setFilePath(folder)

    def pick_dates(self, *_: object) -> None:
        """When both dates show the same layer, give the later date another raster (not a SwiMDiff result)."""
        pick_other_date(self.t1_combo, self.t2_combo)

    def method(self) -> str:
        """The chosen method's id."""
        return str(self.method_combo.currentData())

    def _update(self, *_: object) -> None:
        """Show the model rows and what "auto" means for the chosen method."""
        method, folder = self.method(), self.model_widget.filePath().strip()
        uses_model = method != "cva"
        for widget in (self.model_widget, self.form.labelForField(self.model_widget)):
            widget.setVisible(uses_model)
        for check in (self.vegetation_check, self.water_check):  # rules of models: CVA and features have none
            check.setVisible(method == "model")
        if not uses_model:
            show_info(self.model_label, CVA_NOTE, "hint")
            self.threshold_spin.setSpecialValueText(OTSU)
            return
        if not folder and not (DEFAULT_MODEL / "config.json").is_file():
            text, threshold = "the default model is not installed: choose a model folder or the CVA method", None
        else:
            text, threshold = model_summary(folder or DEFAULT_MODEL)
        show_info(self.model_label, text)
        if method == "features":  # the features method thresholds the feature distance with Otsu's method
            self.threshold_spin.setSpecialValueText(OTSU)
        else:  # "auto" (0) lets the worker use the model's validated threshold
            self.threshold_spin.setSpecialValueText(OTSU if threshold is None else f"auto ({threshold:.2f})")

    def run_detect(self) -> None:
        """Start a detection with the page's values."""
        threshold = self.threshold_spin.value()
        self.start(lambda: self.runner.detect(
            self.t1_combo.currentLayer(), self.t2_combo.currentLayer(), self.output_widget.filePath().strip(),
            self.model_widget.filePath().strip(), self.method(), threshold if threshold > 0 else None,
            self.probability_check.isChecked(), self.band_names.value(),
            mask_clouds=self.clouds_check.isChecked(), keep_vegetation=self.vegetation_check.isChecked(),
            keep_water=self.water_check.isChecked()))
