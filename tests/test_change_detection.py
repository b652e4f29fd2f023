"""``swimdiff detect`` with a fine-tuned model: streamed strips equal whole-image prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from conftest import OSCD_BANDS, make_oscd, smooth_field, write_geotiff
from core.change import default_model
from core.change.detection import load_feature_distance
from core.change.predict import predict_probability
from core.change.training import load_change_model
from core.cli import main
from core.io.normalization import BandStats


@pytest.fixture(scope="module")
def change_model(tmp_path_factory) -> str:
    root = make_oscd(tmp_path_factory.mktemp("oscd"), cities=("alpha", "beta"))
    out = root.parent / "model"
    assert main(["finetune-change", "--data", str(root), "--out", str(out), "--cities", "alpha",
                 "--val-cities", "beta", "--steps", "2", "--batch-size", "2", "--patch-size", "32",
                 "--eval-every", "2"]) == 0
    return str(out)


def _pair(tmp_path, names=OSCD_BANDS, height=200, width=150):
    rng = np.random.default_rng(3)
    t1 = smooth_field(rng, len(OSCD_BANDS), max(height, width))[:, :height, :width]
    t2 = t1.copy()
    t2[:, 120:150, 40:90] += 800
    t2[:, :, :6] = 0  # nodata columns
    descriptions = list(names) if names else None
    return (write_geotiff(tmp_path / "t1.tif", t1, descriptions=descriptions),
            write_geotiff(tmp_path / "t2.tif", t2, descriptions=descriptions))


def test_streamed_detection_equals_whole_image_prediction(change_model, tmp_path) -> None:
    a, b = _pair(tmp_path)
    out, prob = tmp_path / "change.tif", tmp_path / "prob.tif"
    assert main(["detect", "--t1", str(a), "--t2", str(b), "--model", change_model, "--out", str(out),
                 "--probability", str(prob), "--tile", "64", "--overlap", "16", "--batch-size", "3"]) == 0
    model, config = load_change_model(change_model, torch.device("cpu"))
    stats = BandStats.from_dict(config["normalization"])
    with rasterio.open(a) as s1, rasterio.open(b) as s2:
        x1, x2 = s1.read().astype(np.float32), s2.read().astype(np.float32)
        grid = (s1.crs, s1.transform, s1.shape)
    valid = (x1 != 0).all(0) & (x2 != 0).all(0)
    expected = predict_probability(model, stats.apply(x1, valid), stats.apply(x2, valid), tile=64, overlap=16)
    with rasterio.open(out) as m, rasterio.open(prob) as p:
        assert (m.crs, m.transform, m.shape) == grid and m.nodata == 255
        mask, probability = m.read(1), p.read(1)
    assert np.isnan(probability[:, :6]).all() and (mask[:, :6] == 255).all()
    np.testing.assert_allclose(probability[:, 6:], expected[:, 6:], atol=1e-4)
    np.testing.assert_array_equal(mask[:, 6:] == 1, expected[:, 6:] > config["threshold"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change.tif", "prob.tif", "t1.tif", "t2.tif"]


def test_unnamed_bands_are_mapped_by_count_and_order(change_model, tmp_path, caplog) -> None:
    a, b = _pair(tmp_path, names=None, height=70, width=70)
    assert main(["detect", "--t1", str(a), "--t2", str(b), "--model", change_model,
                 "--out", str(tmp_path / "c.tif"), "--tile", "64"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("t1.tif" in w and "taking them in order as B02, B03, B04, B08" in w for w in warnings)
    with rasterio.open(tmp_path / "c.tif") as out:
        assert out.shape == (70, 70)


def test_band_count_mismatch_is_a_clear_error(change_model, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    a = write_geotiff(tmp_path / "a.tif", smooth_field(rng, 3, 64))
    b = write_geotiff(tmp_path / "b.tif", smooth_field(rng, 3, 64))
    code = main(["detect", "--t1", str(a), "--t2", str(b), "--model", change_model,
                 "--out", str(tmp_path / "c.tif"), "--events", "jsonl"])
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 2 and "expects 4 bands" in error["message"] and "a.tif" in error["message"]
    assert not (tmp_path / "c.tif").exists()


def test_without_model_and_without_the_default_model_the_fix_is_named(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(default_model, "DEFAULT_CHANGE_MODEL", tmp_path / "gone")
    code = main(["detect", "--t1", "a", "--t2", "b", "--out", str(tmp_path / "c.tif"), "--events", "jsonl"])
    message = json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert code == 2 and "make default-model" in message and "--model DIR" in message


@pytest.mark.parametrize("method", ["model", "features", "cva"])
def test_nan_pixels_and_nodata_stay_nodata(method, change_model, tmp_path) -> None:
    rng = np.random.default_rng(5)
    t1 = smooth_field(rng, 4, 96).astype(np.float32)
    t2 = t1 + 5.0
    t2[:, 40:60, 10:30] = np.nan  # a NaN hole in t2
    t1[:, :, :4] = -9999.0  # declared nodata in t1
    names = list(OSCD_BANDS)
    a = write_geotiff(tmp_path / "t1.tif", t1, nodata=-9999.0, descriptions=names)
    b = write_geotiff(tmp_path / "t2.tif", t2, nodata=None, descriptions=names)
    out, score = tmp_path / "change.tif", tmp_path / "score.tif"
    model = ["--model", change_model] if method != "cva" else []
    assert main(["detect", "--method", method, *model, "--t1", str(a), "--t2", str(b), "--out", str(out),
                 "--probability", str(score), "--tile", "64", "--overlap", "8"]) == 0
    with rasterio.open(out) as m, rasterio.open(score) as s:
        mask, values = m.read(1), s.read(1)
    hole = np.zeros(mask.shape, bool)
    hole[40:60, 10:30] = True
    hole[:, :4] = True
    assert (mask[hole] == 255).all() and np.isnan(values[hole]).all()
    assert (mask[~hole] != 255).all() and np.isfinite(values[~hole]).all()


@pytest.mark.parametrize("method", ["model", "features", "cva"])
def test_rasters_without_a_shared_valid_pixel_are_refused(method, change_model, tmp_path, capsys) -> None:
    rng = np.random.default_rng(6)
    t1 = smooth_field(rng, 4, 80)
    a = write_geotiff(tmp_path / "t1.tif", t1, descriptions=list(OSCD_BANDS))
    b = write_geotiff(tmp_path / "t2.tif", np.zeros_like(t1), descriptions=list(OSCD_BANDS))  # all nodata
    model = ["--model", change_model] if method != "cva" else []
    code = main(["detect", "--method", method, *model, "--t1", str(a), "--t2", str(b),
                 "--out", str(tmp_path / "c.tif"), "--probability", str(tmp_path / "p.tif"), "--events", "jsonl"])
    message = json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert code == 2 and "t2.tif" in message and "valid pixel" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.tif", "t2.tif"]


def test_feature_distance_streamed_equals_whole_image(change_model, tmp_path) -> None:
    a, b = _pair(tmp_path)
    out, score = tmp_path / "change.tif", tmp_path / "score.tif"
    assert main(["detect", "--method", "features", "--t1", str(a), "--t2", str(b), "--model", change_model,
                 "--out", str(out), "--score", str(score), "--tile", "64", "--overlap", "16"]) == 0
    model, config = load_feature_distance(change_model, torch.device("cpu"))
    stats = BandStats.from_dict(config["normalization"])
    with rasterio.open(a) as s1, rasterio.open(b) as s2:
        x1, x2 = s1.read().astype(np.float32), s2.read().astype(np.float32)
    valid = (x1 != 0).all(0) & (x2 != 0).all(0)
    expected = predict_probability(model, stats.apply(x1, valid), stats.apply(x2, valid), tile=64, overlap=16)
    with rasterio.open(out) as m, rasterio.open(score) as s:
        mask, values, threshold = m.read(1), s.read(1), float(m.tags()["threshold"])
        assert m.tags()["method"] == "features"
    np.testing.assert_allclose(values[:, 6:], expected[:, 6:], atol=1e-4)
    assert (mask[:, :6] == 255).all() and 0.0 < threshold < 2.0
    planted = mask[120:150, 40:90] == 1
    assert planted.mean() > 3 * (mask[:100, 100:] == 1).mean()  # the planted block stands out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change.tif", "score.tif", "t1.tif", "t2.tif"]


@pytest.mark.parametrize("case,expect", [
    ("empty", "not a SwiMDiff model folder"),
    ("truncated", "truncated or corrupted"),
    ("pretrain_kind", "expected 'swimdiff-change'"),
])
def test_a_model_folder_that_is_not_a_change_model_is_refused(case, expect, change_model, tmp_path, capsys) -> None:
    import shutil

    a, b = _pair(tmp_path, height=64, width=64)
    model = tmp_path / "model"
    shutil.copytree(change_model, model)
    if case == "empty":
        for f in model.iterdir():
            f.unlink()
    elif case == "truncated":
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    else:
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "kind": "swimdiff-pretrain"}))
    out = tmp_path / "c.tif"
    code = main(["detect", "--t1", str(a), "--t2", str(b), "--model", str(model), "--out", str(out),
                 "--events", "jsonl"])
    message = json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert code == 2 and expect in message and "model" in message and not out.exists()
