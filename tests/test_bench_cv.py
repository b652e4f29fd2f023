"""Pieces of the cross-validation bench (bench/bench_cv.py): folds, out-of-fold thresholds, the weight soup."""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest
import rasterio
import torch
from test_change_adapt import tiny_change_model

from bench.bench_cv import (
    CITIES,
    FOLDS,
    oof_rules,
    oof_thresholds,
    pseudo_labels,
    rule_counts,
    shipping_rule,
    shipping_threshold,
    soup,
    vegetation_only,
)
from conftest import make_oscd
from core.change.metrics import ChangeCounts
from core.change.training import CHANGE_KIND
from core.checkpoint import load_model, save_model


def test_every_labelled_city_is_held_out_exactly_once() -> None:
    assert len(FOLDS) == 5 and all(len(fold) == 2 for fold in FOLDS)
    assert sorted(CITIES) == sorted(set(CITIES)) and len(CITIES) == 10


def test_a_citys_threshold_is_chosen_on_the_other_folds_cities_only() -> None:
    rng = np.random.default_rng(0)
    truth = {c: (rng.random((40, 40)) < 0.2).astype(np.uint8) for c in CITIES}
    # every city's changes score 0.7 and the rest 0.2 (best cut: between them), but mumbai's changes score 0.95
    # and its background 0.8: were mumbai's own labels used, its fold's cut would move up
    prob = {c: np.where(truth[c] == 1, 0.7, 0.2) for c in CITIES}
    prob["mumbai"] = np.where(truth["mumbai"] == 1, 0.95, 0.8)
    chosen = oof_thresholds(prob, truth)
    assert set(chosen) == set(CITIES)
    assert 0.2 <= chosen["mumbai"] < 0.7  # chosen on the other eight cities, blind to mumbai's own scores
    assert chosen["mumbai"] == chosen["nantes"]  # one threshold per fold
    # the other folds see mumbai's scores among eight cities: with 0.95/0.8 mixed in the best cut still separates
    assert all(0.2 <= t < 0.95 for t in chosen.values())


def test_a_soup_of_two_fold_models_averages_their_weights(tmp_path) -> None:
    state, config = load_model(tiny_change_model(tmp_path / "a"), kind=CHANGE_KIND)
    shifted = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    save_model(tmp_path / "b", shifted, {k: v for k, v in config.items() if k != "format_version"})
    network, _ = soup([tmp_path / "a", tmp_path / "b"], torch.device("cpu"))
    souped = network.state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point() and "running" not in k)
    np.testing.assert_allclose(souped[key].numpy(), state[key].numpy() + 0.5, rtol=1e-5, atol=1e-5)
    integer = next((k for k, v in state.items() if not v.is_floating_point()), None)
    if integer:
        assert torch.equal(souped[integer], state[integer])


def test_pseudo_labels_cover_the_unlabelled_cities_only(tmp_path) -> None:
    root = make_oscd(tmp_path / "data" / "oscd", cities=("alpha", "gamma"))
    shutil.rmtree(root / "labels" / "gamma")  # an OSCD test city: images, no change mask
    tiny_change_model(tmp_path / "cv" / "default" / "fold0-s0")
    args = argparse.Namespace(data=str(tmp_path / "data"), out=str(tmp_path / "cv"), teacher="default",
                              teacher_seeds="", pseudo_negative=0.05, pseudo_positive=0.5,
                              pseudo_vegetation=None)
    folder = pseudo_labels(0, 0, args)
    assert sorted(p.name for p in folder.glob("*.tif")) == ["gamma.tif"] and (folder / "done").exists()
    with rasterio.open(folder / "gamma.tif") as ds:
        assert ds.shape == (64, 64) and set(np.unique(ds.read(1))) <= {0, 1, 255}
    assert pseudo_labels(0, 0, args) == folder  # made once
    args.teacher_seeds = "0,1"  # an ensemble teacher: every seed's model must exist
    with pytest.raises(SystemExit, match="fold0-s1"):
        pseudo_labels(0, 0, args)
    shutil.copytree(tmp_path / "cv" / "default" / "fold0-s0", tmp_path / "cv" / "default" / "fold0-s1")
    assert pseudo_labels(0, 0, args).parent.name == "fold0-ensemble-s0-1"
    args.pseudo_vegetation = 0.15  # the stable-vegetation rule on the labels: another folder, never mixed up
    assert pseudo_labels(0, 0, args).name == "pseudo-0.05-0.5-veg0.15"


def test_the_shipping_threshold_is_the_best_over_all_out_of_fold_cities() -> None:
    rng = np.random.default_rng(1)
    truth = {c: (rng.random((30, 30)) < 0.1).astype(np.uint8) for c in CITIES}
    prob = {c: np.where(truth[c] == 1, 0.42, 0.12) for c in CITIES}
    chosen = shipping_threshold(prob, truth)
    assert 0.12 <= chosen["threshold"] < 0.42 and chosen["pooled"]["f1"] == 1.0
    assert set(chosen["per_city"]) == set(CITIES)


def test_the_cover_cuts_are_chosen_out_of_fold_with_the_threshold() -> None:
    """Pixels green at both dates, or water at both dates, that the model calls changed are false alarms: the rules
    remove them, each cut chosen on the other folds' cities together with the threshold."""
    rng = np.random.default_rng(2)
    truth = {c: (rng.random((40, 40)) < 0.1).astype(np.uint8) for c in CITIES}
    green = {c: np.where(rng.random((40, 40)) < 0.3, 0.6, 0.05) for c in CITIES}  # min NDVI of the two dates
    water = {c: np.where(rng.random((40, 40)) < 0.2, 0.75, -0.3) for c in CITIES}  # min MNDWI of the two dates
    prob = {c: np.where((truth[c] == 1) | (green[c] > 0.5) | (water[c] > 0.5), 0.8, 0.1) for c in CITIES}
    for c in CITIES:  # real changes are never green, nor water, at both dates here
        green[c][truth[c] == 1], water[c][truth[c] == 1] = 0.05, -0.3
    index = {"vegetation": green, "water": water}
    per_city, rules = oof_rules(rule_counts(prob, truth, index))
    assert all(g is not None and g < 0.6 and w is not None and w < 0.75 for g, w, _ in rules)
    assert sum(per_city.values(), ChangeCounts()).f1 == 1.0 and set(per_city) == set(CITIES)
    vegetation_alone, rules = oof_rules(vegetation_only(rule_counts(prob, truth, index)))
    assert all(w is None for _, w, _ in rules) and sum(vegetation_alone.values(), ChangeCounts()).f1 < 1.0
    assert shipping_threshold(prob, truth)["pooled"]["f1"] < 0.8  # without the rules the stable pixels stay
    shipped = shipping_rule(rule_counts(prob, truth, index))
    assert shipped["stable_vegetation_ndvi"] is not None and shipped["stable_water_mndwi"] is not None
    assert shipped["pooled"]["f1"] == 1.0
