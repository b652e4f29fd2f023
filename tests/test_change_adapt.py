"""``swimdiff adapt``: drawn polygons rasterised onto t1's grid, held out spatially, and a change model adapted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BadInput, check_bad_input, run_cli, smooth_field, write_geotiff
from core.change.labels import UNLABELLED, rasterize_labels, read_label_polygons, split_labels
from core.change.training import CHANGE_KIND, encoder_network, load_change_model
from core.checkpoint import save_model
from core.io.normalization import BandStats
from core.io.raster import open_date

BANDS = ("B02", "B03", "B04", "B08")
ORIGIN = (500000.0, 4600000.0)  # EPSG:32631, 10 m pixels, 96 x 96 px
SIZE = 96


def _box(row0: int, col0: int, row1: int, col1: int) -> list[tuple[float, float]]:
    """A pixel rectangle [row0, row1) x [col0, col1) of the test grid as a UTM ring."""
    x0, x1 = ORIGIN[0] + 10 * col0, ORIGIN[0] + 10 * col1
    y0, y1 = ORIGIN[1] - 10 * row0, ORIGIN[1] - 10 * row1
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def write_polygons(path: Path, features: list[tuple[list[tuple[float, float]], object]], epsg: int = 32631,
                   field: str = "change", field_type: str = "int") -> Path:
    """A GeoPackage layer of polygons (rings in ``epsg``) with one field."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("drawn", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTInteger if field_type == "int" else ogr.OFTString))
    for ring_points, value in features:
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ring_points:
            ring.AddPoint_2D(x, y)
        polygon = ogr.Geometry(ogr.wkbPolygon)
        polygon.AddGeometry(ring)
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField(field, value)
        feature.SetGeometry(polygon)
        layer.CreateFeature(feature)
    ds = None
    return path


def to_wgs84(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    from osgeo import osr

    utm, wgs = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32631)
    wgs.ImportFromEPSG(4326)
    for srs in (utm, wgs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(utm, wgs)
    return [tuple(transform.TransformPoint(x, y)[:2]) for x, y in ring]


def make_pair(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Two 4-band dates; t2 has bright new blocks at rows 10-30 x cols 20-44 and rows 60-80 x cols 50-74."""
    rng = np.random.default_rng(seed)
    t1 = smooth_field(rng, len(BANDS), SIZE)
    t2 = t1.copy()
    t2[:, 10:30, 20:44] += 900
    t2[:, 60:80, 50:74] += 900
    folder.mkdir(parents=True, exist_ok=True)
    return (write_geotiff(folder / "t1.tif", t1, descriptions=BANDS, origin=ORIGIN),
            write_geotiff(folder / "t2.tif", t2, descriptions=BANDS, origin=ORIGIN))


def drawn(folder: Path) -> Path:
    """Two change polygons over the blocks (one in EPSG:4326) and two no-change ones elsewhere."""
    return write_polygons(folder / "drawn.gpkg", [
        (_box(40, 0, 56, 90), 0), (_box(84, 0, 96, 90), 0),
        (_box(10, 20, 30, 44), 1), (_box(60, 50, 80, 74), 1)])


def tiny_change_model(folder: Path, bands: Sequence[str] = BANDS) -> Path:
    """A small random change model on ``bands`` (a 'swimdiff-change' folder)."""
    torch.manual_seed(0)
    model = encoder_network("resnet18", len(bands), None, None)
    config = {"kind": CHANGE_KIND, "architecture": {"arch": "resnet18", "in_chans": len(bands),
                                                    "decoder_channels": [128, 64, 48, 32]},
              "bands": list(bands), "normalization": {"bands": list(bands), "mean": [1000.0] * len(bands),
                                                      "std": [300.0] * len(bands), "value_scale": "sentinel2_dn"},
              "patch_size": 64, "threshold": 0.5, "provenance": {"note": "test"}}
    save_model(folder, model.state_dict(), config)
    return folder


def test_rasterise_overlap_change_wins_outside_is_unlabelled_and_wgs84_is_reprojected(tmp_path) -> None:
    t1, _ = make_pair(tmp_path)
    # the overlap [10, 20) x [10, 20) is drawn as no change and as change: change wins
    utm = write_polygons(tmp_path / "utm.gpkg", [(_box(0, 0, 20, 20), 0), (_box(10, 10, 30, 30), 1)])
    wgs = write_polygons(tmp_path / "wgs.gpkg", [(to_wgs84(_box(50, 50, 60, 70)), 1)], epsg=4326)
    grid = open_date(t1).grid
    label = rasterize_labels(read_label_polygons(utm, grid), grid)
    assert label.dtype == np.uint8 and label.shape == (SIZE, SIZE)
    assert (label[0:10, 0:20] == 0).all() and (label[10:20, 0:10] == 0).all()
    assert (label[10:30, 10:30] == 1).all()  # the overlap is change
    assert (label[30:, :] == UNLABELLED).all() and (label[:, 30:] == UNLABELLED).all()
    assert int((label == 0).sum()) == 400 - 100 and int((label == 1).sum()) == 400
    moved = rasterize_labels(read_label_polygons(wgs, grid), grid)
    rows, cols = np.nonzero(moved == 1)
    assert abs(rows.min() - 50) <= 1 and abs(rows.max() - 59) <= 1 and abs(cols.min() - 50) <= 1
    assert abs(int((moved == 1).sum()) - 200) <= 25 and (moved[:45] == UNLABELLED).all()


def test_layer_source_with_layername_suffix_is_read(tmp_path) -> None:
    t1, _ = make_pair(tmp_path)
    grid = open_date(t1).grid
    polygons = read_label_polygons(f"{drawn(tmp_path)}|layername=drawn", grid)
    assert sorted(p.change for p in polygons) == [0, 0, 1, 1]


def test_validation_pixels_are_disjoint_from_training_polygons(tmp_path) -> None:
    t1, _ = make_pair(tmp_path)
    grid = open_date(t1).grid
    polygons = read_label_polygons(drawn(tmp_path), grid)
    valid = np.ones((SIZE, SIZE), dtype=bool)
    split = split_labels(polygons, grid, valid, fraction=0.25, seed=0)
    train, val = split.train <= 1, split.val <= 1
    assert not (train & val).any()
    assert (val & (split.val == 1)).any() and (val & (split.val == 0)).any()
    assert (train & (split.train == 1)).any() and (train & (split.train == 0)).any()
    full = rasterize_labels(polygons, grid)
    assert ((full <= 1) == (train | val)).all()  # every labelled pixel trains or validates (no overlaps here)
    for polygon in polygons:  # whole polygons: each one trains or validates, never both
        inside = rasterize_labels([polygon], grid) <= 1
        assert not (train[inside].any() and val[inside].any())
    single = [p for p in polygons if p.change == 1][:1] + [p for p in polygons if p.change == 0]
    cut = split_labels(single, grid, valid, fraction=0.25, seed=0)  # one change polygon: cut at a row
    assert cut.cut_polygons == (single[0].fid,)
    train_rows, val_rows = np.nonzero(cut.train == 1)[0], np.nonzero(cut.val == 1)[0]
    assert len(val_rows) and train_rows.max() < val_rows.min() and not ((cut.train <= 1) & (cut.val <= 1)).any()


def test_adapt_writes_a_model_that_detect_uses(tmp_path, capsys) -> None:
    t1, t2 = make_pair(tmp_path)
    labels = drawn(tmp_path)
    start = tiny_change_model(tmp_path / "start")
    out = tmp_path / "adapted"
    code, events = run_cli(["adapt", "--t1", str(t1), "--t2", str(t2), "--labels", str(labels), "--model",
                            str(start), "--out", str(out), "--steps", "4", "--batch-size", "2", "--eval-every", "2"],
                           capsys)
    assert code == 0, events[-1]
    result = events[-1]["outputs"]
    assert result["model_dir"] == str(out) and result["best_step"] in (0, 2, 4) and 0 < result["threshold"] < 1
    assert 0 <= result["val_f1"] <= 1 and 0 <= result["zero_shot_val_f1"] <= 1
    pixels = result["labelled_pixels"]
    assert pixels["train"]["change"] + pixels["val"]["change"] == 2 * 480
    assert pixels["train"]["no_change"] + pixels["val"]["no_change"] == 16 * 90 + 12 * 90
    assert sorted({e["step"] for e in events if e["event"] == "metric" and e["name"] == "val_f1"}) == [2, 4]
    model, config = load_change_model(out, torch.device("cpu"))
    assert config["bands"] == list(BANDS) and config["normalization"]["mean"] == [1000.0] * 4
    assert result["threshold_kept"] == config["threshold_from"].startswith("starting model")
    assert not result["threshold_kept"] or result["threshold"] == 0.5  # tiny_change_model's threshold
    provenance = config["provenance"]
    assert provenance["adapted_from"] == str(start) and provenance["start"] == "change model"
    assert provenance["pairs"][0]["t1"] == str(t1) and provenance["pairs"][0]["labels"] == str(labels)
    assert provenance["labelled_pixels"] == pixels and provenance["start_provenance"] == {"note": "test"}
    assert config["metrics"]["best_step"] == result["best_step"]
    assert (out / "history.csv").read_text().startswith("step,loss,val_f1")

    code, events = run_cli(["detect", "--t1", str(t1), "--t2", str(t2), "--model", str(out), "--out",
                            str(tmp_path / "change.tif")], capsys)
    assert code == 0, events[-1]
    assert events[-1]["outputs"]["threshold"] == pytest.approx(config["threshold"])


def test_cancel_leaves_no_model(tmp_path) -> None:
    from core.change.adapt import LabelledPair, adapt_change_model
    from core.errors import Cancelled

    t1, t2 = make_pair(tmp_path)
    start = tiny_change_model(tmp_path / "start")
    calls = []
    with pytest.raises(Cancelled):
        adapt_change_model([LabelledPair(str(t1), str(t2), str(drawn(tmp_path)))], tmp_path / "out",
                           model_dir=start, should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_cli_defaults_are_the_core_defaults() -> None:
    from core.change.adapt import ADAPT_TRAIN
    from core.cli import build_parser

    args = build_parser().parse_args(["adapt", "--t1", "a", "--t2", "b", "--labels", "c", "--out", "d"])
    assert (args.steps, args.batch_size, args.lr) == (ADAPT_TRAIN.steps, ADAPT_TRAIN.batch_size, ADAPT_TRAIN.lr)


def _argv(folder: Path, labels: Path, *extra: str) -> list[str]:
    t1, t2 = make_pair(folder)
    return ["adapt", "--t1", str(t1), "--t2", str(t2), "--labels", str(labels), "--model",
            str(tiny_change_model(folder / "start")), "--out", str(folder / "out"), "--steps", "2",
            "--batch-size", "2", *extra]


BAD = [
    BadInput("missing field", lambda f: _argv(f, write_polygons(f / "l.gpkg", [(_box(0, 0, 40, 40), 1)],
                                                                field="klass")), 2, "has no field 'change'",
             absent=("out",)),
    BadInput("other values", lambda f: _argv(f, write_polygons(f / "l.gpkg", [(_box(0, 0, 40, 40), 2)])), 2,
             "change = 2", absent=("out",)),
    BadInput("outside", lambda f: _argv(f, write_polygons(f / "l.gpkg", [(_box(200, 200, 240, 240), 1)])), 2,
             "none of its 1 polygons covers", absent=("out",)),
    BadInput("too few change", lambda f: _argv(f, write_polygons(f / "l.gpkg", [
        (_box(40, 0, 56, 90), 0), (_box(10, 20, 20, 30), 1)])), 2, "draw change (1) polygons over 100 more pixels",
        absent=("out",)),
    BadInput("not a vector", lambda f: _argv(f, make_pair(f / "x")[0]), 2, "is not a vector layer",
             absent=("out",)),
    BadInput("out holds a model", lambda f: [*_argv(f, drawn(f))[:-6], "--out",
                                             str(tiny_change_model(f / "old")), "--steps", "2"], 2,
             "already holds a model", unchanged=("old/config.json", "old/model.safetensors")),
    BadInput("counts differ", lambda f: [*_argv(f, drawn(f)), "--t1", "x.tif"], 2, "got 2 --t1, 1 --t2",
             absent=("out",)),
    BadInput("model and encoder", lambda f: [*_argv(f, drawn(f)), "--encoder", str(f / "start")], 2,
             "not both", absent=("out",)),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_adapt_bad_input(case: BadInput, tmp_path, capsys) -> None:
    check_bad_input(case, tmp_path / "case", capsys)


@pytest.mark.realdata
def test_adapt_on_the_top_half_of_an_oscd_city(shared_data, tmp_path, capsys) -> None:
    """Polygons from the top half of nantes' label; F1 on the bottom half before and after (printed)."""
    import rasterio
    from rasterio.features import shapes

    from core.change.adapt import LabelledPair, adapt_change_model

    city = shared_data / "oscd" / "images" / "nantes"
    t1, t2 = city / "imgs_1", city / "imgs_2"
    b02 = next(t1.glob("*_B02.tif"))
    with rasterio.open(b02) as ds:
        transform, crs = ds.transform, ds.crs
    with rasterio.open(shared_data / "oscd" / "labels" / "nantes" / "cm" / "nantes-cm.tif") as ds:
        truth = (ds.read(1) == 2).astype(np.uint8)  # 1 no change, 2 change
    half = truth.shape[0] // 2
    top = truth.copy()
    top[half:] = 255
    features = [(json.dumps(geometry), int(value)) for geometry, value in shapes(top, mask=top != 255,
                                                                                  transform=transform)]
    labels = _write_geojson_polygons(tmp_path / "top.gpkg", features, crs.to_epsg())
    result = adapt_change_model([LabelledPair(str(t1), str(t2), str(labels))], tmp_path / "adapted")
    from core.change.detection import detect_with_model
    from core.change.pair import open_pair

    scores = {}
    for name, model in (("shipped", None), ("adapted", tmp_path / "adapted")):
        from core.change.default_model import change_model_dir

        config = json.loads((change_model_dir(model) / "config.json").read_text())
        pair = open_pair(t1, t2, config["bands"], (), BandStats.from_dict(config["normalization"]).value_scale)
        detect_with_model(pair, change_model_dir(model), tmp_path / f"{name}.tif")
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            predicted = ds.read(1)[half:] == 1
        from core.change.metrics import count_changes

        scores[name] = count_changes(predicted, truth[half:]).f1
    print(f"nantes bottom-half F1: shipped {scores['shipped']:.3f}, adapted {scores['adapted']:.3f}; "
          f"best step {result.best_step}, held-out F1 {result.val_scores['f1']:.3f} "
          f"(zero-shot {result.zero_shot['f1']:.3f}), {result.seconds:.0f} s")
    _, config = load_change_model(tmp_path / "adapted", torch.device("cpu"))
    assert config["provenance"]["labelled_pixels"]["train"]["change"] > 0
    assert scores["adapted"] >= scores["shipped"] - 0.1


def _write_geojson_polygons(path: Path, features: list[tuple[str, int]], epsg: int) -> Path:
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("labels", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("change", ogr.OFTInteger))
    for geometry, value in features:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("change", value)
        feature.SetGeometry(ogr.CreateGeometryFromJson(geometry))
        layer.CreateFeature(feature)
    ds = None
    return path


def test_a_new_threshold_must_gain_enough_held_out_f1_to_replace_the_starting_one() -> None:
    from test_change_pseudo import _constant_model

    from core.change.adapt import GUARD, guarded_threshold
    from core.change.patches import CityStack

    x = np.zeros((2, 32, 32), dtype=np.float32)
    label = np.zeros((32, 32), dtype=np.uint8)
    label[:8] = 1
    val = [CityStack("held out", x, x, label)]
    model = _constant_model(0.6)  # everything is change below 0.6, nothing above
    best = {"f1": 0.4, "threshold": 0.3, "scores": {"f1": 0.4}, "state": None, "step": 40}
    kept = guarded_threshold(model, val, torch.device("cpu"), best, start=0.5)  # F1 0.4 at 0.5 too: no gain
    assert kept["threshold"] == 0.5 and "starting model" in kept["threshold_from"]
    assert kept["f1"] == pytest.approx(0.4) and kept["step"] == 40
    assert guarded_threshold(model, val, torch.device("cpu"), best, start=0.7) is best  # F1 0 at 0.7: gain 0.4
    assert GUARD == 0.05
