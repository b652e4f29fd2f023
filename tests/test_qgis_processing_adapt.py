"""``swimdiff:adapt`` inside QGIS (pytest-qgis, offscreen) and through ``qgis_process``: polygons from a memory
layer in another CRS, a selection, a layer of a multi-layer GeoPackage, refusals, and a model chaining it with
``swimdiff:detectchange``.

The real runs adapt the shipped model on a 96 x 96 crop of nantes (OSCD, EPSG:4326, ../shared/data) for 2 steps
of 2 patches, with polygons made from the crop's change label (1 change, 0 no change).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterRasterLayer,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from test_qgis_process import headless_env, qgis_process  # noqa: F401 (headless_env: a fixture)

from conftest import SHARED_DATA, smooth_field, write_geotiff

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "resources" / "models" / "oscd-change"
CITY = "nantes"  # held out from the shipped model's training
WINDOW = (272, 64, 96)  # first row, first column and side of the crop on imgs_1's B02 grid: 738 changed pixels
FAST = {"STEPS": 2, "BATCH_SIZE": 2, "EVAL_EVERY": 2, "DEVICE": "cpu"}
UTM_30N = "EPSG:32630"  # nantes' UTM zone; the rasters are in EPSG:4326


@dataclass(frozen=True)
class Crop:
    """Two dates of a crop (13 named bands, EPSG:4326), its change label (H, W) of 0/1 and polygons of it."""

    t1: Path
    t2: Path
    label: np.ndarray
    polygons: Path  # GeoPackage on the rasters' CRS, layer "drawn", integer field "change"


def write_polygons(path: Path, label: np.ndarray, geotransform: tuple, wkt: str, layer_name: str = "drawn",
                   field: str = "change") -> Path:
    """The regions of a 0/1 label as polygons with ``field`` = their value (a layer added to ``path``)."""
    srs = osr.SpatialReference(wkt=wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    raster = gdal.GetDriverByName("MEM").Create("", label.shape[1], label.shape[0], 1, gdal.GDT_Byte)
    raster.SetGeoTransform(geotransform)
    raster.SetProjection(wkt)
    raster.GetRasterBand(1).WriteArray(label.astype(np.uint8))
    driver = ogr.GetDriverByName("GPKG")
    vector = driver.Open(str(path), 1) if path.exists() else driver.CreateDataSource(str(path))
    layer = vector.CreateLayer(layer_name, srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTInteger))
    assert gdal.Polygonize(raster.GetRasterBand(1), None, layer, 0) == 0
    vector = raster = None  # closes both
    return path


def crop_date(folder: Path, bounds: tuple[float, float, float, float], resolution: tuple[float, float],
              out: Path) -> Path:
    """One GeoTIFF of a band folder's ``*_Bxx.tif`` files resampled onto a grid, bands described B01..B12."""
    files = sorted(folder.glob("*_B*.tif"))
    vrt = out.with_suffix(".vrt")
    dataset = gdal.BuildVRT(str(vrt), [str(f) for f in files], separate=True, outputBounds=bounds,
                            xRes=resolution[0], yRes=resolution[1])
    for index, path in enumerate(files, 1):
        dataset.GetRasterBand(index).SetDescription(path.stem.rsplit("_", 1)[1])
    dataset = None  # writes the VRT
    gdal.Translate(str(out), str(vrt))
    return out


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> Crop:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not here")
    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip(f"the default model {DEFAULT_MODEL} is not built yet")
    folder = tmp_path_factory.mktemp("nantes")
    images = SHARED_DATA / "oscd" / "images" / CITY
    b02 = gdal.Open(str(next((images / "imgs_1").glob("*_B02.tif"))))
    x0, dx, _, y0, _, dy = b02.GetGeoTransform()
    row, col, side = WINDOW
    left, top = x0 + col * dx, y0 + row * dy
    bounds = (left, top + side * dy, left + side * dx, top)
    t1, t2 = (crop_date(images / date, bounds, (dx, -dy), folder / f"{date}.tif") for date in ("imgs_1", "imgs_2"))
    cm = gdal.Open(str(SHARED_DATA / "oscd" / "labels" / CITY / "cm" / f"{CITY}-cm.tif"))
    label = (cm.ReadAsArray(col, row, side, side) == 2).astype(np.uint8)  # OSCD: 1 no change, 2 change
    cropped = gdal.Open(str(t1))
    assert cropped.GetGeoTransform() == pytest.approx((left, dx, 0, top, 0, dy), rel=1e-12)
    assert (cropped.RasterCount, cropped.RasterXSize, cropped.RasterYSize) == (13, side, side)
    polygons = write_polygons(folder / "drawn.gpkg", label, cropped.GetGeoTransform(), cropped.GetProjection())
    return Crop(t1, t2, label, polygons)


def labelled_pixels(model_dir: str | Path) -> dict[str, int]:
    """The labelled pixels an adapted model folder records, training and held-out parts added."""
    pixels = json.loads((Path(model_dir) / "config.json").read_text())["provenance"]["labelled_pixels"]
    return {k: pixels["train"][k] + pixels["val"][k] for k in ("change", "no_change")}


def check_model_folder(result: dict, crop: Crop) -> dict:
    """The outputs agree with the model folder written, which starts from the shipped model; its config."""
    config = json.loads((Path(result["OUTPUT"]) / "config.json").read_text())
    assert (Path(result["OUTPUT"]) / "model.safetensors").is_file()
    assert config["kind"] == json.loads((DEFAULT_MODEL / "config.json").read_text())["kind"]
    assert Path(config["provenance"]["adapted_from"]).resolve() == DEFAULT_MODEL.resolve()
    assert config["provenance"]["pairs"][0]["t1"] == str(crop.t1)
    assert config["train"]["steps"] == 2 and config["train"]["batch_size"] == 2
    assert result["THRESHOLD"] == pytest.approx(config["threshold"])
    assert result["BEST_STEP"] == config["metrics"]["best_step"] and result["BEST_STEP"] in (0, 2)
    assert result["VAL_F1"] == pytest.approx(config["metrics"]["val_f1"])
    assert result["ZERO_SHOT_F1"] == pytest.approx(config["metrics"]["zero_shot_val_f1"])
    # step 0 (the shipped model at its best threshold) competes, so the kept F1 is never below the shipped one
    assert 0 < result["ZERO_SHOT_F1"] <= result["VAL_F1"] <= 1
    return config


def test_adapt_has_typed_parameters_with_the_clis_defaults(provider) -> None:
    registry = QgsApplication.processingRegistry()
    assert "swimdiff:adapt" in [a.id() for a in provider.algorithms()]
    adapt = registry.algorithmById("swimdiff:adapt")
    assert adapt.displayName() == "Adapt change detection to this area"
    parameters = {p.name(): p for p in adapt.parameterDefinitions()}
    assert list(parameters) == ["T1", "T2", "LABELS", "LABEL_FIELD", "MODEL", "ENCODER", "KEEP_VEGETATION",
                                "KEEP_WATER", "STEPS", "BATCH_SIZE", "LR", "EVAL_EVERY", "SEED", "DEVICE", "OUTPUT"]
    for name in ("KEEP_VEGETATION", "KEEP_WATER"):
        assert parameters[name].type() == "boolean" and parameters[name].defaultValue() is False, name
    assert parameters["KEEP_WATER"].description() == (
        "Water at both dates can be change (drop the starting model's stable-water rule)")
    assert parameters["T1"].type() == parameters["T2"].type() == "raster"
    assert isinstance(parameters["LABELS"], QgsProcessingParameterFeatureSource)
    assert parameters["LABELS"].dataTypes() == [QgsProcessing.TypeVectorPolygon]
    field = parameters["LABEL_FIELD"]
    assert isinstance(field, QgsProcessingParameterField)
    assert (field.parentLayerParameterName(), field.dataType(), field.defaultValue()) == (
        "LABELS", QgsProcessingParameterField.Numeric, "change")
    assert not field.allowMultiple()
    assert parameters["OUTPUT"].type() == "folderDestination"
    optional = {n for n, p in parameters.items() if p.flags() & QgsProcessingParameterDefinition.FlagOptional}
    assert optional == {"LABEL_FIELD", "MODEL", "ENCODER"}  # empty: "change"
    advanced = {n for n, p in parameters.items() if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert advanced == {"BATCH_SIZE", "LR", "EVAL_EVERY", "SEED", "DEVICE"}
    defaults = {n: parameters[n].defaultValue() for n in ("STEPS", "BATCH_SIZE", "LR", "EVAL_EVERY", "SEED",
                                                          "DEVICE")}
    assert defaults == {"STEPS": 120, "BATCH_SIZE": 8, "LR": 2e-4, "EVAL_EVERY": 20, "SEED": 0, "DEVICE": "auto"}
    assert {o.name() for o in adapt.outputDefinitions()} == {"OUTPUT", "THRESHOLD", "VAL_F1", "ZERO_SHOT_F1",
                                                             "BEST_STEP"}
    help_text = adapt.shortHelpString()
    for words in ("1 where something changed, 0 where nothing did", "a quarter", "'Detect changes'"):
        assert words in help_text


def small_inputs(folder: Path) -> tuple[Path, Path, Path]:
    """Generated t1, t2 (4 bands, EPSG:32631) and a GeoPackage of two layers: "drawn" (field "truth") and
    "other" (field "change")."""
    data = smooth_field(np.random.default_rng(0), 4, 32)
    t1 = write_geotiff(folder / "t1.tif", data, descriptions=("B02", "B03", "B04", "B08"))
    t2 = write_geotiff(folder / "t2.tif", data, descriptions=("B02", "B03", "B04", "B08"))
    label = np.zeros((32, 32), dtype=np.uint8)
    label[8:16, 8:16] = 1
    wkt = gdal.Open(str(t1)).GetProjection()
    geotransform = (500000.0, 10.0, 0.0, 4600000.0, 0.0, -10.0)
    gpkg = write_polygons(folder / "labels.gpkg", label, geotransform, wkt, "drawn", "truth")
    write_polygons(gpkg, label, geotransform, wkt, "other", "change")
    return t1, t2, gpkg


class ErrorFeedback(QgsProcessingFeedback):
    """Keeps the errors a run reports."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803 (QGIS names)
        self.errors.append(error)
        super().reportError(error, fatalError)


def fake_worker(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A worker that records its command line and answers like ``swimdiff adapt`` from a shipped model; the
    file it records to."""
    args_file = folder / "args.txt"
    result = {"model_dir": str(folder / "model"), "best_step": 40, "threshold": 0.25, "val_f1": 0.6,
              "zero_shot_val_f1": 0.5, "labelled_pixels": {}}
    python = folder / "python"
    python.write_text(f'#!/bin/sh\necho "$*" > {args_file}\n'
                      f"echo {shlex.quote(json.dumps({'event': 'result', 'outputs': result}))}\n")
    python.chmod(0o755)
    monkeypatch.setenv("SWIMDIFF_PYTHON", str(python))
    return args_file


def test_adapt_passes_a_layer_of_a_geopackage_and_every_option_to_the_cli(
    provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import processing

    t1, t2, gpkg = small_inputs(tmp_path)
    args_file = fake_worker(tmp_path, monkeypatch)

    result = processing.run("swimdiff:adapt", {
        "T1": str(t1), "T2": str(t2), "LABELS": f"{gpkg}|layername=drawn", "LABEL_FIELD": "truth",
        "MODEL": str(tmp_path), "STEPS": 7, "BATCH_SIZE": 3, "LR": 1e-3, "EVAL_EVERY": 5, "SEED": 9,
        "DEVICE": "cuda:1", "KEEP_VEGETATION": True, "KEEP_WATER": True, "OUTPUT": str(tmp_path / "model")})

    assert shlex.split(args_file.read_text()) == [
        "-m", "core.cli", "adapt", "--t1", str(t1), "--t2", str(t2), "--labels", f"{gpkg}|layername=drawn",
        "--label-field", "truth", "--out", str(tmp_path / "model"), "--steps", "7", "--batch-size", "3",
        "--lr", "0.001", "--eval-every", "5", "--seed", "9", "--device", "cuda:1", "--model", str(tmp_path),
        "--keep-vegetation", "--keep-water", "--events", "jsonl"]  # the layer is named, not copied
    assert result == {"OUTPUT": str(tmp_path / "model"), "THRESHOLD": 0.25, "VAL_F1": 0.6, "ZERO_SHOT_F1": 0.5,
                      "BEST_STEP": 40}


def test_a_memory_layer_and_its_unsaved_edits_reach_the_worker_as_a_temporary_geopackage(
    provider, qgis_new_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import processing

    t1, t2, gpkg = small_inputs(tmp_path)
    args_file = fake_worker(tmp_path, monkeypatch)
    memory = QgsVectorLayer("Polygon?crs=EPSG:4326&field=change:integer", "drawn", "memory")
    features = []
    for value, x in ((0, 3.0), (1, 3.2)):
        features.append(QgsFeature(memory.fields()))
        features[-1].setAttributes([value])
        features[-1].setGeometry(QgsGeometry.fromRect(QgsRectangle(x, 41.0, x + 0.1, 41.1)))
    assert memory.dataProvider().addFeatures(features[:1])
    assert memory.startEditing() and memory.addFeature(features[1])  # an unsaved edit

    processing.run("swimdiff:adapt", {"T1": str(t1), "T2": str(t2), "LABELS": memory, "ENCODER": str(tmp_path),
                                      "OUTPUT": str(tmp_path / "model")})

    args = shlex.split(args_file.read_text())
    labels = args[args.index("--labels") + 1]
    assert labels.endswith(".gpkg") and Path(labels).is_file() and args[args.index("--encoder") + 1] == str(tmp_path)
    assert "--model" not in args and args[args.index("--steps") + 1] == "120"
    assert not [word for word in args if word.startswith("--keep-")]  # the starting model's rules by default
    exported = QgsVectorLayer(labels, "exported")
    assert exported.crs().authid() == "EPSG:4326"
    assert sorted(f["change"] for f in exported.getFeatures()) == [0, 1]  # the unsaved polygon too
    assert memory.rollBack()
    del exported


def test_unsaved_edits_of_a_geopackage_layer_are_refused_before_the_worker_starts(
    provider, qgis_new_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processing alone would pass the file, which lacks the edits."""
    import processing

    t1, t2, gpkg = small_inputs(tmp_path)
    args_file = fake_worker(tmp_path, monkeypatch)
    layer = QgsVectorLayer(f"{gpkg}|layername=drawn", "drawn")
    QgsProject.instance().addMapLayer(layer)
    assert layer.startEditing()
    feature = QgsFeature(layer.fields())
    feature.setAttribute("truth", 1)
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(500200, 4599700, 500300, 4599800)))
    assert layer.addFeature(feature) and layer.isModified()

    with pytest.raises(QgsProcessingException, match=r"^LABELS: layer 'drawn' has unsaved edits, which are not in "
                                                     r"its file yet; save them \(Layer > Save Layer Edits\)"):
        processing.run("swimdiff:adapt", {"T1": str(t1), "T2": str(t2), "LABELS": layer.id(), "LABEL_FIELD": "truth",
                                          "OUTPUT": str(tmp_path / "model")})

    assert not args_file.exists()
    assert layer.rollBack()


@pytest.mark.parametrize("where", ["processing.run", "a model's step"])
def test_a_change_model_and_an_encoder_together_are_refused_before_the_worker_starts(
    provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import processing

    t1, t2, gpkg = small_inputs(tmp_path)
    args_file = fake_worker(tmp_path, monkeypatch)
    parameters = {"T1": str(t1), "T2": str(t2), "LABELS": f"{gpkg}|layername=drawn", "LABEL_FIELD": "truth",
                  "MODEL": str(tmp_path / "model"), "ENCODER": str(tmp_path / "encoder"),
                  "OUTPUT": str(tmp_path / "out")}
    refusal = (f"give a change model ('{tmp_path / 'model'}') or a pre-trained encoder ('{tmp_path / 'encoder'}'), "
               "not both: a change model is adapted as it is, an encoder gets a new decoder")

    if where == "processing.run":
        with pytest.raises(QgsProcessingException) as caught:
            processing.run("swimdiff:adapt", parameters)
        assert str(caught.value) == refusal
    else:  # QGIS 3.22 does not call checkParameterValues of a model's steps: the algorithm itself refuses
        model = QgsProcessingModelAlgorithm("Adapt", "SwiMDiff tests")
        adapt = QgsProcessingModelChildAlgorithm("swimdiff:adapt")
        adapt.setChildId("adapt")
        for name, value in parameters.items():
            adapt.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
        model.addChildAlgorithm(adapt)
        feedback = ErrorFeedback()
        _, ok = model.run({}, QgsProcessingContext(), feedback)
        assert not ok and any(refusal in error for error in feedback.errors), feedback.errors
    assert not args_file.exists()


@pytest.mark.realdata
def test_adapt_reads_a_selection_of_a_memory_layer_in_another_crs(
    provider, qgis_new_project, crop: Crop, tmp_path: Path
) -> None:
    """Polygons reprojected to UTM in a memory layer, plus an unselected one the worker would refuse."""
    import processing

    drawn = QgsVectorLayer(str(crop.polygons), "drawn")
    to_utm = QgsCoordinateTransform(drawn.crs(), QgsCoordinateReferenceSystem(UTM_30N), QgsProject.instance())
    memory = QgsVectorLayer(f"Polygon?crs={UTM_30N}&field=change:integer", "drawn in UTM", "memory")
    features = []
    for source in drawn.getFeatures():
        geometry = QgsGeometry(source.geometry())
        assert geometry.transform(to_utm) == 0
        feature = QgsFeature(memory.fields())
        feature.setAttributes([source["change"]])
        feature.setGeometry(geometry)
        features.append(feature)
    bogus = QgsFeature(memory.fields())
    bogus.setAttributes([7])  # not a class: the worker refuses it unless only the selection reaches it
    bogus.setGeometry(QgsGeometry.fromRect(to_utm.transformBoundingBox(drawn.extent())))
    assert memory.dataProvider().addFeatures([*features, bogus])
    QgsProject.instance().addMapLayer(memory)
    memory.selectByIds([f.id() for f in memory.getFeatures() if f["change"] != 7])
    assert memory.selectedFeatureCount() == len(features) > 10
    del drawn

    result = processing.run("swimdiff:adapt", {
        "T1": str(crop.t1), "T2": str(crop.t2), "LABELS": QgsProcessingFeatureSourceDefinition(memory.id(), True),
        **FAST, "OUTPUT": str(tmp_path / "adapted")})

    assert result["OUTPUT"] == str(tmp_path / "adapted")
    config = check_model_folder(result, crop)
    assert config["provenance"]["pairs"][0]["labels"].endswith(".gpkg")
    assert config["provenance"]["pairs"][0]["polygons"] == len(features)
    # reprojected onto the rasters' grid, the polygons label exactly the pixels of the crop's change label
    assert labelled_pixels(result["OUTPUT"]) == {"change": int(crop.label.sum()),
                                                 "no_change": int((crop.label == 0).sum())}


@pytest.mark.realdata
@pytest.mark.slow
def test_a_graphical_model_adapts_on_a_geopackage_and_detects_with_the_adapted_model(
    provider, crop: Crop, tmp_path: Path
) -> None:
    """adapt -> detectchange in one model; the polygons are one layer of a two-layer GeoPackage (on the rasters'
    CRS) with the class in a field called "truth"."""
    gpkg = tmp_path / "labels.gpkg"
    cropped = gdal.Open(str(crop.t1))
    for layer, field in (("other", "change"), ("drawn", "truth")):
        write_polygons(gpkg, crop.label, cropped.GetGeoTransform(), cropped.GetProjection(), layer, field)
    del cropped
    model = QgsProcessingModelAlgorithm("Adapt then detect", "SwiMDiff tests")
    for name in ("before", "after"):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name))
    model.addModelParameter(QgsProcessingParameterFeatureSource("polygons", "polygons"),
                            QgsProcessingModelParameter("polygons"))

    adapt = QgsProcessingModelChildAlgorithm("swimdiff:adapt")
    adapt.setChildId("adapt")
    for parameter, source in (("T1", "before"), ("T2", "after"), ("LABELS", "polygons")):
        adapt.addParameterSources(parameter, [QgsProcessingModelChildParameterSource.fromModelParameter(source)])
    for parameter, value in ({"LABEL_FIELD": "truth", "MODEL": str(DEFAULT_MODEL), **FAST}).items():
        adapt.addParameterSources(parameter, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    adapted = QgsProcessingModelOutput("adapted")
    adapted.setChildOutputName("OUTPUT")
    adapt.setModelOutputs({"adapted": adapted})
    model.addChildAlgorithm(adapt)

    detect = QgsProcessingModelChildAlgorithm("swimdiff:detectchange")
    detect.setChildId("detect")
    for parameter, source in (("T1", "before"), ("T2", "after")):
        detect.addParameterSources(parameter, [QgsProcessingModelChildParameterSource.fromModelParameter(source)])
    detect.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromChildOutput("adapt", "OUTPUT")])
    detect.addParameterSources("DEVICE", [QgsProcessingModelChildParameterSource.fromStaticValue("cpu")])
    change = QgsProcessingModelOutput("change")
    change.setChildOutputName("OUTPUT")
    detect.setModelOutputs({"change": change})
    model.addChildAlgorithm(detect)
    model.updateDestinationParameters()

    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    parameters = {"before": str(crop.t1), "after": str(crop.t2), "polygons": f"{gpkg}|layername=drawn",
                  "adapt:adapted": str(tmp_path / "adapted"), "detect:change": str(tmp_path / "change.tif")}
    ok, message = model.checkParameterValues(parameters, context)
    assert ok, message
    results, ok = model.run(parameters, context, feedback)

    assert ok
    assert results["adapt:adapted"] == str(tmp_path / "adapted")
    config = json.loads((tmp_path / "adapted" / "config.json").read_text())
    assert config["provenance"]["label_field"] == "truth"
    assert config["provenance"]["pairs"][0]["labels"] == f"{gpkg}|layername=drawn"  # read in place, not copied
    # on the rasters' own CRS the polygons give back exactly the pixels they were made of
    assert labelled_pixels(tmp_path / "adapted") == {"change": int(crop.label.sum()),
                                                     "no_change": int((crop.label == 0).sum())}
    mask_ds = gdal.Open(results["detect:change"])
    assert (mask_ds.RasterXSize, mask_ds.RasterYSize) == crop.label.shape[::-1]
    assert mask_ds.GetGeoTransform() == gdal.Open(str(crop.t1)).GetGeoTransform()
    mask = mask_ds.GetRasterBand(1).ReadAsArray()
    assert set(np.unique(mask)) <= {0, 1}
    assert mask[crop.label == 1].mean() > mask[crop.label == 0].mean()  # it finds changes where they are


@pytest.mark.realdata
def test_too_few_labelled_pixels_give_the_workers_plain_message(provider, crop: Crop, tmp_path: Path) -> None:
    import processing

    few = np.full(crop.label.shape, 255, dtype=np.uint8)
    few[10:13, 10:13] = 1  # 9 change pixels
    few[40:60, 40:60] = 0
    cropped = gdal.Open(str(crop.t1))
    raster = gdal.GetDriverByName("MEM").Create("", few.shape[1], few.shape[0], 1, gdal.GDT_Byte)
    raster.SetGeoTransform(cropped.GetGeoTransform())
    raster.SetProjection(cropped.GetProjection())
    raster.GetRasterBand(1).WriteArray(few)
    raster.GetRasterBand(1).SetNoDataValue(255)
    srs = osr.SpatialReference(wkt=cropped.GetProjection())
    vector = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / "few.gpkg"))
    layer = vector.CreateLayer("few", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("change", ogr.OFTInteger))
    assert gdal.Polygonize(raster.GetRasterBand(1), raster.GetRasterBand(1).GetMaskBand(), layer, 0) == 0
    vector = raster = cropped = None

    with pytest.raises(QgsProcessingException) as caught:
        processing.run("swimdiff:adapt", {"T1": str(crop.t1), "T2": str(crop.t2), "LABELS": str(tmp_path / "few.gpkg"),
                                          **FAST, "OUTPUT": str(tmp_path / "adapted")})

    assert str(caught.value) == (
        f"--labels '{tmp_path / 'few.gpkg'}': 9 valid change (1) pixels are labelled; adapting needs at least 200: "
        "draw change (1) polygons over 191 more pixels")
    assert not (tmp_path / "adapted" / "config.json").exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_qgis_process_adapts_a_change_model(headless_env, crop: Crop, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "adapted"

    run = qgis_process("--json", "run", "swimdiff:adapt", "--", f"T1={crop.t1}", f"T2={crop.t2}",
                       f"LABELS={crop.polygons}", *(f"{k}={v}" for k, v in FAST.items()), f"OUTPUT={out}",
                       env=headless_env)

    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert f"worker: {ROOT}/.venv/bin/python -m core.cli adapt" in "\n".join(report["log"]["info"])
    results = report["results"]
    assert results["OUTPUT"] == str(out)
    check_model_folder(results, crop)
    assert labelled_pixels(out) == {"change": int(crop.label.sum()), "no_change": int((crop.label == 0).sum())}
