"""The "Adapt to this area" page and the Detect page's cloud mask in QGIS (pytest-qgis, offscreen).

The labelling layer, the counts and the copy of unsaved drawings use generated rasters and a fake worker (a
shell script that prints the worker's JSON-lines events); the runs to the end and the cancel drive the real
``swimdiff adapt`` on a 128 x 128 crop of the OSCD Nantes pair with polygons made from its change label.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsEditFormConfig,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsVectorLayerUtils,
)
from test_qgis_panel import bar, event, fake_worker, make_pair, wait_for, wait_until_idle  # noqa: F401 (fixture)

from conftest import REPO, SHARED_DATA, smooth_field, write_geotiff

pytestmark = pytest.mark.qgis

NANTES = SHARED_DATA / "oscd" / "images" / "nantes"
NANTES_LABEL = SHARED_DATA / "oscd" / "labels" / "nantes" / "cm" / "nantes-cm.tif"
#: Rows and columns of the Nantes crop: 1070 changed pixels of 16384.
CROP = (238, 65, 128)


def add_pair(folder: Path, crs: str = "EPSG:32631") -> tuple[QgsRasterLayer, QgsRasterLayer]:
    """The generated 4-band dates of ``make_pair`` (10 m pixels) in ``crs``, added to the project."""
    if crs == "EPSG:32631":
        paths = make_pair(folder)
    else:
        data = smooth_field(np.random.default_rng(0), 4, 64)
        paths = (write_geotiff(folder / "S2_20150821.tif", data, crs=crs),
                 write_geotiff(folder / "S2_2017-10-14.tif", data + 5, crs=crs))
    t1, t2 = (QgsRasterLayer(str(p), name) for p, name in zip(paths, ("t1", "t2")))
    QgsProject.instance().addMapLayers([t1, t2])
    return t1, t2


def square(x: float, y: float, width: float, height: float) -> QgsGeometry:
    """A rectangle (metres east and south of the generated rasters' corner)."""
    left, top = 500000.0 + x, 4600000.0 - y
    return QgsGeometry.fromRect(QgsRectangle(left, top - height, left + width, top))


def draw(layer: QgsVectorLayer, geometry: QgsGeometry) -> None:
    """What the add-polygon tool does with the form suppressed: a feature with the fields' default values."""
    geometry.convertToMultiType()  # as the tool does on a multi-polygon layer
    assert layer.addFeature(QgsVectorLayerUtils.createFeature(layer, geometry))


def new_layer(dock, store: str, path: Path | None = None) -> QgsVectorLayer:
    page = dock.adapt_page
    page.memory_check.setChecked(store == "memory")
    page.labels_file.setFilePath(str(path) if path else "")
    page.new_layer_button.click()
    layer = page.labels_layer()
    assert layer is not None, dock.status.text()
    return layer


# --- the labelling layer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["gpkg", "memory"])
def test_a_new_labelling_layer_is_ready_to_draw_on(dock, qgis_iface, tmp_path: Path, store: str) -> None:
    t1, _ = add_pair(tmp_path, crs="EPSG:3035")
    (tmp_path / "labels.gpkg").write_text("the analyst's own file")  # never overwritten
    qgis_iface.actionAddFeature.reset_mock()
    page = dock.adapt_page
    assert dock.tabs.tabText(dock.tabs.indexOf(page)) == "Adapt to this area"
    assert page.t1_combo.currentLayer() is t1 and page.t2_combo.currentLayer() is not t1

    layer = new_layer(dock, store, tmp_path / "labels.gpkg")

    assert layer.crs() == t1.crs() == QgsCoordinateReferenceSystem("EPSG:3035")
    assert layer.geometryType() == 2 and layer.isEditable() and layer.featureCount() == 0  # polygons
    if store == "gpkg":
        assert layer.providerType() == "ogr"
        assert layer.source() == f"{tmp_path / 'labels-2.gpkg'}|layername=labels"
        assert (tmp_path / "labels.gpkg").read_text() == "the analyst's own file"
    else:
        assert layer.providerType() == "memory" and not (tmp_path / "labels-2.gpkg").exists()
    index = layer.fields().indexOf("change")
    assert layer.fields().names() == (["fid", "change"] if store == "gpkg" else ["change"])
    assert layer.fields().field(index).typeName().lower().startswith("int")
    setup = layer.editorWidgetSetup(index)
    assert setup.type() == "ValueMap" and setup.config() == {"map": [{"change": "1"}, {"no change": "0"}]}
    assert layer.defaultValueDefinition(index).expression() == "1"
    assert layer.editFormConfig().suppress() == QgsEditFormConfig.SuppressOn  # no form per polygon
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "change"
    categories = [(c.value(), c.label(), c.symbol().color().name(), c.symbol().color().alpha())
                  for c in renderer.categories()]
    assert categories == [(1, "change", "#d7191c", 70), (0, "no change", "#1a9850", 70)]
    for category in renderer.categories():  # outlines in the class colour on a white casing
        casing, line = (category.symbol().symbolLayer(i) for i in (1, 2))
        assert (casing.color().name(), line.color().name()) == ("#ffffff", category.symbol().color().name())
        assert casing.width() > line.width()
    root = QgsProject.instance().layerTreeRoot()
    assert root.children()[0].layer() is layer  # above the rasters
    assert qgis_iface.activeLayer() is layer
    qgis_iface.actionAddFeature.return_value.trigger.assert_called_once_with()  # the add-polygon tool
    assert page.labels_combo.currentLayer() is layer and page.field_combo.currentField() == "change"
    assert bar(qgis_iface, Qgis.Info)[-1].startswith("SwiMDiff:Draw polygons on the map")


def test_the_counts_follow_the_drawing_and_say_what_is_missing(dock, tmp_path: Path) -> None:
    add_pair(tmp_path)  # 10 m pixels
    layer = new_layer(dock, "memory")
    page = dock.adapt_page
    assert page.counts_label.text().startswith("change: 0 polygons, ≈ 0 px; no change: 0 polygons, ≈ 0 px. Draw")

    draw(layer, square(0, 0, 200, 150))  # 300 pixels of change
    assert page.counts_label.text() == (
        "change: 1 polygon, ≈ 300 px; no change: 0 polygons, ≈ 0 px. Draw ≈ 200 more no change pixels (adapting "
        "needs ≥ 200 of each class).")
    page.draw_no_change.setChecked(True)  # new polygons are "no change" now
    assert layer.defaultValueDefinition(0).expression() == "0"
    draw(layer, square(300, 0, 100, 100))
    assert "no change: 1 polygon, ≈ 100 px. Draw ≈ 100 more no change pixels" in page.counts_label.text()
    draw(layer, square(300, 200, 150, 100))
    assert page.counts_label.text() == (
        "change: 1 polygon, ≈ 300 px; no change: 2 polygons, ≈ 250 px. Enough to adapt; polygons in several places "
        "make a fairer check: about a quarter of each class (whole polygons) is held out to measure the adapted "
        "model.")
    assert [f["change"] for f in layer.getFeatures()] == [1, 0, 0]

    layer.changeAttributeValue(next(layer.getFeatures()).id(), 0, None)  # a class emptied in the attribute table
    assert "1 polygon has no class: set it to 1 (change) or 0 (no change)" in page.counts_label.text()
    page.adapt_button.click()
    assert not dock.runner.busy()
    assert dock.status.text().startswith("1 polygon(s) of 'SwiMDiff labels 2015-08-21 → 2017-10-14' have no class")
    layer.rollBack()
    assert page.counts_label.text().startswith("change: 0 polygons")


# --- a run with a fake worker: the drawings as they are, the model handed on ------------------------------


def test_unsaved_drawings_of_a_memory_layer_reach_the_worker_and_the_model_goes_to_detect(
    dock, qgis_iface, fake_worker, tmp_path: Path  # noqa: F811 (fixture)
) -> None:
    seen, calls = tmp_path / "seen.gpkg", tmp_path / "calls.txt"
    config = json.dumps({"kind": "swimdiff-change", "bands": ["B02"], "threshold": 0.4})
    result = json.dumps({"event": "result", "outputs": {"model_dir": "OUT", "best_step": 20, "threshold": 0.4,
                                                        "val_f1": 0.61, "zero_shot_val_f1": 0.45}})
    fake_worker(f'echo "$*" >> {calls}', 'command="$3"',
                'while [ $# -gt 1 ]; do case "$1" in --labels) labels="$2";; --out) out="$2";; esac; shift; done',
                'if [ "$command" = detect ]; then '
                + event(event="error", kind="BandMismatchError", message="no such bands") + "; exit 2; fi",
                f'cp "$labels" {seen}; mkdir -p "$out"; echo {shlex.quote(config)} > "$out/config.json"',
                event(event="metric", step=20, values={"loss": 0.3, "val_f1": 0.61, "threshold": 0.4}),
                f"echo {shlex.quote(result)} | sed \"s|OUT|$out|\"")
    t1, t2 = add_pair(tmp_path)
    layer = new_layer(dock, "memory")
    draw(layer, square(0, 0, 200, 150))
    dock.adapt_page.draw_no_change.setChecked(True)
    draw(layer, square(300, 0, 250, 100))
    draw(layer, square(300, 200, 100, 100))
    page = dock.adapt_page
    page.steps_spin.setValue(40)
    page.vegetation_check.setChecked(True)
    page.water_check.setChecked(True)
    start = tmp_path / "start-model"
    start.mkdir()
    (start / "config.json").write_text(json.dumps({"kind": "swimdiff-change", "bands": ["B02", "B03"],
                                                   "threshold": 0.3}))
    page.start_combo.select("detect")
    dock.detect_page.model_widget.setFilePath(str(start))  # what the Detect page uses now
    assert page.model_widget.isHidden() and page.model_label.text() == "swimdiff-change: bands B02, B03; threshold 0.30"

    page.adapt_button.click()
    wait_for(lambda: calls.exists() and len(calls.read_text().splitlines()) == 2 and not dock.runner.busy(),
             state=lambda: (dock.status.text(), bar(qgis_iface, Qgis.Warning)))

    model = tmp_path / "adapted_2015-08-21_2017-10-14"  # beside t1 (a memory layer has no file)
    adapt_call, detect_call = calls.read_text().splitlines()
    assert adapt_call.split() == [
        "-m", "core.cli", "adapt", "--t1", t1.source(), "--t2", t2.source(), "--labels",
        str(model / "training-labels.gpkg"), "--label-field", "change", "--out", str(model), "--steps", "40",
        "--batch-size", "8", "--model", str(start), "--keep-vegetation", "--keep-water", "--events", "jsonl"]
    copied = ogr.Open(str(seen))
    features = [(f.GetField("change"), round(f.GetGeometryRef().GetArea())) for f in copied.GetLayer(0)]
    assert sorted(features) == [(0, 10000), (0, 25000), (1, 30000)]  # the three polygons, never saved
    copied = None
    assert layer.isEditable() and layer.isModified() and layer.featureCount() == 3  # the edit session untouched
    assert (model / "training-labels.gpkg").is_file()  # the model folder keeps what it learnt from
    message = "Adapted change model: held-out F1 0.61 (starting model 0.45), threshold 0.40, in "
    assert f"SwiMDiff:{message}{model}" in bar(qgis_iface, Qgis.Success)
    assert page.result_label.text() == f"{message}{model.name}" and page.result_label.toolTip() == str(model)
    detect = dock.detect_page
    assert dock.tabs.currentWidget() is detect and detect.model_widget.filePath() == str(model)
    assert detect.method() == "model" and detect.threshold_spin.specialValueText() == "auto (0.40)"
    assert detect_call.split()[2:8] == ["detect", "--t1", t1.source(), "--t2", t2.source(), "--out"]
    assert detect_call.split()[9:13] == ["--method", "model", "--model", str(model)]
    assert dock.status.text() == "failed: no such bands"  # the fake worker's detection


# --- the Detect page's cloud mask -------------------------------------------------------------------------


def test_mask_clouds_reaches_the_worker_and_the_message_says_how_cloudy(dock, qgis_iface, fake_worker,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    mask = write_geotiff(tmp_path / "mask.tif", np.ones((1, 8, 8), np.uint8), nodata=255)
    outputs = {"change": str(mask), "method": "cva", "threshold": 0.25, "changed_fraction": 0.02,
               "cloudy_fraction_t1": 0.1, "cloudy_fraction_t2": 0.031, "cloudy_fraction": 0.124}
    args = fake_worker(event(event="result", outputs=outputs))
    t1, t2 = add_pair(tmp_path)
    page = dock.detect_page
    page.method_combo.select("cva")
    page.probability_check.setChecked(False)
    for checked in (False, True):
        page.clouds_check.setChecked(checked)
        page.detect_button.click()
        wait_until_idle(dock)
        assert ("--mask-clouds" in args.read_text().split()) == checked
    assert page.clouds_check.text() == "Mask clouds (Sentinel-2 L1C)"
    assert bar(qgis_iface, Qgis.Success)[-1] == (
        "SwiMDiff:Changes detected: 2.00 % of the pixels changed (threshold 0.25); clouds masked: 12.4 % of the "
        "pixels (t1 10.0 %, t2 3.1 %)")
    assert "mask_clouds: True" in dock.runner.last_layers.mask.metadata().abstract()


KEEP_RULES = {"vegetation_check": "--keep-vegetation", "water_check": "--keep-water"}  # the model's stable-cover rules


@pytest.mark.parametrize("check", list(KEEP_RULES))
def test_keeping_a_stable_cover_is_offered_for_a_model_and_reaches_the_worker(dock, fake_worker,  # noqa: F811
                                                                             tmp_path: Path, check: str) -> None:
    mask = write_geotiff(tmp_path / "mask.tif", np.ones((1, 8, 8), np.uint8), nodata=255)
    outputs = {"change": str(mask), "method": "model", "threshold": 0.2, "changed_fraction": 0.02}
    args = fake_worker(event(event="result", outputs=outputs))
    add_pair(tmp_path)
    page = dock.detect_page
    box, flag = getattr(page, check), KEEP_RULES[check]
    page.probability_check.setChecked(False)
    for method in ("cva", "features"):
        page.method_combo.select(method)
        assert box.isHidden(), method  # a rule of models: CVA and the feature distance have none
    page.method_combo.select("model")
    assert not box.isHidden() and not box.isChecked()
    assert box.text() == {"vegetation_check": "Green areas can change", "water_check": "Water can change"}[check]
    for checked in (False, True):
        box.setChecked(checked)
        page.detect_button.click()
        wait_until_idle(dock)
        passed = [word for word in args.read_text().split() if word.startswith("--keep-")]
        assert passed == ([flag] if checked else [])  # the other rule is kept
    recorded = flag.removeprefix("--").replace("-", "_")
    assert f"{recorded}: True" in dock.runner.last_layers.mask.metadata().abstract()


@pytest.mark.parametrize("command", ["detect", "adapt"])
def test_the_worker_accepts_the_rule_flags_the_plugin_passes(command: str) -> None:
    """The panel and Processing pass these flags to ``swimdiff detect`` and ``swimdiff adapt``."""
    help_text = subprocess.run([sys.executable, "-m", "core.cli", command, "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120).stdout
    assert "--keep-vegetation" in help_text and "--keep-water" in help_text


# --- real runs on a crop of the OSCD Nantes pair ---------------------------------------------------------


@pytest.fixture(scope="module")
def nantes_crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13-band GeoTIFFs of a 128 x 128 crop of both Nantes dates (``swimdiff stack`` + GDAL) and its label."""
    if not (NANTES.is_dir() and NANTES_LABEL.is_file()):
        pytest.skip("../shared/data/oscd (Nantes) is not here")
    folder = tmp_path_factory.mktemp("nantes")
    row, col, size = CROP
    for date in ("imgs_1", "imgs_2"):
        subprocess.run([sys.executable, "-m", "core.cli", "stack", "--source", str(NANTES / date), "--out",
                        str(folder / f"{date}.vrt")], cwd=REPO, check=True, capture_output=True, timeout=300)
        gdal.Translate(str(folder / f"nantes_{date}.tif"), str(folder / f"{date}.vrt"),
                       srcWin=[col, row, size, size])
    gdal.Translate(str(folder / "label.tif"), str(NANTES_LABEL), srcWin=[col, row, size, size])
    return folder


def label_polygons(folder: Path) -> list[tuple[int, QgsGeometry]]:
    """The crop's change label as (class, polygon) pairs on t1's grid: what an analyst would draw."""
    label = gdal.Open(str(folder / "label.tif")).ReadAsArray()
    grid = gdal.Open(str(folder / "nantes_imgs_1.tif"))
    classes = gdal.GetDriverByName("MEM").Create("", label.shape[1], label.shape[0], 1, gdal.GDT_Byte)
    classes.SetGeoTransform(grid.GetGeoTransform())
    classes.SetProjection(grid.GetProjection())
    classes.GetRasterBand(1).WriteArray((label == 2).astype(np.uint8))  # OSCD: 1 no change, 2 change
    source = ogr.GetDriverByName("Memory").CreateDataSource("")  # referenced while its layer is used
    layer = source.CreateLayer("l", osr.SpatialReference(grid.GetProjection()), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("change", ogr.OFTInteger))
    gdal.Polygonize(classes.GetRasterBand(1), None, layer, 0)
    polygons = [(f.GetField("change"), QgsGeometry.fromWkt(f.GetGeometryRef().ExportToWkt())) for f in layer]
    del layer, source
    return polygons


@pytest.fixture
def nantes_page(dock, nantes_crop: Path, tmp_path: Path) -> Iterator[tuple]:
    """The Adapt page on the Nantes crop with a GeoPackage labelling layer holding the label's polygons, unsaved."""
    t1, t2 = (QgsRasterLayer(str(nantes_crop / f"nantes_{d}.tif"), f"Nantes {d}") for d in ("imgs_1", "imgs_2"))
    QgsProject.instance().addMapLayers([t1, t2])
    page = dock.adapt_page
    dock.tabs.setCurrentWidget(page)
    page.t1_combo.setLayer(t1)
    page.t2_combo.setLayer(t2)
    layer = new_layer(dock, "gpkg", tmp_path / "nantes-labels.gpkg")
    index = layer.fields().indexOf("change")
    for value, geometry in label_polygons(nantes_crop):
        geometry.convertToMultiType()
        assert layer.addFeature(QgsVectorLayerUtils.createFeature(layer, geometry, {index: value}))
    page.steps_spin.setValue(3)
    page.batch_spin.setValue(2)
    page.output_widget.setFilePath(str(tmp_path / "nantes-model"))
    yield page, layer, t1, t2


@pytest.mark.realdata
def test_a_real_adapt_run_hands_its_model_to_detect_which_runs_on_the_same_pair(
    dock, qgis_iface, nantes_page, tmp_path: Path
) -> None:
    page, layer, t1, t2 = nantes_page
    assert "Enough to adapt" in page.counts_label.text(), page.counts_label.text()
    polygons = layer.featureCount()

    page.adapt_button.click()
    wait_for(lambda: dock.runner.last_layers is not None and not dock.runner.busy(), timeout=600,
             state=lambda: (dock.status.text(), bar(qgis_iface, Qgis.Warning), bar(qgis_iface, Qgis.Critical)))

    model = tmp_path / "nantes-model"
    assert {p.name for p in model.iterdir()} >= {"config.json", "model.safetensors", "training-labels.gpkg"}
    config = json.loads((model / "config.json").read_text())
    assert config["kind"] == "swimdiff-change" and config["provenance"]["pairs"][0]["polygons"] == polygons
    adapted = [m for m in bar(qgis_iface, Qgis.Success) if "Adapted change model" in m]
    assert len(adapted) == 1 and re.fullmatch(
        r"SwiMDiff:Adapted change model: held-out F1 \d\.\d\d \(starting model \d\.\d\d\), threshold \d\.\d\d.*, "
        rf"in {re.escape(str(model))}", adapted[0]), adapted
    detect = dock.detect_page
    assert dock.tabs.currentWidget() is detect and detect.model_widget.filePath() == str(model)
    assert (detect.t1_combo.currentLayer(), detect.t2_combo.currentLayer()) == (t1, t2)
    layers = dock.runner.last_layers
    assert dock.status.text() == "done" and layers.mask.isValid()
    assert (layers.mask.width(), layers.mask.height()) == (128, 128) and layers.mask.crs() == t1.crs()
    assert f"model: {model}" in layers.mask.metadata().abstract()
    assert layers.group.name().startswith("SwiMDiff change Nantes imgs_1 → Nantes imgs_2, model nantes-model")
    assert layer.isEditable() and layer.featureCount() == polygons  # still drawing, nothing lost


@pytest.mark.realdata
def test_cancelling_an_adapt_run_leaves_no_model_folder_and_the_drawings_intact(
    dock, qgis_iface, nantes_page, tmp_path: Path
) -> None:
    page, layer, _, _ = nantes_page
    polygons = layer.featureCount()
    page.steps_spin.setValue(5000)
    page.adapt_button.click()
    wait_for(lambda: dock.status.text().startswith("step "), timeout=300,
             state=lambda: (dock.status.text(), bar(qgis_iface, Qgis.Warning)))

    dock.cancel_button.click()
    wait_until_idle(dock)

    assert dock.status.text() == "cancelled: nothing was written"
    assert not (tmp_path / "nantes-model").exists()
    assert dock.runner.last_layers is None and dock.tabs.currentWidget() is page  # no detection follows
    assert layer.isEditable() and layer.isModified() and layer.featureCount() == polygons
    assert (tmp_path / "nantes-labels.gpkg").is_file()


@pytest.mark.realdata
def test_a_real_detection_masks_clouds_when_the_worker_can(dock, qgis_iface, nantes_crop: Path) -> None:
    help_text = subprocess.run([sys.executable, "-m", "core.cli", "detect", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120).stdout
    if "--mask-clouds" not in help_text:
        pytest.skip("swimdiff detect has no --mask-clouds yet")
    t1, t2 = (QgsRasterLayer(str(nantes_crop / f"nantes_{d}.tif"), d) for d in ("imgs_1", "imgs_2"))
    QgsProject.instance().addMapLayers([t1, t2])
    page = dock.detect_page
    page.t1_combo.setLayer(t1)
    page.t2_combo.setLayer(t2)
    page.clouds_check.setChecked(True)
    page.detect_button.click()
    wait_until_idle(dock, timeout=600)
    assert dock.status.text() == "done", bar(qgis_iface, Qgis.Warning) + bar(qgis_iface, Qgis.Critical)
    assert "; clouds masked: " in bar(qgis_iface, Qgis.Success)[-1]


def test_the_done_message_says_when_only_the_threshold_changed() -> None:
    from swimdiff_qgis.outcomes import adapt_sentence

    kept = adapt_sentence({"val_f1": 0.98, "zero_shot_val_f1": 0.84, "threshold": 0.05, "best_step": 0}, "/m")
    assert kept.startswith("Adapted change model: held-out F1 0.98 (starting model 0.84), threshold 0.05")
    assert "starting weights" in kept and "threshold re-chosen" in kept and kept.endswith("in /m")
    trained = adapt_sentence({"val_f1": 0.7, "zero_shot_val_f1": 0.5, "threshold": 0.4, "best_step": 40}, "/m")
    assert "starting weights" not in trained and "starting model's threshold" not in trained
    same = adapt_sentence({"val_f1": 0.86, "zero_shot_val_f1": 0.84, "threshold": 0.2, "best_step": 0,
                           "threshold_kept": True}, "/m")
    assert "the starting model is kept as it is" in same and "re-chosen" not in same
    guarded = adapt_sentence({"val_f1": 0.7, "zero_shot_val_f1": 0.5, "threshold": 0.2, "best_step": 40,
                              "threshold_kept": True}, "/m")
    assert "(the starting model's threshold: a new one gained too little on the held-out polygons)" in guarded
