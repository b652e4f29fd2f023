"""Self-training: pseudo-labels made from probabilities, written on a city's grid, trained on by finetune-change."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import rasterio
import torch

from conftest import make_oscd
from core.change.pseudo import (
    label_unlabelled_cities,
    load_pseudo_cities,
    pseudo_label,
    pseudo_label_cities,
    write_pseudo_label,
)
from core.cli import main
from core.errors import RasterReadError
from core.io.normalization import BandStats
from core.models.siamese import SiameseUNet


def test_pseudo_label_keeps_only_confident_pixels() -> None:
    prob = np.array([[0.01, 0.04, 0.05, 0.3], [0.49, 0.5, 0.9, np.nan]], dtype=np.float32)
    assert pseudo_label(prob, negative=0.05, positive=0.5).tolist() == [[0, 0, 255, 255], [255, 1, 1, 255]]


def _unlabel(root, city: str) -> None:
    """Make ``city`` of a synthetic OSCD root an unlabelled one, as OSCD's test cities are."""
    shutil.rmtree(root / "labels" / city)


def test_pseudo_cities_are_read_on_the_city_grid(tmp_path) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha", "gamma"))
    _unlabel(root, "gamma")
    folder = tmp_path / "pseudo"
    folder.mkdir()
    label = np.zeros((64, 64), dtype=np.uint8)
    label[10:30, 20:44], label[40:, :] = 1, 255
    write_pseudo_label(label, root / "images" / "gamma" / "imgs_1" / "T00_B02.tif", folder / "gamma.tif")
    with rasterio.open(folder / "gamma.tif") as ds:
        assert ds.crs is not None and ds.nodata == 255 and ds.dtypes == ("uint8",)
    assert not list(folder.glob(".*partial"))
    assert pseudo_label_cities(folder) == ["gamma"]
    stats = BandStats(["B02", "B03"], [1000.0, 1000.0], [300.0, 300.0])
    [stack] = load_pseudo_cities(root, folder, ["B02", "B03"], stats)
    assert stack.name == "gamma (pseudo)" and stack.x1.shape == (2, 64, 64)
    assert np.array_equal(stack.label, label)


def _constant_model(probability: float) -> SiameseUNet:
    """A change model that gives ``probability`` everywhere (its head ignores the features)."""
    model = SiameseUNet(in_chans=2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(math.log(probability / (1 - probability)))
    return model.eval()


def test_an_ensemble_teacher_labels_with_its_mean_probability(tmp_path) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha", "gamma"))
    _unlabel(root, "gamma")
    config = {"bands": ["B02", "B03"], "normalization": BandStats(["B02", "B03"], [1000.0] * 2, [300.0] * 2).to_dict()}
    sure, doubtful = _constant_model(0.9), _constant_model(0.02)

    def labels(teacher, folder: str) -> np.ndarray:
        [path] = label_unlabelled_cities(teacher, config, root, tmp_path / folder)
        assert path.name == "gamma.tif"  # labelled cities are never pseudo-labelled
        with rasterio.open(path) as ds:
            return ds.read(1)

    assert (labels(sure, "one") == 1).all()
    assert (labels([doubtful], "list") == 0).all()
    assert (labels([sure, doubtful], "both") == 255).all()  # mean 0.46: neither confident change nor no change


def test_pseudo_labels_of_another_grid_or_an_empty_folder_are_refused(tmp_path) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha",))
    with pytest.raises(RasterReadError, match="holds no <city>.tif"):
        pseudo_label_cities(tmp_path)
    folder = tmp_path / "pseudo"
    folder.mkdir()
    write_pseudo_label(np.zeros((64, 64), np.uint8), root / "images" / "alpha" / "imgs_1" / "T00_B02.tif",
                       folder / "alpha.tif")
    with rasterio.open(folder / "alpha.tif", "r+") as ds:
        profile = ds.profile
    profile.update(width=32, height=32)
    with rasterio.open(folder / "alpha.tif", "w", **profile) as ds:
        ds.write(np.zeros((1, 32, 32), np.uint8))
    stats = BandStats(["B02"], [1000.0], [300.0])
    with pytest.raises(RasterReadError, match="32x32 px but the B02 grid"):
        load_pseudo_cities(root, folder, ["B02"], stats)


def test_finetune_change_trains_on_pseudo_labelled_cities(tmp_path) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha", "beta", "gamma"))
    _unlabel(root, "gamma")
    folder = tmp_path / "pseudo"
    folder.mkdir()
    label = np.full((64, 64), 255, dtype=np.uint8)
    label[10:30, 20:44], label[40:, :] = 1, 0
    write_pseudo_label(label, root / "images" / "gamma" / "imgs_1" / "T00_B02.tif", folder / "gamma.tif")
    out = tmp_path / "model"
    assert main(["finetune-change", "--data", str(root), "--out", str(out), "--cities", "alpha",
                 "--val-cities", "beta", "--pseudo-labels", str(folder), "--steps", "2", "--batch-size", "2",
                 "--patch-size", "32", "--eval-every", "2"]) == 0
    provenance = json.loads((out / "config.json").read_text())["provenance"]
    assert provenance["pseudo_cities"] == ["gamma (pseudo)"] and provenance["pseudo_labels"] == str(folder)
    assert provenance["val_cities"] == ["beta"]


def test_the_stable_vegetation_rule_makes_green_pixels_pseudo_negatives(tmp_path) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha", "gamma"))
    _unlabel(root, "gamma")
    for date in ("imgs_1", "imgs_2"):  # the left half green at both dates: NDVI (3000 - 500) / 3500 = 0.71
        for band, green in (("B04", 500), ("B08", 3000)):
            path = root / "images" / "gamma" / date / f"T00_{band}.tif"
            with rasterio.open(path, "r+") as ds:
                data = ds.read(1)
                data[:, :32] = green
                data[:, 32:] = 2000  # NDVI 0 on the right
                ds.write(data, 1)
    config = {"bands": ["B02", "B03"], "normalization": BandStats(["B02", "B03"], [1000.0] * 2, [300.0] * 2).to_dict()}
    [path] = label_unlabelled_cities(_constant_model(0.9), config, root, tmp_path / "pl", vegetation=0.15)
    with rasterio.open(path) as ds:
        label = ds.read(1)
    assert (label[:, :32] == 0).all() and (label[:, 32:] == 1).all()
