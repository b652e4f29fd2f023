"""Relative radiometric normalisation: t2 mapped onto t1 before a matching model sees the pair, the same way in
training, detection, evaluation and adapting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from test_change_adapt import drawn, make_pair, tiny_change_model

from conftest import OSCD_BANDS, make_oscd, run_cli, smooth_field, write_geotiff
from core.change.matching import DateMatch, match_dates, match_pair
from core.change.oscd import oscd_cities
from core.change.pair import open_pair
from core.change.patches import load_city
from core.change.predict import predict_probability
from core.change.training import load_change_model
from core.checkpoint import load_model, save_model
from core.cli import main
from core.io.normalization import BandStats


def test_a_global_gain_and_offset_between_the_dates_is_undone() -> None:
    rng = np.random.default_rng(0)
    x1 = smooth_field(rng, 3, 80)
    gain, offset = np.array([1.3, 0.7, 1.0]), np.array([200.0, -50.0, 400.0])
    x2 = x1 * gain[:, None, None] + offset[:, None, None]
    x2[:, 10:20, 10:20] += 3000  # a real change on 1.6 % of the pixels barely moves the mapping
    valid = np.ones((80, 80), dtype=bool)
    valid[:, :5] = False
    x2[:, :, :5] = 0  # nodata in both dates is left out of the statistics
    matched = match_dates(x1, x2, valid).apply(x2)
    outside = valid.copy()
    outside[10:20, 10:20] = False
    assert np.abs(matched - x1)[:, outside].mean() < 0.02 * np.abs(x1).mean()
    assert (matched[:, 10:20, 10:20] - x1[:, 10:20, 10:20]).mean() > 1500  # the change stays a change


def test_batched_windows_and_no_shared_pixel() -> None:
    rng = np.random.default_rng(1)
    x1 = smooth_field(rng, 2, 32)[None].repeat(3, 0)  # (3, 2, 32, 32)
    match = match_dates(x1, x1 * 2 + 5, np.ones((3, 32, 32), dtype=bool))
    np.testing.assert_allclose(match.gain, 0.5, rtol=1e-6)
    np.testing.assert_allclose(match.apply(x1 * 2 + 5), x1, rtol=1e-5, atol=1e-3)
    identity = match_dates(x1, x1, np.zeros((3, 32, 32), dtype=bool))
    assert np.array_equal(identity.gain, [1, 1]) and np.array_equal(identity.offset, [0, 0])
    assert DateMatch(np.array([2.0]), np.array([1.0])).to_dict() == {"gain": [2.0], "offset": [1.0]}


def test_detection_reads_the_same_mapping_as_training(tmp_path) -> None:
    rng = np.random.default_rng(2)
    t1 = smooth_field(rng, len(OSCD_BANDS), 200)
    t2 = t1 * 1.2 + 300
    a = write_geotiff(tmp_path / "a.tif", t1, descriptions=list(OSCD_BANDS))
    b = write_geotiff(tmp_path / "b.tif", t2, descriptions=list(OSCD_BANDS))
    pair = open_pair(a, b, list(OSCD_BANDS), (), "sentinel2_dn")
    whole = match_dates(t1, t2, np.ones((200, 200), dtype=bool))
    sampled = match_pair(pair)
    np.testing.assert_allclose(sampled.gain, whole.gain, rtol=0.02)
    np.testing.assert_allclose(sampled.apply(t2), t1, rtol=0.02, atol=20)


@pytest.fixture(scope="module")
def matching_model(tmp_path_factory) -> tuple:
    root = make_oscd(tmp_path_factory.mktemp("oscd"), cities=("alpha", "beta"))
    out = tmp_path_factory.mktemp("matching") / "model"
    assert main(["finetune-change", "--data", str(root), "--out", str(out), "--cities", "alpha", "--val-cities",
                 "beta", "--match-dates", "--steps", "2", "--batch-size", "2", "--patch-size", "32",
                 "--eval-every", "2"]) == 0
    return root, out


def test_a_model_trained_on_matched_dates_says_so_and_detect_matches(matching_model, tmp_path) -> None:
    root, model = matching_model
    config = json.loads((model / "config.json").read_text())
    assert config["match_dates"] is True
    images = root / "images" / "beta"
    out, prob = tmp_path / "c.tif", tmp_path / "p.tif"
    assert main(["detect", "--t1", str(images / "imgs_1"), "--t2", str(images / "imgs_2"), "--model", str(model),
                 "--out", str(out), "--probability", str(prob)]) == 0


    network, _ = load_change_model(model, torch.device("cpu"))
    city = oscd_cities(root, ["beta"])[0]
    stack = load_city(city, config["bands"], BandStats.from_dict(config["normalization"]), match=True)
    expected = predict_probability(network, stack.x1, stack.x2)
    with rasterio.open(prob) as ds:
        written = ds.read(1)
    # detection estimates the mapping from a lattice of windows, training from the whole city: nearly equal
    assert np.nanmean(np.abs(written - expected)) < 0.02
    unmatched = load_city(city, config["bands"], BandStats.from_dict(config["normalization"]), match=False)
    assert not np.allclose(unmatched.x2, stack.x2)


def test_a_model_adapted_from_a_matching_model_matches_too(tmp_path, capsys) -> None:
    t1, t2 = make_pair(tmp_path)
    weights, config = load_model(tiny_change_model(tmp_path / "start"), kind="swimdiff-change")
    save_model(tmp_path / "matching", weights, {**{k: v for k, v in config.items() if k != "format_version"},
                                                "match_dates": True})
    out = tmp_path / "adapted"
    code, events = run_cli(["adapt", "--t1", str(t1), "--t2", str(t2), "--labels", str(drawn(tmp_path)), "--model",
                            str(tmp_path / "matching"), "--out", str(out), "--steps", "2", "--batch-size", "2",
                            "--eval-every", "2"], capsys)
    assert code == 0, events[-1]
    assert json.loads((out / "config.json").read_text())["match_dates"] is True
