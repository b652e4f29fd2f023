"""Land-cover classification inside QGIS (pytest-qgis, offscreen): the panel's Classify land cover and Train
classifier tabs, the ``swimdiff:classify`` and ``swimdiff:finetuneclassify`` algorithms and the styled layers
they add, driving the real worker on generated patches and rasters.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterRasterLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from conftest import forest_sea_raster, make_rgb_classes, write_geotiff
from swimdiff_qgis.model_info import ClassifierInfo, read_classifier_info
from swimdiff_qgis.settings import resolve_worker_python

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("Forest", "Sea")
NODATA_BLOCK = 16  # the generated scene's top-left nodata square, in pixels
CLASS_NODATA = 255


def train_classifier(root: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    """A linear probe (1 epoch) trained by the worker on generated 32 px RGB patches: dark "Forest", bright "Sea"."""
    data = make_rgb_classes(root / "data", per_class=4, classes=classes)
    command = [str(resolve_worker_python()), "-m", "core.cli", "finetune-classify", "--data", str(data), "--out",
               str(root / "model"), "--epochs", "1", "--linear-probe", "--batch-size", "8", "--device", "cpu"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "model"


def make_scene(path: Path) -> Path:
    """A small "Forest" | "Sea" scene with a NODATA_BLOCK nodata square (see conftest)."""
    return forest_sea_raster(path, height=48, width=64, nodata_block=NODATA_BLOCK)


def file_palette(path: str | Path) -> dict[int, QColor]:
    """The GDAL colour table of band 1, read with QGIS's GDAL (never rasterio inside QGIS)."""
    dataset = gdal.Open(str(path))  # kept referenced: a band outliving its dataset crashes GDAL
    table = dataset.GetRasterBand(1).GetColorTable()
    return {i: QColor(*table.GetColorEntry(i)[:3]) for i in range(table.GetCount())}


def read_ids(path: str | Path) -> np.ndarray:
    """Band 1 (class ids) of a land-cover map."""
    dataset = gdal.Open(str(path))
    assert dataset is not None, path
    return dataset.GetRasterBand(1).ReadAsArray()


def rendered(layer: QgsRasterLayer, row: int, column: int) -> tuple[int, int, int, int]:
    """(r, g, b, alpha) of one pixel as the layer's renderer draws it at full resolution."""
    argb = layer.renderer().block(1, layer.extent(), layer.width(), layer.height()).color(row, column)
    return argb >> 16 & 0xFF, argb >> 8 & 0xFF, argb & 0xFF, argb >> 24 & 0xFF


def assert_landcover_style(layer: QgsRasterLayer, path: str | Path) -> None:
    """Paletted: one class per id with its name as legend, the file's colours, nodata transparent."""
    palette, ids = file_palette(path), read_ids(path)
    renderer = layer.renderer()
    assert renderer.type() == "paletted" and renderer.band() == 1
    assert [(c.value, c.label, c.color.name()) for c in renderer.classes()] == [
        (i, name, palette[i].name()) for i, name in enumerate(CLASSES)]
    assert [(label, color.name()) for label, color in renderer.legendSymbologyItems()] == [
        (name, palette[i].name()) for i, name in enumerate(CLASSES)]
    assert ids[0, 0] == CLASS_NODATA and rendered(layer, 0, 0)[3] == 0
    row, column = NODATA_BLOCK + 5, layer.width() - 3
    color = palette[int(ids[row, column])]
    assert rendered(layer, row, column) == (color.red(), color.green(), color.blue(), 255)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_classifier(tmp_path_factory.mktemp("classifier"))


# --- what the panel reads from a classifier folder ---------------------------------------------------------


def write_classifier_config(folder: Path, weights: bool = True, **config) -> Path:
    """A folder shaped like the output of ``swimdiff finetune-classify`` (placeholder weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {"format_version": 1, "kind": "swimdiff-classify", "classes": list(CLASSES), "bands": ["B02", "B03", "B04"],
            "patch_size": 64, "multi_label": False, **config}
    (folder / "config.json").write_text(json.dumps(body))
    if weights:
        (folder / "model.safetensors").write_bytes(b"placeholder")
    return folder


def test_a_classifier_folder_gives_a_one_line_summary_of_its_classes(tmp_path: Path) -> None:
    folder = write_classifier_config(tmp_path / "clf")
    info = read_classifier_info(folder)
    assert info == ClassifierInfo(folder=folder, classes=CLASSES, bands=("B02", "B03", "B04"), patch_size=64,
                                  multi_label=False)
    assert info.describe() == "2 classes: Forest, Sea; bands B02, B03, B04; 64 px patches"

    many = [f"class {i}" for i in range(11)]
    folder = write_classifier_config(tmp_path / "big", classes=many, multi_label=True, patch_size=None)
    assert read_classifier_info(folder).describe() == (
        "11 multi-label classes: class 0, class 1, class 2, class 3, class 4, class 5, class 6, class 7, … (+3 more); "
        "bands B02, B03, B04")


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "swimdiff-change"}, "'{folder}' holds a swimdiff-change model, not a land-cover classifier "
                                  "(swimdiff-classify); choose a folder written by 'swimdiff finetune-classify'"),
    ({"classes": []}, "'{folder}/config.json' lists no class names under 'classes'; choose a folder"),
    ({"weights": False}, "'{folder}' has no model.safetensors beside its config.json; choose a folder"),
])
def test_an_unusable_classifier_folder_says_what_is_wrong(tmp_path: Path, change: dict, message: str) -> None:
    weights = change.pop("weights", True)
    folder = write_classifier_config(tmp_path / "clf", weights=weights, **change)
    with pytest.raises(ValueError, match=re.escape(message.format(folder=folder))):
        read_classifier_info(folder)


# --- the panel's land-cover tabs --------------------------------------------------------------------------


def wait_until_idle(dock, timeout: float = 240) -> None:
    """Process events until the panel's run has finished and reported."""
    deadline = time.monotonic() + timeout
    while dock.runner.busy() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert not dock.runner.busy(), "the run did not finish in time"
    QgsApplication.processEvents()


def test_the_classify_tab_shows_the_classifiers_classes_or_why_it_is_unusable(dock, qgis_iface, tmp_path) -> None:
    tab = dock.classify_tab
    assert dock.tabs.tabText(dock.tabs.indexOf(tab)) == "Classify land cover"
    assert tab.model_label.text() == ("No classifier chosen: choose a folder written by 'swimdiff "
                                      "finetune-classify' (the panel's 'Train a land-cover classifier' page).")
    tab.set_model(str(write_classifier_config(tmp_path / "clf")))
    assert tab.model_label.text() == "2 classes: Forest, Sea; bands B02, B03, B04; 64 px patches"
    assert "b00020" not in tab.model_label.styleSheet()

    tab.set_model(str(tmp_path))  # no config.json: red, and the run is refused before any worker starts
    assert tab.model_label.text().startswith(f"'{tmp_path}' holds no config.json; choose a folder written by")
    assert "b00020" in tab.model_label.styleSheet()
    tab.classify_button.click()
    assert not dock.runner.busy() and dock.status.text() == tab.model_label.text()
    assert qgis_iface.messageBar().get_messages(Qgis.Warning) == [f"SwiMDiff:{tab.model_label.text()}"]


def test_a_classify_run_from_the_dock_adds_a_paletted_layer_with_the_class_names(
    dock, qgis_iface, classifier: Path, tmp_path: Path
) -> None:
    scene_path = make_scene(tmp_path / "scene.tif")
    scene = QgsRasterLayer(str(scene_path), "scene")
    QgsProject.instance().addMapLayer(scene)
    tab = dock.classify_tab
    tab.raster_combo.setLayer(scene)
    tab.set_model(str(classifier))
    tab.output_widget.setFilePath(str(tmp_path / "landcover.tif"))
    tab.probabilities_check.setChecked(True)

    tab.classify_button.click()
    assert dock.runner.busy() and not tab.classify_button.isEnabled() and not dock.detect_button.isEnabled()
    wait_until_idle(dock)
    assert tab.classify_button.isEnabled() and dock.progress.value() == 100 and dock.status.text() == "done"

    warnings = qgis_iface.messageBar().get_messages(Qgis.Warning)  # the scene's 3 bands are unnamed: said where seen
    assert len(warnings) == 1 and "does not name its bands: taking them in order as B04, B03, B02" in warnings[0]
    assert "--assume-band-names" in warnings[0]
    ids = read_ids(tmp_path / "landcover.tif")
    valid = ids[ids != CLASS_NODATA]
    shares = sorted(((name, float((valid == i).mean())) for i, name in enumerate(CLASSES)), key=lambda s: -s[1])
    assert qgis_iface.messageBar().get_messages(Qgis.Success) == [
        "SwiMDiff:Land cover classified into 2 classes: " + ", ".join(f"{n} {100 * s:.1f} %" for n, s in shares)]
    layers = dock.runner.last_layers
    group = QgsProject.instance().layerTreeRoot().children()[0]
    assert group is layers.group and group.name().startswith("SwiMDiff land cover ")
    assert [node.layer() for node in group.findLayers()] == [layers.landcover, layers.probabilities]
    assert layers.landcover.source() == str(tmp_path / "landcover.tif")
    assert layers.probabilities.source() == str(tmp_path / "landcover_probabilities.tif")
    for layer in (layers.landcover, layers.probabilities):
        assert layer.crs() == scene.crs() and layer.extent() == scene.extent()
        abstract = layer.metadata().abstract()
        assert f"raster: {scene_path}" in abstract and f"model: {classifier}" in abstract
        assert "class_fractions: {'Forest': " in abstract
        assert "land cover" in layer.metadata().keywords("SwiMDiff")
    assert_landcover_style(layers.landcover, tmp_path / "landcover.tif")
    # the class probabilities: one band per class, the most frequent class's band shown from 0 to 1
    renderer = layers.probabilities.renderer()
    assert layers.probabilities.bandCount() == 2 and renderer.type() == "singlebandpseudocolor"
    assert renderer.band() == CLASSES.index(shares[0][0]) + 1
    assert (renderer.classificationMin(), renderer.classificationMax()) == (0.0, 1.0)


def test_the_train_classifier_tab_trains_and_hands_the_model_to_the_classify_tab(
    dock, qgis_iface, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake worker records its command line and answers as ``finetune-classify`` does (real training:
    ``test_finetuneclassify_trains_a_classifier_on_generated_patches``)."""
    import shlex

    model = write_classifier_config(tmp_path / "model")
    result = {"model_dir": str(model), "accuracy": 0.875, "evaluated_on": "validation"}
    args_file, python = tmp_path / "args.txt", tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$*" > {args_file}\n'
                      f"echo {shlex.quote(json.dumps({'event': 'result', 'outputs': result}))}\n")
    python.chmod(0o755)
    monkeypatch.setenv("SWIMDIFF_PYTHON", str(python))
    tab = dock.train_classifier_tab
    assert dock.tabs.tabText(dock.tabs.indexOf(tab)) == "Train a land-cover classifier"
    tab.data_widget.setFilePath(str(tmp_path / "data"))
    tab.output_widget.setFilePath(str(model))
    tab.epochs_spin.setValue(3)
    tab.linear_probe_check.setChecked(True)

    tab.run_buttons[0].click()
    wait_until_idle(dock)

    assert args_file.read_text().split() == ["-m", "core.cli", "finetune-classify", "--data", str(tmp_path / "data"),
                                             "--out", str(model), "--epochs", "3", "--linear-probe", "--events",
                                             "jsonl"]
    assert qgis_iface.messageBar().get_messages(Qgis.Success) == [
        f"SwiMDiff:Land-cover classifier in {model} (accuracy 0.875 on validation patches)"]
    assert dock.classify_tab.model_widget.filePath() == str(model)
    assert dock.classify_tab.model_label.text() == "2 classes: Forest, Sea; bands B02, B03, B04; 64 px patches"


# --- the Processing algorithms -----------------------------------------------------------------------------


def flagged(parameters: dict, flag: int) -> set[str]:
    return {name for name, p in parameters.items() if p.flags() & flag}


def test_the_classification_algorithms_have_typed_parameters(provider) -> None:
    registry = QgsApplication.processingRegistry()
    classify = registry.algorithmById("swimdiff:classify")
    parameters = {p.name(): p for p in classify.parameterDefinitions()}
    assert list(parameters) == ["INPUT", "MODEL", "TILE", "OVERLAP", "BATCH_SIZE", "DEVICE", "OUTPUT",
                                "PROBABILITIES"]
    assert parameters["INPUT"].type() == "raster" and parameters["MODEL"].type() == "file"
    assert parameters["OUTPUT"].type() == parameters["PROBABILITIES"].type() == "rasterDestination"
    assert not parameters["PROBABILITIES"].createByDefault()
    assert flagged(parameters, QgsProcessingParameterDefinition.FlagOptional) == {"TILE", "OVERLAP", "PROBABILITIES"}
    assert flagged(parameters, QgsProcessingParameterDefinition.FlagAdvanced) == {"TILE", "OVERLAP", "BATCH_SIZE",
                                                                                  "DEVICE"}
    assert (parameters["TILE"].minimum(), parameters["TILE"].maximum(), parameters["TILE"].defaultValue()) == (
        16, 8192, None)
    assert {o.name() for o in classify.outputDefinitions()} == {"OUTPUT", "PROBABILITIES", "CLASSES",
                                                                "CLASS_FRACTIONS"}

    train = registry.algorithmById("swimdiff:finetuneclassify")
    parameters = {p.name(): p for p in train.parameterDefinitions()}
    assert list(parameters) == ["DATA", "ENCODER", "EPOCHS", "LINEAR_PROBE", "BATCH_SIZE", "LR", "VAL_FRACTION",
                                "AUGMENT", "SEED", "ARCH", "DEVICE", "OUTPUT"]
    assert flagged(parameters, QgsProcessingParameterDefinition.FlagOptional) == {"ENCODER", "LR"}
    assert flagged(parameters, QgsProcessingParameterDefinition.FlagAdvanced) == {
        "BATCH_SIZE", "LR", "VAL_FRACTION", "AUGMENT", "SEED", "ARCH", "DEVICE"}
    assert (parameters["VAL_FRACTION"].minimum(), parameters["VAL_FRACTION"].maximum()) == (0.0, 0.5)
    assert parameters["OUTPUT"].type() == "folderDestination"
    assert {o.name() for o in train.outputDefinitions()} == {"OUTPUT", "METRIC", "SCORE", "CONFUSION_MATRIX"}


def test_classify_passes_its_parameters_to_the_cli(provider, tmp_path: Path, monkeypatch) -> None:
    """A fake worker records its command line and answers with a canned result."""
    import shlex

    import processing

    scene = make_scene(tmp_path / "scene.tif")
    args_file, python = tmp_path / "args.txt", tmp_path / "python"
    result = {"landcover": str(tmp_path / "lc.tif"), "classes": ["Forest", "Sea"],
              "class_fractions": {"Forest": 0.25, "Sea": 0.75}}
    python.write_text(f'#!/bin/sh\necho "$*" > {args_file}\n'
                      f"echo {shlex.quote(json.dumps({'event': 'result', 'outputs': result}))}\n")
    python.chmod(0o755)
    monkeypatch.setenv("SWIMDIFF_PYTHON", str(python))

    outputs = processing.run("swimdiff:classify", {"INPUT": str(scene), "MODEL": str(tmp_path), "TILE": 48,
                                                   "OVERLAP": 0, "DEVICE": "cpu", "OUTPUT": str(tmp_path / "lc.tif"),
                                                   "PROBABILITIES": str(tmp_path / "p.tif")})

    assert args_file.read_text().split() == [
        "-m", "core.cli", "classify", "--raster", str(scene), "--model", str(tmp_path), "--out",
        str(tmp_path / "lc.tif"), "--batch-size", "64", "--device", "cpu", "--tile", "48", "--overlap", "0",
        "--probabilities", str(tmp_path / "p.tif"), "--events", "jsonl"]
    assert outputs["OUTPUT"] == str(tmp_path / "lc.tif") and outputs["PROBABILITIES"] is None
    assert json.loads(outputs["CLASSES"]) == ["Forest", "Sea"]
    assert json.loads(outputs["CLASS_FRACTIONS"]) == {"Forest": 0.25, "Sea": 0.75}


def test_classify_output_loaded_by_processing_is_a_paletted_layer_with_the_class_names(
    provider, qgis_new_project, classifier: Path, tmp_path: Path
) -> None:
    import processing
    from test_qgis_processing import RecordingFeedback

    scene = make_scene(tmp_path / "scene.tif")
    feedback = RecordingFeedback()

    result = processing.runAndLoadResults("swimdiff:classify", {
        "INPUT": str(scene), "MODEL": str(classifier), "OUTPUT": str(tmp_path / "landcover.tif"),
        "PROBABILITIES": str(tmp_path / "probabilities.tif")}, feedback=feedback)

    assert result["OUTPUT"] == str(tmp_path / "landcover.tif")
    assert json.loads(result["CLASSES"]) == list(CLASSES)
    ids = read_ids(result["OUTPUT"])
    assert ids.shape == (48, 64) and set(np.unique(ids)) <= {0, 1, CLASS_NODATA}
    assert (ids[:NODATA_BLOCK, :NODATA_BLOCK] == CLASS_NODATA).all()
    valid = ids[ids != CLASS_NODATA]
    fractions = json.loads(result["CLASS_FRACTIONS"])
    assert fractions == pytest.approx({name: float((valid == i).mean()) for i, name in enumerate(CLASSES)})
    assert feedback.progress_values[-1] == 100 and "land cover" in feedback.texts

    layers = {Path(layer.source()).name: layer for layer in QgsProject.instance().mapLayers().values()}
    assert sorted(layers) == ["landcover.tif", "probabilities.tif"]
    assert_landcover_style(layers["landcover.tif"], result["OUTPUT"])
    probabilities = layers["probabilities.tif"]
    assert probabilities.renderer().type() == "singlebandpseudocolor"
    assert probabilities.renderer().band() == max(range(2), key=lambda i: fractions[CLASSES[i]]) + 1
    for layer in layers.values():
        assert f"raster: {scene}" in layer.metadata().abstract()


def test_a_classify_worker_error_becomes_a_processing_exception(provider, classifier: Path, tmp_path) -> None:
    import processing

    four = write_geotiff(tmp_path / "four.tif", np.ones((4, 40, 40), "uint8"), nodata=None)

    with pytest.raises(QgsProcessingException) as caught:
        processing.run("swimdiff:classify", {"INPUT": str(four), "MODEL": str(classifier),
                                             "OUTPUT": str(tmp_path / "landcover.tif")})

    assert str(caught.value) == (
        f"the model expects 3 bands (B04, B03, B02) but '{four}' has 4 (band1, band2, band3, band4); name its "
        "bands in file order with --assume-band-names (l2a, l1c or a list such as B04,B03,B02), or choose a raster "
        "with the model's bands")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.tif"]


def test_a_model_chains_classify_with_polygonize(provider, classifier: Path, tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "scene.tif")
    model = QgsProcessingModelAlgorithm("Land-cover polygons", "SwiMDiff tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "scene"), QgsProcessingModelParameter("scene"))
    classify = QgsProcessingModelChildAlgorithm("swimdiff:classify")
    classify.setChildId("classify")
    classify.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    classify.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue(str(classifier))])
    model.addChildAlgorithm(classify)
    polygonize = QgsProcessingModelChildAlgorithm("gdal:polygonize")
    polygonize.setChildId("polygonize")
    polygonize.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("classify",
                                                                                                    "OUTPUT")])
    polygonize.addParameterSources("FIELD", [QgsProcessingModelChildParameterSource.fromStaticValue("class")])
    polygons = QgsProcessingModelOutput("polygons")
    polygons.setChildOutputName("OUTPUT")
    polygonize.setModelOutputs({"polygons": polygons})
    model.addChildAlgorithm(polygonize)
    model.updateDestinationParameters()

    parameters = {"scene": str(scene), "polygonize:polygons": str(tmp_path / "landcover.gpkg")}
    results, ok = model.run(parameters, QgsProcessingContext(), QgsProcessingFeedback())

    assert ok
    layer = QgsVectorLayer(results["polygonize:polygons"], "polygons")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32631"
    assert {feature["class"] for feature in layer.getFeatures()} <= {0, 1}  # nodata is no polygon
    area = sum(feature.geometry().area() for feature in layer.getFeatures())
    assert area == pytest.approx((48 * 64 - NODATA_BLOCK ** 2) * 100)  # every valid 10 m pixel, once
    del layer


def test_finetuneclassify_trains_a_classifier_on_generated_patches(provider, tmp_path: Path) -> None:
    import processing
    from test_qgis_processing import RecordingFeedback

    data = make_rgb_classes(tmp_path / "data", per_class=4, classes=CLASSES)
    feedback = RecordingFeedback()

    result = processing.run("swimdiff:finetuneclassify", {
        "DATA": str(data), "EPOCHS": 1, "LINEAR_PROBE": True, "BATCH_SIZE": 8, "VAL_FRACTION": 0.25,
        "DEVICE": "cpu", "OUTPUT": str(tmp_path / "model")}, feedback=feedback)

    assert result["OUTPUT"] == str(tmp_path / "model") and result["METRIC"] == "accuracy"
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["kind"] == "swimdiff-classify" and config["classes"] == list(CLASSES)
    assert config["train"]["epochs"] == 1 and config["train"]["linear_probe"] is True
    assert result["SCORE"] == pytest.approx(config["metrics"]["accuracy"]) and 0.0 <= result["SCORE"] <= 1.0
    assert Path(result["CONFUSION_MATRIX"]).is_file()
    assert read_classifier_info(result["OUTPUT"]).classes == CLASSES
    assert feedback.progress_values[-1] == 100
