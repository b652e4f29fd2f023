"""The live change threshold in QGIS (pytest-qgis, offscreen): the slider re-draws a probability layer with no
worker run, "Save the mask at this threshold" and ``swimdiff:thresholdchange`` run the real worker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsColorRampShader,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

from conftest import write_geotiff
from swimdiff_qgis.layers import CHANGE_COLOR, PARAMETERS_PROPERTY, add_detection_layers
from swimdiff_qgis.panel.threshold import is_change_probability, shown_threshold, threshold_renderer

pytestmark = pytest.mark.qgis

#: A 4 x 4 probability: rows of 0.1, 0.3, 0.6 and 0.9, with one NaN pixel.
VALUES = np.repeat(np.array([0.1, 0.3, 0.6, 0.9], np.float32)[:, None], 4, axis=1)
VALUES[0, 0] = np.nan


def probability_tif(folder: Path, name: str = "prob.tif") -> Path:
    return write_geotiff(folder / name, VALUES[None], nodata=float("nan"), descriptions=["change probability"])


def mask_tif(folder: Path) -> Path:
    mask = (VALUES > 0.3).astype(np.uint8)
    mask[0, 0] = 255
    return write_geotiff(folder / "change.tif", mask[None], nodata=255)


def render(layer: QgsRasterLayer) -> np.ndarray:
    """The layer drawn alone, one image pixel per raster pixel: (4, 4, 4) RGBA."""
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(layer.width(), layer.height()))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    return np.array([[QColor(image.pixelColor(x, y)).getRgb() for x in range(layer.width())]
                     for y in range(layer.height())])


def detection(folder: Path, threshold: float = 0.3):
    """A model detection's layer group (mask over probability), as the panel adds it."""
    outputs = {"change": str(mask_tif(folder)), "probability": str(probability_tif(folder)), "method": "model",
               "threshold": threshold, "changed_fraction": 0.5}
    return add_detection_layers(outputs, {"t1": "a.tif", "t2": "b.tif", "method": "model", "model": "default"},
                                "SwiMDiff change a → b, default model, 12:00:00")


def read(path: str) -> np.ndarray:
    dataset = gdal.Open(path)
    try:
        return dataset.GetRasterBand(1).ReadAsArray()
    finally:
        dataset = None


def test_the_renderer_draws_above_the_threshold_red_and_the_rest_transparent(qgis_new_project, tmp_path) -> None:
    layer = QgsRasterLayer(str(probability_tif(tmp_path)), "prob")
    for threshold, red_rows in ((0.3, [2, 3]), (0.6, [3]), (0.05, [0, 1, 2, 3])):
        renderer = threshold_renderer(layer, threshold)
        ramp = renderer.shader().rasterShaderFunction()
        assert renderer.type() == "singlebandpseudocolor" and ramp.colorRampType() == QgsColorRampShader.Discrete
        items = [(i.value, i.color.alpha()) for i in ramp.colorRampItemList()]
        assert items == [(pytest.approx(threshold), 0), (np.inf, 255)]
        layer.setRenderer(renderer)
        assert shown_threshold(layer) == pytest.approx(threshold)
        pixels = render(layer)
        for row in range(4):
            for column in range(4):
                if (row, column) == (0, 0) or row not in red_rows:  # NaN, or at or below the threshold (0.3 == 0.3)
                    assert pixels[row, column, 3] == 0, (threshold, row, column, pixels[row, column])
                else:
                    assert tuple(pixels[row, column]) == CHANGE_COLOR.getRgb(), (threshold, row, column)
    del layer


def test_the_slider_starts_at_the_runs_threshold_and_redraws_without_a_worker(dock, tmp_path) -> None:
    added = detection(tmp_path, threshold=0.3)
    widget = dock.detect_page.threshold_widget
    assert widget.layer() is added.probability  # the only change probability layer, chosen by itself
    assert [widget.layer_combo.layer(i) for i in range(widget.layer_combo.count())] == [None, added.probability]
    assert (widget.slider.minimum(), widget.slider.maximum(), widget.spin.singleStep()) == (0, 100, 0.01)
    assert widget.threshold() == 0.3 and widget.slider.value() == 30
    assert "the run's threshold: 0.30" in widget.note.text()
    repaints: list[int] = []
    added.probability.repaintRequested.connect(lambda *_: repaints.append(1))

    started = time.monotonic()
    widget.slider.setValue(60)
    assert time.monotonic() - started < 1.0  # re-styled at once
    assert widget.threshold() == 0.6 and shown_threshold(added.probability) == pytest.approx(0.6)
    assert repaints and not dock.runner.busy() and QgsApplication.taskManager().countActiveTasks() == 0
    pixels = render(added.probability)
    assert (pixels[3, :, 3] == 255).all() and (pixels[:3, :, 3] == 0).all()  # only the 0.9 row is red
    root = QgsProject.instance().layerTreeRoot()
    assert not root.findLayer(added.mask.id()).itemVisibilityChecked()  # the saved mask does not hide the live one
    assert root.findLayer(added.probability.id()).itemVisibilityChecked()
    widget.spin.setValue(0.2)
    assert widget.slider.value() == 20 and shown_threshold(added.probability) == pytest.approx(0.2)
    assert "above 0.20" in widget.note.text()


def test_other_layers_are_not_offered(dock, tmp_path) -> None:
    mask = QgsRasterLayer(str(mask_tif(tmp_path)), "mask")
    other = QgsRasterLayer(str(write_geotiff(tmp_path / "dem.tif", np.ones((1, 4, 4), np.float32))), "dem")
    probability = QgsRasterLayer(str(probability_tif(tmp_path, "loaded.tif")), "loaded probability")
    QgsProject.instance().addMapLayers([mask, other, probability])
    widget = dock.detect_page.threshold_widget
    assert [is_change_probability(layer) for layer in (mask, other, probability)] == [False, False, True]
    assert widget.layer() is probability and widget.threshold() == 0.5  # nothing recorded: says so
    assert "no threshold recorded" in widget.note.text()


def test_save_writes_the_mask_at_the_threshold_into_the_runs_group(dock, qgis_iface, tmp_path) -> None:
    added = detection(tmp_path)
    widget = dock.detect_page.threshold_widget
    widget.slider.setValue(55)
    widget.save_button.click()
    deadline = time.monotonic() + 60
    while (dock.runner.busy() or dock.status.text() != "done") and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert dock.status.text() == "done", qgis_iface.messageBar().get_messages(2)
    mask = dock.runner.last_layers
    assert mask.source() == str(tmp_path / "prob_mask_0.55.tif")
    expected = np.where(np.isnan(VALUES), 255, VALUES > 0.55).astype(np.uint8)
    np.testing.assert_array_equal(read(mask.source()), expected)
    assert mask.renderer().type() == "paletted" and [c.value for c in mask.renderer().classes()] == [1]
    assert json.loads(mask.customProperty(PARAMETERS_PROPERTY))["threshold"] == 0.55
    assert "threshold: 0.55" in mask.metadata().abstract()
    assert [node.layer() for node in added.group.findLayers()][0] is mask  # on top of the run's group
    assert "Change mask saved at threshold 0.55" in qgis_iface.messageBar().get_messages(3)[-1]


def test_the_processing_algorithm_writes_the_mask_and_needs_a_threshold(provider, qgis_new_project, tmp_path) -> None:
    import processing

    prob = probability_tif(tmp_path)
    result = processing.run("swimdiff:thresholdchange", {"PROBABILITY": str(prob), "THRESHOLD": 0.3,
                                                         "OUTPUT": str(tmp_path / "mask.tif")})
    assert result["OUTPUT"] == str(tmp_path / "mask.tif") and result["USED_THRESHOLD"] == 0.3
    np.testing.assert_array_equal(read(result["OUTPUT"]), np.where(np.isnan(VALUES), 255, VALUES > 0.3))
    assert result["CHANGED_FRACTION"] == pytest.approx(8 / 15)
    (tmp_path / "run").mkdir()
    added = detection(tmp_path / "run", threshold=0.6)
    result = processing.run("swimdiff:thresholdchange", {"PROBABILITY": added.probability,
                                                         "OUTPUT": str(tmp_path / "recorded.tif")})
    assert result["USED_THRESHOLD"] == 0.6  # the layer's recorded threshold
    with pytest.raises(QgsProcessingException, match="records no threshold"):
        processing.run("swimdiff:thresholdchange", {"PROBABILITY": str(prob), "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()
