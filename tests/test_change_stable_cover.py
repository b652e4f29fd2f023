"""The stable-cover rules: pixels green at both dates, or open water at both dates, get change probability 0 in
detect, evaluate and adapt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_change_adapt import ORIGIN, drawn, tiny_change_model

from conftest import run_cli, smooth_field, write_geotiff
from core.change.stable_cover import (
    VEGETATION,
    WATER,
    StableCover,
    StableRule,
    cover_rule,
    normalised_difference,
    stable_cover,
)

BANDS = ("B02", "B03", "B04", "B08", "B11")
B02, B03, B04, B08, B11 = 0, 1, 2, 3, 4
STABLE = (slice(20, 60), slice(10, 50))  # rows, cols: the cover at both dates
LOST = (slice(70, 90), slice(10, 50))  # the cover at t1 only: a cover lost is change the rule leaves alone
CUTS = {"vegetation": 0.3, "water": 0.5}


def test_the_indices_and_the_mask_need_the_cover_at_both_dates() -> None:
    red = np.array([[500.0, 1000.0, 0.0]])
    nir = np.array([[3000.0, 1000.0, 0.0]])
    np.testing.assert_allclose(normalised_difference(nir, red), [[2500 / 3500, 0.0, 0.0]], rtol=1e-6)
    rule = StableRule(VEGETATION, a=1, b=0, cut=0.3)
    green, bare = np.stack([red, nir]), np.stack([nir, red])  # (2, 1, 3): NDVI 0.71 / -0.71 in the first pixel
    assert rule.mask(green, green).tolist() == [[True, False, False]]
    assert rule.mask(green, bare).tolist() == [[False, False, False]]
    prob = np.array([[0.9, 0.9, np.nan]], dtype=np.float32)
    rules = StableCover((rule,))
    assert rules.apply(prob, green, green)[0, :2].tolist() == [0.0, pytest.approx(0.9)]
    assert np.isnan(rules.apply(prob, green, green)[0, 2])


def test_the_rules_add_up() -> None:
    """Where either cover is there at both dates the probability is 0; the tags and the log name both rules."""
    x = np.zeros((5, 1, 3), dtype=np.float32)
    x[B04], x[B08] = [[400, 1000, 1000]], [[2600, 1000, 100]]  # pixel 0 green
    x[B03], x[B11] = [[800, 800, 900]], [[900, 900, 50]]  # pixel 2 open water (MNDWI 0.89)
    both = StableCover((cover_rule(VEGETATION, BANDS, 0.3), cover_rule(WATER, BANDS, 0.5)))  # type: ignore[arg-type]
    assert both.mask(x, x).tolist() == [[True, False, True]]
    assert both.tags() == {"stable_vegetation_ndvi": "0.3", "stable_water_mndwi": "0.5"}
    assert both.describe() == "green at both dates (NDVI > 0.3) or open water at both dates (MNDWI > 0.5)"


def test_a_model_carries_the_rules_only_with_their_bands() -> None:
    config = {VEGETATION.config_key: 0.15, WATER.config_key: 0.6}
    assert stable_cover({"threshold": 0.3}, BANDS) is None
    assert stable_cover(config, ["B02", "B03"]) is None
    assert stable_cover(config, BANDS[:4]) == StableCover((StableRule(VEGETATION, a=3, b=2, cut=0.15),))
    assert stable_cover(config, BANDS) == StableCover((StableRule(VEGETATION, a=3, b=2, cut=0.15),
                                                       StableRule(WATER, a=1, b=4, cut=0.6)))
    assert stable_cover(config, BANDS, keep=["vegetation"]) == StableCover((StableRule(WATER, a=1, b=4, cut=0.6),))
    assert stable_cover(config, BANDS, keep=["vegetation", "water"]) is None


def _paint(date: np.ndarray, where: tuple[slice, slice], cover: str) -> None:
    if cover == "vegetation":
        date[B04][where], date[B08][where] = 400, 2600
    else:  # open water: bright in green, dark in short-wave infrared
        date[B03][where], date[B11][where] = 1200, 100


def stable_pair(folder: Path, cover: str) -> tuple[Path, Path]:
    """Two 5-band dates (``BANDS``) of 96 x 96 px with ``cover`` at both dates (``STABLE``; its colour changes, as a
    field with the seasons or a river with its silt), at t1 only (``LOST``), and a new bright block elsewhere."""
    rng = np.random.default_rng(5)
    t1 = smooth_field(rng, len(BANDS), 96)
    t1[B08], t1[B11] = t1[B04], t1[B03] * 2  # neither green nor water anywhere
    t2 = t1.copy()
    for date in (t1, t2):
        _paint(date, STABLE, cover)
    t2[B02][STABLE] += 700  # the stable cover changes colour
    _paint(t1, LOST, cover)
    t2[:, 5:15, 60:80] += 900
    folder.mkdir(parents=True, exist_ok=True)
    return (write_geotiff(folder / "t1.tif", t1, descriptions=BANDS, origin=ORIGIN, nodata=None),
            write_geotiff(folder / "t2.tif", t2, descriptions=BANDS, origin=ORIGIN, nodata=None))


def with_rules(model: Path, rules: dict[str, float]) -> Path:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **rules}))
    return model


def _detect(t1: Path, t2: Path, model: Path, out: Path, capsys, *extra: str) -> tuple[np.ndarray, dict]:
    out.mkdir()
    code, events = run_cli(["detect", "--t1", str(t1), "--t2", str(t2), "--model", str(model), "--out",
                            str(out / "change.tif"), "--probability", str(out / "prob.tif"), "--tile", "64", *extra],
                           capsys)
    assert code == 0, events[-1]
    with rasterio.open(out / "prob.tif") as ds:
        return ds.read(1), ds.tags()


@pytest.mark.parametrize("cover", [VEGETATION, WATER], ids=lambda c: c.name)
def test_detect_gives_a_stable_cover_probability_zero_unless_told_to_keep_it(cover, tmp_path, capsys) -> None:
    t1, t2 = stable_pair(tmp_path / "pair", cover.name)
    model = with_rules(tiny_change_model(tmp_path / "model", BANDS),
                       {VEGETATION.config_key: CUTS["vegetation"], WATER.config_key: CUTS["water"]})
    ruled, tags = _detect(t1, t2, model, tmp_path / "ruled", capsys)
    kept, kept_tags = _detect(t1, t2, model, tmp_path / "kept", capsys, f"--keep-{cover.name}")
    assert (ruled[STABLE] == 0).all() and (kept[STABLE] > 0).all()
    outside = np.ones(ruled.shape, dtype=bool)
    outside[STABLE] = False
    np.testing.assert_allclose(ruled[outside], kept[outside], atol=1e-6)  # the cover lost (LOST) is scored as usual
    cut = f"{CUTS[cover.name]:g}"
    assert tags[cover.config_key] == cut and cover.config_key not in kept_tags
    with rasterio.open(tmp_path / "ruled" / "change.tif") as ds:
        assert ds.tags()[cover.config_key] == cut and (ds.read(1)[STABLE] == 0).all()


@pytest.mark.parametrize("cover", ["vegetation", "water"])
def test_keep_a_cover_is_refused_without_a_model(cover, tmp_path, capsys) -> None:
    t1, t2 = stable_pair(tmp_path, cover)
    code, events = run_cli(["detect", "--t1", str(t1), "--t2", str(t2), "--method", "cva", "--out",
                            str(tmp_path / "c.tif"), f"--keep-{cover}"], capsys)
    assert code == 2 and f"--keep-{cover} is only used with --method model" in events[-1]["message"]
    assert not (tmp_path / "c.tif").exists()


@pytest.mark.parametrize("keep", [[], ["water"], ["vegetation", "water"]])
def test_adapt_keeps_the_rules_of_its_starting_model_unless_told_not_to(keep, tmp_path, capsys) -> None:
    t1, t2 = stable_pair(tmp_path / "pair", "vegetation")
    start = with_rules(tiny_change_model(tmp_path / "start", BANDS),
                       {VEGETATION.config_key: 0.3, WATER.config_key: 0.5})
    code, events = run_cli(["adapt", "--t1", str(t1), "--t2", str(t2), "--labels", str(drawn(tmp_path)), "--model",
                            str(start), "--out", str(tmp_path / "out"), "--steps", "2", "--batch-size", "2",
                            *(f"--keep-{c}" for c in keep)], capsys)
    assert code == 0, events[-1]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get(VEGETATION.config_key) == (None if "vegetation" in keep else 0.3)
    assert config.get(WATER.config_key) == (None if "water" in keep else 0.5)


def test_validation_scores_what_detect_gives() -> None:
    import torch
    from test_change_pseudo import _constant_model

    from core.change.patches import CityStack
    from core.change.training import stack_probability

    x = np.zeros((2, 32, 32), dtype=np.float32)
    stable = np.zeros((32, 32), dtype=bool)
    stable[:10] = True
    city = CityStack("c", x, x, np.zeros((32, 32), dtype=np.uint8), stable)
    prob = stack_probability(_constant_model(0.8), city, torch.device("cpu"))
    assert (prob[:10] == 0).all() and np.allclose(prob[10:], 0.8, atol=1e-5)
