"""The "SwiMDiff" Processing provider inside QGIS (pytest-qgis, offscreen), driving the real worker.

Every run uses the CVA method on small generated rasters, so it is fast and needs no model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
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
    QgsRasterLayer,
    QgsVectorLayer,
)

from conftest import smooth_field, write_geotiff

pytestmark = pytest.mark.qgis

BANDS = ("B02", "B03", "B04", "B08")
CHANGED = (slice(10, 30), slice(20, 44))  # rows, columns of the generated new building block
ALGORITHMS = ["swimdiff:adapt", "swimdiff:buildstack", "swimdiff:classify", "swimdiff:detectchange",
              "swimdiff:evaluatechange", "swimdiff:finetunechange", "swimdiff:finetuneclassify", "swimdiff:pretrain",
              "swimdiff:thresholdchange"]
CVA = 2  # index of "cva" in swimdiff:detectchange's METHOD options


def make_pair(folder: Path, size: int = 64, t2_bands: tuple[str, ...] = BANDS) -> tuple[Path, Path]:
    """A t1/t2 pair of 4-band uint16 GeoTIFFs (EPSG:32631, 10 m) where a block of t2 got brighter."""
    t1 = smooth_field(np.random.default_rng(0), len(BANDS), size)
    t2 = t1.copy()
    t2[(slice(None), *CHANGED)] += 900
    return (write_geotiff(folder / "t1.tif", t1, descriptions=BANDS),
            write_geotiff(folder / "t2.tif", t2, descriptions=t2_bands))


def read(path: str | Path) -> np.ndarray:
    """Band 1 of a raster, read with QGIS's GDAL (never rasterio inside QGIS)."""
    dataset = gdal.Open(str(path))
    assert dataset is not None, path
    return dataset.GetRasterBand(1).ReadAsArray()


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what an algorithm reports; cancels when a progress text starts with ``cancel_at``."""

    def __init__(self, cancel_at: str | None = None) -> None:
        super().__init__()
        self.cancel_at = cancel_at
        self.texts: list[str] = []
        self.infos: list[str] = []
        self.progress_values: list[float] = []
        self.progressChanged.connect(self.progress_values.append)

    def setProgressText(self, text: str) -> None:  # noqa: N802 (QGIS name)
        self.texts.append(text)
        if self.cancel_at and text.startswith(self.cancel_at):
            self.cancel()
        super().setProgressText(text)

    def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS name)
        self.infos.append(info)
        super().pushInfo(info)


def worker_children() -> list[str]:
    """Command lines of this process's children that run the worker (Linux /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()) and "core.cli" in cmdline:
            found.append(cmdline)
    return found


def test_the_provider_lists_its_algorithms_with_typed_parameters(provider) -> None:
    registry = QgsApplication.processingRegistry()
    assert sorted(a.id() for a in registry.providerById("swimdiff").algorithms()) == ALGORITHMS
    detect = registry.algorithmById("swimdiff:detectchange")
    parameters = {p.name(): p for p in detect.parameterDefinitions()}
    assert list(parameters) == ["T1", "T2", "MODEL", "METHOD", "THRESHOLD", "MASK_CLOUDS", "KEEP_VEGETATION",
                                "KEEP_WATER", "TILE", "OVERLAP", "BATCH_SIZE", "DEVICE", "OUTPUT", "PROBABILITY"]
    for name in ("KEEP_VEGETATION", "KEEP_WATER"):
        assert parameters[name].type() == "boolean" and parameters[name].defaultValue() is False, name
    assert parameters["KEEP_WATER"].description() == (
        "Score pixels that are open water at both dates too (model: drop its stable-water rule)")
    assert parameters["T1"].type() == parameters["T2"].type() == "raster"
    optional = {n for n, p in parameters.items() if p.flags() & QgsProcessingParameterDefinition.FlagOptional}
    assert optional == {"MODEL", "THRESHOLD", "PROBABILITY"}
    assert parameters["OUTPUT"].type() == parameters["PROBABILITY"].type() == "rasterDestination"
    assert not parameters["PROBABILITY"].createByDefault()
    assert parameters["METHOD"].options()[CVA] == "Change vector analysis"
    advanced = {n for n, p in parameters.items() if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert advanced == {"TILE", "OVERLAP", "BATCH_SIZE", "DEVICE"}
    assert (parameters["TILE"].minimum(), parameters["TILE"].maximum(), parameters["TILE"].defaultValue()) == (
        64, 8192, 256)
    assert {o.name() for o in detect.outputDefinitions()} == {"OUTPUT", "PROBABILITY", "USED_THRESHOLD",
                                                              "CHANGED_FRACTION", "CLOUDY_FRACTION"}
    assert provider.supportedOutputRasterLayerExtensions() == ["tif"]


def test_detectchange_writes_a_mask_and_a_magnitude_on_the_inputs_grid(provider, tmp_path: Path) -> None:
    import processing

    t1, t2 = make_pair(tmp_path)
    feedback = RecordingFeedback()

    result = processing.run("swimdiff:detectchange", {
        "T1": str(t1), "T2": str(t2), "METHOD": CVA, "OUTPUT": str(tmp_path / "change.tif"),
        "PROBABILITY": str(tmp_path / "magnitude.tif"),
    }, feedback=feedback)

    assert result["OUTPUT"] == str(tmp_path / "change.tif")
    assert result["PROBABILITY"] == str(tmp_path / "magnitude.tif")
    mask_layer, t1_layer = QgsRasterLayer(result["OUTPUT"], "mask"), QgsRasterLayer(str(t1), "t1")
    assert mask_layer.isValid()
    assert mask_layer.crs() == t1_layer.crs() == QgsCoordinateReferenceSystem("EPSG:32631")
    assert mask_layer.extent() == t1_layer.extent()
    assert (mask_layer.width(), mask_layer.height()) == (64, 64)
    mask, magnitude = read(result["OUTPUT"]), read(result["PROBABILITY"])
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask, (magnitude > result["USED_THRESHOLD"]).astype(np.uint8))
    changed = np.zeros(mask.shape, bool)
    changed[CHANGED] = True
    assert mask[changed].mean() > 0.95 and mask[~changed].mean() < 0.05
    assert result["CHANGED_FRACTION"] == pytest.approx(mask.mean())
    assert feedback.progress_values[-1] == 100
    assert {"band statistics", "change magnitude", "change mask"} <= set(feedback.texts)
    assert "comparing 4 bands: B02, B03, B04, B08" in feedback.infos
    del mask_layer, t1_layer


def rendered_alpha(layer: QgsRasterLayer, row: int, column: int) -> int:
    """The alpha of one pixel as the layer's renderer draws it at full resolution."""
    block = layer.renderer().block(1, layer.extent(), layer.width(), layer.height())
    return block.color(row, column) >> 24 & 0xFF


def test_outputs_loaded_into_the_project_are_styled_like_the_panels_layers(
    provider, qgis_new_project, tmp_path: Path
) -> None:
    import processing
    from qgis.core import QgsProject

    t1, t2 = make_pair(tmp_path)

    result = processing.runAndLoadResults("swimdiff:detectchange", {
        "T1": str(t1), "T2": str(t2), "METHOD": CVA, "OUTPUT": str(tmp_path / "change.tif"),
        "PROBABILITY": str(tmp_path / "magnitude.tif")})

    layers = {Path(layer.source()).name: layer for layer in QgsProject.instance().mapLayers().values()}
    assert sorted(layers) == ["change.tif", "magnitude.tif"]
    mask, magnitude = layers["change.tif"], layers["magnitude.tif"]
    # the mask: paletted, only "change" coloured, no change transparent
    assert mask.renderer().type() == "paletted"
    assert [(c.value, c.label) for c in mask.renderer().classes()] == [(1, "change")]
    assert rendered_alpha(mask, 20, 30) == 255 and rendered_alpha(mask, 50, 5) == 0
    # the CVA magnitude: pseudo-colour from the run's threshold to the band maximum, transparent below
    renderer = magnitude.renderer()
    assert renderer.type() == "singlebandpseudocolor"
    assert renderer.classificationMin() == pytest.approx(result["USED_THRESHOLD"])
    assert renderer.classificationMax() == pytest.approx(float(read(result["PROBABILITY"]).max()))
    assert rendered_alpha(magnitude, 20, 30) == 255 and rendered_alpha(magnitude, 50, 5) == 0
    for layer in (mask, magnitude):
        assert "method: cva" in layer.metadata().abstract() and f"t1: {t1}" in layer.metadata().abstract()
    assert "changed_fraction: " in mask.metadata().abstract()


def test_a_given_threshold_reaches_the_worker(provider, tmp_path: Path) -> None:
    import processing

    t1, t2 = make_pair(tmp_path)
    result = processing.run("swimdiff:detectchange", {
        "T1": str(t1), "T2": str(t2), "METHOD": CVA, "THRESHOLD": 1e9, "OUTPUT": "TEMPORARY_OUTPUT"})

    assert result["USED_THRESHOLD"] == 1e9 and result["CHANGED_FRACTION"] == 0
    assert result["OUTPUT"].endswith(".tif") and not read(result["OUTPUT"]).any()
    assert result["PROBABILITY"] is None


@pytest.mark.parametrize(("method", "keep", "expected"), [
    (0, {"KEEP_WATER": True}, ["--keep-water"]),
    (0, {"KEEP_VEGETATION": True}, ["--keep-vegetation"]),
    (0, {"KEEP_VEGETATION": True, "KEEP_WATER": True}, ["--keep-vegetation", "--keep-water"]),
    (0, {}, []),
    (CVA, {"KEEP_VEGETATION": True, "KEEP_WATER": True}, []),  # rules of models: CVA has none to drop
])
def test_dropping_a_models_stable_cover_rules_reaches_the_worker_for_the_model_method_only(
    provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: int, keep: dict, expected: list[str]
) -> None:
    import json
    import shlex

    import processing

    t1, t2 = make_pair(tmp_path)
    out, args_file = tmp_path / "change.tif", tmp_path / "args.txt"
    outputs = {"change": str(out), "threshold": 0.3, "changed_fraction": 0.1}
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$*" > {args_file}\n'
                      f"echo {shlex.quote(json.dumps({'event': 'result', 'outputs': outputs}))}\n")
    python.chmod(0o755)
    monkeypatch.setenv("SWIMDIFF_PYTHON", str(python))

    result = processing.run("swimdiff:detectchange", {"T1": str(t1), "T2": str(t2), "METHOD": method, **keep,
                                                      "OUTPUT": str(out)})

    args = args_file.read_text().split()
    assert args[args.index("--method") + 1] == ("cva" if method == CVA else "model")
    assert [word for word in args if word.startswith("--keep-")] == expected
    assert result["OUTPUT"] == str(out) and result["USED_THRESHOLD"] == 0.3


def test_cancel_ends_the_worker_and_leaves_no_file(provider, tmp_path: Path) -> None:
    import processing

    t1, t2 = make_pair(tmp_path, size=1024)
    out = tmp_path / "out"
    out.mkdir()
    feedback = RecordingFeedback(cancel_at="change magnitude")  # the magnitude file is being written then

    with pytest.raises(QgsProcessingException, match="swimdiff detect was cancelled; nothing was written"):
        processing.run("swimdiff:detectchange", {
            "T1": str(t1), "T2": str(t2), "METHOD": CVA, "TILE": 64,
            "OUTPUT": str(out / "change.tif"), "PROBABILITY": str(out / "magnitude.tif")}, feedback=feedback)

    assert feedback.isCanceled() and "change mask" not in feedback.texts
    assert list(out.iterdir()) == []  # neither outputs nor temporary files
    assert worker_children() == []


def test_a_worker_error_becomes_a_processing_exception_with_the_plain_message(provider, tmp_path: Path) -> None:
    import processing

    t1, t2 = make_pair(tmp_path, t2_bands=("B05", "B06", "B07", "B11"))

    with pytest.raises(QgsProcessingException) as caught:
        processing.run("swimdiff:detectchange", {
            "T1": str(t1), "T2": str(t2), "METHOD": CVA, "OUTPUT": str(tmp_path / "change.tif")})

    assert str(caught.value) == (
        f"the dates share no band name ('{t1}' has ['B02', 'B03', 'B04', 'B08']); give rasters with the same "
        "bands, or name unnamed bands with --assume-band-names")
    assert not (tmp_path / "change.tif").exists()


def test_a_non_geotiff_output_name_is_refused_before_the_worker_starts(provider, tmp_path: Path) -> None:
    import processing

    t1, t2 = make_pair(tmp_path)
    with pytest.raises(QgsProcessingException, match=r"'.*change\.img' is not a GeoTIFF name; .*change\.tif"):
        processing.run("swimdiff:detectchange", {
            "T1": str(t1), "T2": str(t2), "METHOD": CVA, "OUTPUT": str(tmp_path / "change.img")})


def test_a_graphical_modeler_model_chains_detectchange_with_a_stock_algorithm(provider, tmp_path: Path) -> None:
    t1, t2 = make_pair(tmp_path)
    model = QgsProcessingModelAlgorithm("Change polygons", "SwiMDiff tests")
    for name in ("before", "after"):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name))

    detect = QgsProcessingModelChildAlgorithm("swimdiff:detectchange")
    detect.setChildId("detect")
    detect.addParameterSources("T1", [QgsProcessingModelChildParameterSource.fromModelParameter("before")])
    detect.addParameterSources("T2", [QgsProcessingModelChildParameterSource.fromModelParameter("after")])
    detect.addParameterSources("METHOD", [QgsProcessingModelChildParameterSource.fromStaticValue(CVA)])
    model.addChildAlgorithm(detect)

    polygonize = QgsProcessingModelChildAlgorithm("gdal:polygonize")
    polygonize.setChildId("polygonize")
    polygonize.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("detect",
                                                                                                    "OUTPUT")])
    polygonize.addParameterSources("BAND", [QgsProcessingModelChildParameterSource.fromStaticValue(1)])
    polygonize.addParameterSources("FIELD", [QgsProcessingModelChildParameterSource.fromStaticValue("change")])
    polygons = QgsProcessingModelOutput("polygons")
    polygons.setChildOutputName("OUTPUT")
    polygonize.setModelOutputs({"polygons": polygons})
    model.addChildAlgorithm(polygonize)
    model.updateDestinationParameters()

    context = QgsProcessingContext()
    parameters = {"before": str(t1), "after": str(t2), "polygonize:polygons": str(tmp_path / "change.gpkg")}
    ok, messages = model.checkParameterValues(parameters, context)
    assert ok, messages
    results, ok = model.run(parameters, context, QgsProcessingFeedback())

    assert ok
    polygons_layer = QgsVectorLayer(results["polygonize:polygons"], "polygons")
    assert polygons_layer.isValid() and polygons_layer.crs().authid() == "EPSG:32631"
    values = {feature["change"] for feature in polygons_layer.getFeatures()}
    assert values == {0, 1}  # the unchanged background and the changed block
    changed_area = sum(f.geometry().area() for f in polygons_layer.getFeatures() if f["change"] == 1)
    assert changed_area == pytest.approx(20 * 24 * 100, rel=0.1)  # the 20 x 24 block of 10 m pixels
    del polygons_layer


@pytest.mark.parametrize(("algorithm", "parameters", "expected_args", "result", "expected_outputs"), [
    ("swimdiff:pretrain",
     {"FOLDER": "{tmp}", "STEPS": 20, "BATCH_SIZE": 8, "BANDS": "B02,B03", "RESUME": True, "OUTPUT": "{tmp}/model"},
     "pretrain --data {tmp} --out {tmp}/model --steps 20 --batch-size 8 --patch-size 96 --device auto "
     "--bands B02,B03 --resume --events jsonl",
     {"model_dir": "{tmp}/model", "stopped": False, "steps_done": 20}, {"OUTPUT": "{tmp}/model"}),
    ("swimdiff:finetunechange",
     {"DATA": "{tmp}", "ENCODER": "{tmp}", "CITIES": "a,b", "VAL_CITIES": "c", "STEPS": 5, "FREEZE_ENCODER": True,
      "OUTPUT": "{tmp}/change"},
     "finetune-change --data {tmp} --out {tmp}/change --cities a,b --val-cities c --steps 5 --batch-size 8 "
     "--patch-size 96 --eval-every 50 --device auto --encoder {tmp} --freeze-encoder --events jsonl",
     {"model_dir": "{tmp}/change", "threshold": 0.4, "val_f1": 0.5},
     {"OUTPUT": "{tmp}/change", "THRESHOLD": 0.4, "VAL_F1": 0.5}),
    ("swimdiff:evaluatechange",
     {"DATA": "{tmp}", "METHOD": CVA, "CITIES": "bercy", "JSON": "{tmp}/scores.json"},
     "evaluate --data {tmp} --method cva --device auto --cities bercy --json {tmp}/scores.json --events jsonl",
     {"pooled": {"precision": 0.1, "recall": 0.2, "f1": 0.3, "iou": 0.4}},
     {"REPORT": None, "JSON": "{tmp}/scores.json", "PRECISION": 0.1, "RECALL": 0.2, "F1": 0.3, "IOU": 0.4}),
    ("swimdiff:finetuneclassify",
     {"DATA": "{tmp}", "ENCODER": "{tmp}", "EPOCHS": 3, "LINEAR_PROBE": True, "LR": 0.001, "AUGMENT": False,
      "OUTPUT": "{tmp}/classifier"},
     "finetune-classify --data {tmp} --out {tmp}/classifier --epochs 3 --batch-size 32 --val-fraction 0.2 --seed 0 "
     "--arch resnet18 --device auto --encoder {tmp} --lr 0.001 --linear-probe --no-augment --events jsonl",
     {"model_dir": "{tmp}/classifier", "micro_map": 0.6, "evaluated_on": "validation"},
     {"OUTPUT": "{tmp}/classifier", "METRIC": "micro_map", "SCORE": 0.6, "CONFUSION_MATRIX": None}),
])
def test_the_training_and_evaluation_algorithms_pass_their_parameters_to_the_cli(
    provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algorithm: str, parameters: dict,
    expected_args: str, result: dict, expected_outputs: dict,
) -> None:
    """A fake worker records its command line and answers with a canned result."""
    import json
    import shlex

    import processing

    def fill(value):
        if isinstance(value, str):
            return value.replace("{tmp}", str(tmp_path))
        return {k: fill(v) for k, v in value.items()} if isinstance(value, dict) else value

    args_file = tmp_path / "args.txt"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$*" > {args_file}\n'
                      f"echo {shlex.quote(json.dumps({'event': 'result', 'outputs': fill(result)}))}\n")
    python.chmod(0o755)
    monkeypatch.setenv("SWIMDIFF_PYTHON", str(python))

    outputs = processing.run(algorithm, fill(parameters))

    assert args_file.read_text().strip() == "-m core.cli " + fill(expected_args)
    assert {k: outputs.get(k) for k in expected_outputs} == fill(expected_outputs)
