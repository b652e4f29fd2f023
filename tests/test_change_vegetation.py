"""The stable-vegetation rule: pixels green at both dates get change probability 0 in detect, evaluate and adapt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_change_adapt import BANDS, ORIGIN, drawn, tiny_change_model

from conftest import run_cli, smooth_field, write_geotiff
from core.change.vegetation import CONFIG_KEY, StableVegetation, ndvi, stable_vegetation

GREEN = (slice(20, 60), slice(10, 50))  # rows, cols green at both dates
LOST = (slice(70, 90), slice(10, 50))  # green at t1 only: vegetation lost is change the rule leaves alone


def test_ndvi_and_the_mask_need_green_at_both_dates() -> None:
    red = np.array([[500.0, 1000.0, 0.0]])
    nir = np.array([[3000.0, 1000.0, 0.0]])
    np.testing.assert_allclose(ndvi(red, nir), [[2500 / 3500, 0.0, 0.0]], rtol=1e-6)
    rule = StableVegetation(red=0, nir=1, cut=0.3)
    green, bare = np.stack([red, nir]), np.stack([nir, red])  # (2, 1, 3): NDVI 0.71 / -0.71 in the first pixel
    assert rule.mask(green, green).tolist() == [[True, False, False]]
    assert rule.mask(green, bare).tolist() == [[False, False, False]]
    prob = np.array([[0.9, 0.9, np.nan]], dtype=np.float32)
    assert rule.apply(prob, green, green)[0, :2].tolist() == [0.0, pytest.approx(0.9)]
    assert np.isnan(rule.apply(prob, green, green)[0, 2])


def test_a_model_carries_the_rule_only_with_its_bands() -> None:
    assert stable_vegetation({"threshold": 0.3}, BANDS) is None
    assert stable_vegetation({CONFIG_KEY: 0.15}, ["B02", "B03"]) is None
    assert stable_vegetation({CONFIG_KEY: 0.15}, BANDS) == StableVegetation(red=2, nir=3, cut=0.15)


def green_pair(folder: Path) -> tuple[Path, Path]:
    """Two 4-band dates (B02, B03, B04, B08) of 96 x 96 px with a field green at both dates (``GREEN``), one green
    at t1 only (``LOST``) and a new bright block elsewhere."""
    rng = np.random.default_rng(5)
    t1 = smooth_field(rng, len(BANDS), 96)
    t1[3] = t1[2]  # NDVI 0 everywhere
    t2 = t1.copy()
    for date in (t1, t2):
        date[2][GREEN], date[3][GREEN] = 400, 2600
    t1[2][LOST], t1[3][LOST] = 400, 2600
    t2[:, 5:15, 60:80] += 900
    folder.mkdir(parents=True, exist_ok=True)
    return (write_geotiff(folder / "t1.tif", t1, descriptions=BANDS, origin=ORIGIN, nodata=None),
            write_geotiff(folder / "t2.tif", t2, descriptions=BANDS, origin=ORIGIN, nodata=None))


def with_rule(model: Path, cut: float) -> Path:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, CONFIG_KEY: cut}))
    return model


def _detect(t1: Path, t2: Path, model: Path, out: Path, capsys, *extra: str) -> tuple[np.ndarray, dict]:
    code, events = run_cli(["detect", "--t1", str(t1), "--t2", str(t2), "--model", str(model), "--out",
                            str(out / "change.tif"), "--probability", str(out / "prob.tif"), "--tile", "64", *extra],
                           capsys)
    assert code == 0, events[-1]
    with rasterio.open(out / "prob.tif") as ds:
        return ds.read(1), ds.tags()


def test_detect_gives_green_at_both_dates_probability_zero_unless_told_to_keep_it(tmp_path, capsys) -> None:
    t1, t2 = green_pair(tmp_path / "pair")
    model = with_rule(tiny_change_model(tmp_path / "model"), 0.3)
    (tmp_path / "ruled").mkdir()
    (tmp_path / "kept").mkdir()
    ruled, tags = _detect(t1, t2, model, tmp_path / "ruled", capsys)
    kept, kept_tags = _detect(t1, t2, model, tmp_path / "kept", capsys, "--keep-vegetation")
    assert (ruled[GREEN] == 0).all() and (kept[GREEN] > 0).all()
    outside = np.ones(ruled.shape, dtype=bool)
    outside[GREEN] = False
    np.testing.assert_allclose(ruled[outside], kept[outside], atol=1e-6)  # vegetation lost (LOST) is scored as usual
    assert tags[CONFIG_KEY] == "0.3" and CONFIG_KEY not in kept_tags
    with rasterio.open(tmp_path / "ruled" / "change.tif") as ds:
        assert ds.tags()[CONFIG_KEY] == "0.3" and (ds.read(1)[GREEN] == 0).all()


def test_keep_vegetation_is_refused_without_a_model(tmp_path, capsys) -> None:
    t1, t2 = green_pair(tmp_path)
    code, events = run_cli(["detect", "--t1", str(t1), "--t2", str(t2), "--method", "cva", "--out",
                            str(tmp_path / "c.tif"), "--keep-vegetation"], capsys)
    assert code == 2 and "--keep-vegetation is only used with --method model" in events[-1]["message"]
    assert not (tmp_path / "c.tif").exists()


@pytest.mark.parametrize("keep", [False, True])
def test_adapt_keeps_the_rule_of_its_starting_model_unless_told_not_to(keep, tmp_path, capsys) -> None:
    t1, t2 = green_pair(tmp_path / "pair")
    start = with_rule(tiny_change_model(tmp_path / "start"), 0.3)
    code, events = run_cli(["adapt", "--t1", str(t1), "--t2", str(t2), "--labels", str(drawn(tmp_path)), "--model",
                            str(start), "--out", str(tmp_path / "out"), "--steps", "2", "--batch-size", "2",
                            *(["--keep-vegetation"] if keep else [])], capsys)
    assert code == 0, events[-1]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get(CONFIG_KEY) == (None if keep else 0.3)


def test_validation_scores_what_detect_gives() -> None:
    import torch
    from test_change_pseudo import _constant_model

    from core.change.patches import CityStack
    from core.change.training import stack_probability

    x = np.zeros((2, 32, 32), dtype=np.float32)
    green = np.zeros((32, 32), dtype=bool)
    green[:10] = True
    city = CityStack("c", x, x, np.zeros((32, 32), dtype=np.uint8), green)
    prob = stack_probability(_constant_model(0.8), city, torch.device("cpu"))
    assert (prob[:10] == 0).all() and np.allclose(prob[10:], 0.8, atol=1e-5)
