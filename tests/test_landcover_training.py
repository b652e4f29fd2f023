"""Land-cover classification: patch loaders, band mapping, metrics and ``swimdiff finetune-classify``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_rgb_classes, smooth_field, write_geotiff, write_png
from core.checkpoint import load_model
from core.cli import main
from core.config import ClassifyConfig
from core.errors import BandMismatchError
from core.history import read_csv
from core.io.band_mapping import map_bands
from core.io.bands import SENTINEL2_L2A_BANDS
from core.io.normalization import BandStats
from core.landcover.metrics import average_precision, micro_map, multi_label_scores, single_label_scores
from core.landcover.patches import EUROSAT_MS_BANDS, load_patches
from core.landcover.training import (
    CLASSIFY_KIND,
    batch_slices,
    finetune_classify,
    load_classifier,
    normalise,
    split_indices,
)

CLASSIFICATION = Path("classification")
TINY_PRETRAIN = ["--steps", "2", "--batch-size", "4", "--patch-size", "32", "--queue-size", "16",
                 "--log-every", "1", "--num-workers", "0", "--device", "cpu"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second thread only adds synchronisation, which costs 10-40x when another
    job keeps the 2 cores busy (measured). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- generated data ---------------------------------------------------------------------------------------------

def make_bigearthnet(root: Path, labels: list[list[str]], size: int = 24) -> Path:
    """BigEarthNet-style patch folders: B02 at 10 m, B05 at 20 m, B01 at 60 m, and a labels JSON each."""
    rng = np.random.default_rng(1)
    for n, names in enumerate(labels):
        name = f"S2A_MSIL2A_2017_{n}_{n}"
        folder = root / name
        folder.mkdir(parents=True)
        for band, pixel in (("B02", 10), ("B05", 20), ("B01", 60)):
            data = smooth_field(rng, 1, size * 10 // pixel) if band != "B01" else np.full((1, 4, 4), 700, "uint16")
            write_geotiff(folder / f"{name}_{band}.tif", data, pixel=float(pixel), nodata=None)
        (folder / f"{name}_labels_metadata.json").write_text(json.dumps({"labels": names}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny 12-band (L2A) ``swimdiff pretrain`` model on generated rasters."""
    root = tmp_path_factory.mktemp("pretrain")
    (root / "scene").mkdir()
    for i in range(2):
        write_geotiff(root / "scene" / f"date_{i}.tif", smooth_field(np.random.default_rng(i), 12, 48),
                      descriptions=list(SENTINEL2_L2A_BANDS))
    assert main(["pretrain", "--data", str(root / "scene"), "--out", str(root / "model"), *TINY_PRETRAIN]) == 0
    return root / "model"


def run_cli(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main(["finetune-classify", *args, "--events", "jsonl", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    return code, [json.loads(line) for line in lines if line.strip()]


# --- loaders ----------------------------------------------------------------------------------------------------

def test_eurosat_png_folders_give_rgb_patches_and_labels(tmp_path) -> None:
    root = make_rgb_classes(tmp_path / "data", per_class=3, classes=("Sea", "Forest", "River"))
    (root / "README.txt").write_text("not a class")  # stray files are ignored
    patches = load_patches(root)
    assert patches.x.shape == (9, 3, 32, 32) and patches.x.dtype == np.float32
    assert patches.bands == ("B02", "B03", "B04")  # canonical order; the PNG's first channel is red (B04)
    assert patches.classes == ("Forest", "River", "Sea") and patches.y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert patches.eight_bit and not patches.multi_label and patches.layout == "eurosat"
    red, blue = patches.x[:, 2].mean(), patches.x[:, 0].mean()
    assert red - blue == pytest.approx(10, abs=1.5)
    assert patches.class_counts().tolist() == [3, 3, 3] and patches.valid.all()


def test_eurosat_geotiffs_are_named_by_description_or_by_count(tmp_path) -> None:
    for k, name in enumerate(("AnnualCrop", "Forest")):
        (tmp_path / "ms" / name).mkdir(parents=True)
        (tmp_path / "named" / name).mkdir(parents=True)
        for i in range(2):
            ms = (np.arange(1, 14, dtype="uint16") * 100 + k)[:, None, None] * np.ones((1, 16, 16), "uint16")
            write_geotiff(tmp_path / "ms" / name / f"{name}_{i}.tif", ms, nodata=None)
            write_geotiff(tmp_path / "named" / name / f"{name}_{i}.tif", ms[:4], nodata=None,
                          descriptions=["B08", "B04", "B03", "B02"])
    ms = load_patches(tmp_path / "ms")
    assert ms.bands == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
    assert ms.x[0, ms.bands.index("B8A"), 0, 0] == 1300  # EuroSAT stores B8A last
    assert ms.x[0, ms.bands.index("B09"), 0, 0] == 900 and not ms.eight_bit
    assert EUROSAT_MS_BANDS[-1] == "B8A"
    named = load_patches(tmp_path / "named")
    assert named.bands == ("B02", "B03", "B04", "B08")
    assert named.x[2, :, 0, 0].tolist() == [401, 301, 201, 101]


def test_bigearthnet_folders_resample_bands_and_read_multi_labels(tmp_path) -> None:
    root = make_bigearthnet(tmp_path / "ben", [["Pastures", "Water bodies"], ["Coniferous forest"], ["Pastures"]])
    patches = load_patches(root)
    assert patches.layout == "bigearthnet" and patches.multi_label
    assert patches.x.shape == (3, 3, 24, 24) and patches.bands == ("B01", "B02", "B05")
    assert patches.classes == ("Pastures", "Coniferous forest", "Water bodies")  # nomenclature order
    assert patches.y.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert np.allclose(patches.x[:, 0], 700)  # the 60 m band, bilinear onto the 10 m grid
    assert patches.class_counts().tolist() == [2, 1, 1]


# --- metrics, split, band mapping -------------------------------------------------------------------------------

def naive_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Loop over descending distinct thresholds: sum of (recall gained) x precision."""
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        called = scores >= threshold
        tp = float((called & targets).sum())
        precision, recall = tp / called.sum(), tp / targets.sum()
        total += (recall - previous_recall) * precision
        previous_recall = recall
    return total


def test_average_precision_matches_hand_computed_values_and_a_loop() -> None:
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # ties enter together: {0.9: +, 0.5: +, 0.5: -} -> 0.5 * 1 + 0.5 * 2/3
    assert average_precision(np.array([0.9, 0.5, 0.5]), np.array([1, 1, 0])) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(np.array([0.1, 0.9]), np.array([1, 0])) == pytest.approx(0.5)
    assert np.isnan(average_precision(np.array([0.3]), np.array([0])))
    rng = np.random.default_rng(0)
    scores, targets = rng.integers(0, 20, size=(30, 4)) / 20, rng.random((30, 4)) < 0.3
    assert micro_map(scores, targets) == pytest.approx(naive_average_precision(scores.ravel(), targets.ravel()))
    scored = multi_label_scores(np.log(scores + 1e-3) - np.log1p(-scores + 1e-3), targets, list("abcd"))
    assert scored["per_class"]["a"]["ap"] == pytest.approx(naive_average_precision(scores[:, 0], targets[:, 0]))


def test_single_label_scores_and_confusion() -> None:
    logits = np.array([[2, 0], [1, 0], [0, 1], [0, 3], [5, 1]], dtype=np.float32)
    scores = single_label_scores(logits, np.array([0, 0, 0, 1, 1]), ["a", "b"])
    assert scores["accuracy"] == pytest.approx(0.6)
    assert scores["confusion"] == [[2, 1], [1, 1]]
    assert scores["per_class"]["a"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3), "support": 3}


def test_split_is_stratified_seeded_and_disjoint(tmp_path) -> None:
    patches = load_patches(make_rgb_classes(tmp_path / "d", per_class=5, size=16))
    train, val = split_indices(patches, 0.2, seed=3)
    assert sorted([*train, *val]) == list(range(10)) and patches.y[val].tolist() == [0, 1]
    assert np.array_equal(val, split_indices(patches, 0.2, seed=3)[1])
    assert len(split_indices(patches, 0.0, seed=3)[1]) == 0
    assert [s.stop - s.start for s in batch_slices(9, 4)] == [4, 5]  # never a lone patch in a batch


def test_band_mapping_selects_shared_bands_in_encoder_order() -> None:
    mapping = map_bands(SENTINEL2_L2A_BANDS, ("B04", "B03", "B02", "NDVI"))
    assert mapping.bands == ("B02", "B03", "B04") and mapping.encoder_channels == (1, 2, 3)
    assert mapping.data_channels == (2, 1, 0) and mapping.dropped == ("NDVI",) and "B08" in mapping.missing
    with pytest.raises(BandMismatchError, match="no band matches"):
        map_bands(SENTINEL2_L2A_BANDS, ("band1",), "enc", "data")


# --- training end to end ----------------------------------------------------------------------------------------

def test_linear_probe_learns_a_two_class_set_and_writes_a_model(tmp_path) -> None:
    data = make_rgb_classes(tmp_path / "data", per_class=8)
    config = ClassifyConfig(linear_probe=True, epochs=6, batch_size=8, val_fraction=0.25, device="cpu")
    result = finetune_classify(data, tmp_path / "model", config)
    assert result.metric == "accuracy" and result.value is not None and result.value >= 0.75
    assert result.evaluated_on == "validation" and result.scores["per_class"]["Sea"]["support"] == 2
    assert result.confusion_png is not None and result.confusion_png.read_bytes()[:4] == b"\x89PNG"
    weights, config_json = load_model(tmp_path / "model", kind=CLASSIFY_KIND)
    assert config_json["classes"] == ["Forest", "Sea"] and config_json["multi_label"] is False
    assert config_json["bands"] == ["B02", "B03", "B04"] and config_json["patch_size"] == 32
    assert config_json["normalization_source"] == "training split" and config_json["provenance"]["encoder"] is None
    assert config_json["metrics"]["accuracy"] == result.value and config_json["train"]["linear_probe"] is True
    assert [r["epoch"] for r in read_csv(tmp_path / "model" / "history.csv")] == [1, 2, 3, 4, 5, 6]
    assert not list((tmp_path / "model").glob(".*.tmp"))
    model, _ = load_classifier(tmp_path / "model", torch.device("cpu"))
    patches = load_patches(data)
    x = normalise(patches.x, patches.valid, BandStats.from_dict(config_json["normalization"]))
    with torch.no_grad():
        accuracy = (model(x).argmax(1).numpy() == patches.y).mean()
    assert accuracy >= 0.9 and set(weights) == set(model.state_dict())


def test_rgb_patches_on_a_12_band_encoder_use_its_rgb_weights(tmp_path, encoder_dir, capsys, caplog) -> None:
    caplog.set_level(logging.INFO, logger="core")
    data = make_rgb_classes(tmp_path / "data", per_class=3, size=32)
    code, stream = run_cli(capsys, "--data", str(data), "--out", str(tmp_path / "m"), "--encoder", str(encoder_dir),
                           "--linear-probe", "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.34")
    assert code == 0, stream[-3:]
    kinds = [e["event"] for e in stream]
    assert kinds[-1] == "result" and kinds.count("metric") >= 2 * 3  # loss, lr, val_* per epoch
    fractions = [e["fraction"] for e in stream if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    outputs = stream[-1]["outputs"]
    assert 0.0 <= outputs["accuracy"] <= 1.0 and Path(outputs["confusion_matrix"]).is_file()
    weights, config = load_model(tmp_path / "m", kind=CLASSIFY_KIND)
    encoder, _ = load_model(encoder_dir)
    assert config["bands"] == ["B02", "B03", "B04"] and config["architecture"]["in_chans"] == 3
    assert config["provenance"]["bands_missing_from_data"][:2] == ["B01", "B05"]
    assert "8-bit" in config["normalization_source"]  # JPG/PNG values are not reflectance
    assert any("8-bit" in r.getMessage() for r in caplog.records)  # and the user is told
    stem = encoder["encoder_q.body.conv1.weight"]  # (64, 12, 7, 7); a linear probe leaves it as it was
    assert torch.equal(weights["encoder.body.conv1.weight"], stem[:, 1:4])


def test_named_geotiffs_on_an_encoder_use_its_normalisation(tmp_path, encoder_dir) -> None:
    for k, name in enumerate(("A", "B")):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(3):
            write_geotiff(tmp_path / "d" / name / f"{i}.tif", smooth_field(np.random.default_rng(k * 9 + i), 4, 32),
                          descriptions=["B02", "B03", "B04", "B08"], nodata=None)
    config = ClassifyConfig(epochs=1, batch_size=4, device="cpu", val_fraction=0.34)
    result = finetune_classify(tmp_path / "d", tmp_path / "m", config, encoder_dir=encoder_dir)
    _, saved = load_model(tmp_path / "m", kind=CLASSIFY_KIND)
    _, encoder = load_model(encoder_dir)
    assert saved["normalization_source"] == "encoder" and saved["bands"] == ["B02", "B03", "B04", "B08"]
    index = [encoder["bands"].index(b) for b in saved["bands"]]
    assert saved["normalization"]["mean"] == [encoder["normalization"]["mean"][i] for i in index]
    assert saved["provenance"]["encoder_provenance"] == encoder["provenance"] and result.value is not None


def test_multi_label_training_reports_micro_map(tmp_path, capsys, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="core")
    labels = [["Pastures"], ["Pastures", "Water bodies"], ["Water bodies"], ["Pastures"], ["Water bodies"]] * 2
    data = make_bigearthnet(tmp_path / "ben", labels, size=32)
    code, stream = run_cli(capsys, "--data", str(data), "--out", str(tmp_path / "m"), "--epochs", "1",
                           "--batch-size", "4", "--val-fraction", "0.3")
    assert code == 0, stream[-3:]
    outputs = stream[-1]["outputs"]
    assert 0.0 < outputs["micro_map"] <= 1.0 and "confusion_matrix" not in outputs
    assert set(outputs["per_class"]) == {"Pastures", "Water bodies"}
    _, config = load_model(tmp_path / "m", kind=CLASSIFY_KIND)
    assert config["multi_label"] is True and config["bands"] == ["B01", "B02", "B05"]
    assert config["provenance"]["val_patches"] == 3 and config["metrics"]["micro_map"] == outputs["micro_map"]
    assert "only 3 validation patch(es): one patch moves the score by about 0.33" in caplog.text


# --- bad input --------------------------------------------------------------------------------------------------

def _empty_class(root: Path) -> str:
    make_rgb_classes(root, per_class=2, size=16)
    (root / "Empty").mkdir()
    return "holds no images"


def _mixed_bands(root: Path) -> str:
    make_rgb_classes(root, per_class=2, size=16)
    write_png(root / "Sea" / "gray.png", np.zeros((1, 16, 16), "uint8"))
    return "every patch needs the same bands"


def _unknown_label(root: Path) -> str:
    make_bigearthnet(root, [["Pastures"], ["Pasturez"]])
    return "did you mean 'Pastures'"


def _no_labels(root: Path) -> str:
    make_bigearthnet(root, [["Pastures"], ["Pastures"]])
    next(root.glob("*/*_labels_metadata.json")).unlink()
    return "_labels_metadata.json"


def _empty_data(root: Path) -> str:
    root.mkdir()
    return "holds no sub-folders"


@pytest.mark.parametrize("make_bad", [_empty_class, _mixed_bands, _unknown_label, _no_labels, _empty_data])
def test_bad_input_gives_exit_code_2_and_one_clear_error(tmp_path, capsys, make_bad) -> None:
    expected = make_bad(tmp_path / "data")
    code, stream = run_cli(capsys, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--epochs", "1")
    errors = [e for e in stream if e["event"] == "error"]
    assert code == 2 and len(errors) == 1 and expected in errors[0]["message"], stream
    assert str(tmp_path / "data") in errors[0]["message"]
    assert not (tmp_path / "m").exists()


def test_no_shared_band_with_the_encoder_is_a_band_mismatch(tmp_path, capsys, encoder_dir) -> None:
    for name in ("A", "B"):
        (tmp_path / "gray" / name).mkdir(parents=True)
        for i in range(2):
            write_png(tmp_path / "gray" / name / f"{i}.png", np.full((1, 16, 16), 50 * i, "uint8"))
    code, stream = run_cli(capsys, "--data", str(tmp_path / "gray"), "--out", str(tmp_path / "m"),
                           "--encoder", str(encoder_dir))
    assert code == 2 and stream[-1]["kind"] == "BandMismatchError" and "no band matches" in stream[-1]["message"]
    assert not (tmp_path / "m").exists()


# --- real data --------------------------------------------------------------------------------------------------

@pytest.mark.realdata
def test_real_eurosat_and_bigearthnet_samples(shared_data, tmp_path, encoder_dir) -> None:
    rgb = ClassifyConfig(linear_probe=True, epochs=2, batch_size=32, device="cpu")
    eurosat = finetune_classify(shared_data / CLASSIFICATION / "eurosat_small" / "rgb_100", tmp_path / "eurosat", rgb)
    assert eurosat.evaluated_on == "validation" and sum(
        s["support"] for s in eurosat.scores["per_class"].values()) == 20  # 2 of the 10 patches of each class
    assert eurosat.value is not None and 0.0 <= eurosat.value <= 1.0
    assert len(eurosat.scores["per_class"]) == 10 and np.asarray(eurosat.scores["confusion"]).sum() == 20
    assert eurosat.confusion_png is not None and eurosat.confusion_png.is_file()
    ben_config = ClassifyConfig(linear_probe=True, epochs=2, batch_size=4, val_fraction=0.34, device="cpu")
    ben = finetune_classify(shared_data / CLASSIFICATION / "BigEarthNet-S2-Example", tmp_path / "ben", ben_config,
                            encoder_dir=encoder_dir)
    _, config = load_model(tmp_path / "ben", kind=CLASSIFY_KIND)
    assert config["bands"] == list(SENTINEL2_L2A_BANDS) and config["normalization_source"] == "encoder"
    assert config["patch_size"] == 120 and len(config["classes"]) == 10 and config["provenance"]["val_patches"] == 2
    assert ben.value is not None and 0.0 < ben.value <= 1.0
    print(f"real data: EuroSAT rgb_100 linear probe (random init, 80 train / 20 val) accuracy {eurosat.value:.3f}; "
          f"BigEarthNet example (12-band tiny encoder, 4 train / 2 val) micro mAP {ben.value:.3f}")
