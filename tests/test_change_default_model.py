"""The change model shipped in resources/models/oscd-change: small, documented, used without --model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from bench.bench_cv import CITIES
from conftest import smooth_field, write_geotiff
from core.change.default_model import DEFAULT_CHANGE_MODEL
from core.change.metrics import count_changes
from core.change.oscd import oscd_cities, read_change_mask
from core.cli import main

CONFIG = json.loads((DEFAULT_CHANGE_MODEL / "config.json").read_text())


def test_the_default_model_is_small_and_records_how_it_was_made() -> None:
    assert (DEFAULT_CHANGE_MODEL / "model.safetensors").stat().st_size <= 32 * 2**20
    assert CONFIG["kind"] == "swimdiff-change" and len(CONFIG["bands"]) == CONFIG["architecture"]["in_chans"]
    provenance, metrics = CONFIG["provenance"], CONFIG["metrics"]
    assert provenance["encoder_provenance"]["steps_done"] > 0
    assert sorted(provenance["train_cities"]) == sorted(CITIES)  # all the labelled data
    assert "make default-model" in provenance["recreate"]
    # its quality claim is cross-validated: every city scored by a fold model that never saw it
    assert 0.0 < metrics["cv_f1"] <= 1.0 and sorted(metrics["cv_per_city"]) == sorted(CITIES)
    assert len(metrics["cv_f1_per_seed"]) == len(metrics["cv_seeds"]) >= 2  # a spread, not one lucky seed
    assert min(metrics["cv_f1_per_seed"]) <= metrics["cv_f1"] <= max(metrics["cv_f1_per_seed"])
    assert "out-of-fold" in metrics["threshold_rule"] and 0.0 < CONFIG["threshold"] < 1.0


def test_detect_without_model_uses_the_default_model(tmp_path) -> None:
    rng = np.random.default_rng(0)
    t1 = smooth_field(rng, len(CONFIG["bands"]), 96)
    t2 = t1.copy()
    t2[:, 30:60, 30:60] = 3000
    a = write_geotiff(tmp_path / "a.tif", t1, descriptions=CONFIG["bands"])
    b = write_geotiff(tmp_path / "b.tif", t2, descriptions=CONFIG["bands"])
    assert main(["detect", "--t1", str(a), "--t2", str(b), "--out", str(tmp_path / "c.tif")]) == 0
    with rasterio.open(tmp_path / "c.tif") as out:
        assert out.tags()["model"] == str(DEFAULT_CHANGE_MODEL)
        assert float(out.tags()["threshold"]) == pytest.approx(CONFIG["threshold"], abs=1e-3)


@pytest.mark.realdata
def test_default_model_on_a_city_scores_as_recorded(shared_data, tmp_path) -> None:
    city = "nantes"  # a training city: the recorded score is in-sample; detect must reproduce evaluate's
    images = shared_data / "oscd" / "images" / city
    out = tmp_path / "change.tif"
    assert main(["detect", "--t1", str(images / "imgs_1"), "--t2", str(images / "imgs_2"), "--out", str(out)]) == 0
    with rasterio.open(out) as result:
        mask = result.read(1)
    label = read_change_mask(oscd_cities(shared_data / "oscd", [city])[0], *mask.shape)
    f1 = count_changes(mask == 1, label).f1
    scores = json.loads((DEFAULT_CHANGE_MODEL / "training-scores.json").read_text())
    assert scores["cities"][city]["role"] == "training"
    assert f1 == pytest.approx(scores["cities"][city]["f1"], abs=0.02)
