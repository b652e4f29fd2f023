"""``swimdiff classify``: land-cover maps of whole rasters, blended window streaming, class colours."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from conftest import forest_sea_raster, make_rgb_classes, write_geotiff
from core.cli import main
from core.config import ClassifyConfig
from core.errors import Cancelled
from core.io.blend import Tiling, stream_blended
from core.io.palette import CORINE_COLORS, EUROSAT_COLORS, class_colors
from core.landcover.mapping import CLASS_NODATA, map_land_cover
from core.landcover.patches import BIGEARTHNET_CLASSES
from core.landcover.training import finetune_classify

CLASSES = ("Forest", "Sea")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids synchronisation costs when the 2 cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> Path:
    """A linear probe that tells generated "Forest" (dark) from "Sea" (bright, striped) 32 px RGB patches."""
    root = tmp_path_factory.mktemp("landcover")
    data = make_rgb_classes(root / "data", per_class=8, classes=CLASSES)
    config = ClassifyConfig(linear_probe=True, epochs=6, batch_size=8, val_fraction=0.25, device="cpu")
    finetune_classify(data, root / "model", config)
    return root / "model"


def classify(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main(["classify", *args, "--events", "jsonl", "--device", "cpu"])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_map_follows_the_classes_keeps_the_grid_nodata_colours_and_names(tmp_path, rgb_model, capsys) -> None:
    raster = forest_sea_raster(tmp_path / "scene.tif")
    code, events = classify(capsys, "--raster", str(raster), "--model", str(rgb_model),
                            "--out", str(tmp_path / "landcover.tif"), "--probabilities", str(tmp_path / "p.tif"))
    assert code == 0, events
    result = events[-1]["outputs"]
    assert result["classes"] == list(CLASSES) and result["nodata"] == CLASS_NODATA and not result["multi_label"]
    assert result["colors"][0] == list(EUROSAT_COLORS["Forest"]) and result["probabilities"] == str(tmp_path / "p.tif")
    assert abs(sum(result["class_fractions"].values()) - 1.0) < 1e-9
    with rasterio.open(raster) as src, rasterio.open(tmp_path / "landcover.tif") as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        assert out.dtypes[0] == "uint8" and out.nodata == CLASS_NODATA and out.descriptions == ("land cover class",)
        assert out.colormap(1)[0] == (*EUROSAT_COLORS["Forest"], 255)
        tags = out.tags()
        assert json.loads(tags["CLASS_NAMES"]) == list(CLASSES) and tags["CLASS_1"] == "Sea"
        ids = out.read(1)
    assert (ids[:24, :24] == CLASS_NODATA).all() and (ids[24:, :] != CLASS_NODATA).all()
    assert (ids[32:, 8:56] == 0).mean() > 0.95  # away from the boundary by more than half a window
    assert (ids[:, 104:] == 1).mean() > 0.95
    with rasterio.open(tmp_path / "p.tif") as prob:
        assert prob.count == 2 and prob.descriptions == CLASSES
        p = prob.read()
    assert np.isnan(p[:, :24, :24]).all()
    assert np.allclose(p[:, 24:].sum(axis=0), 1.0, atol=1e-4)
    assert ((p[1, 24:] > 0.5) == (ids[24:] == 1)).all()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_window_and_overlap_can_be_chosen_and_progress_reaches_the_end(tmp_path, rgb_model) -> None:
    raster = forest_sea_raster(tmp_path / "scene.tif", height=70, width=130)
    seen: list[float] = []
    result = map_land_cover(raster, rgb_model, tmp_path / "lc.tif", tile=48, overlap=0, batch_size=3,
                            device_name="cpu", progress=lambda fraction, message: seen.append(fraction))
    assert (result.window, result.overlap) == (48, 0) and seen[-1] == pytest.approx(1.0)
    assert seen == sorted(seen) and len(seen) == 2 * 3  # tile_grid(70, 130, 48, 0): 2 rows x 3 columns


def test_cancel_leaves_no_file(tmp_path, rgb_model) -> None:
    raster = forest_sea_raster(tmp_path / "scene.tif")
    calls = iter(range(100))
    with pytest.raises(Cancelled, match="land-cover mapping cancelled"):
        map_land_cover(raster, rgb_model, tmp_path / "lc.tif", tmp_path / "p.tif", device_name="cpu",
                       should_stop=lambda: next(calls) >= 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def write_bad(tmp_path: Path, case: str, rgb_model: Path) -> list[str]:
    """Arguments of a run that must fail with one clear message."""
    good = str(forest_sea_raster(tmp_path / "scene.tif"))
    if case == "not a classifier":
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text(json.dumps({"kind": "swimdiff-change", "format_version": 1}))
        return ["--raster", good, "--model", str(tmp_path / "other")]
    if case == "four unnamed bands":
        bad = write_geotiff(tmp_path / "four.tif", np.ones((4, 40, 40), "uint8"), nodata=None)
        return ["--raster", str(bad), "--model", str(rgb_model)]
    if case == "only nodata":
        bad = write_geotiff(tmp_path / "empty.tif", np.zeros((3, 40, 40), "uint8"), nodata=0)
        return ["--raster", str(bad), "--model", str(rgb_model)]
    if case == "tiny window":
        return ["--raster", good, "--model", str(rgb_model), "--tile", "8"]
    return ["--raster", str(tmp_path / "missing.tif"), "--model", str(rgb_model)]


@pytest.mark.parametrize("case, kind, words", [
    ("not a classifier", "CheckpointFormatError", "swimdiff-classify"),
    ("four unnamed bands", "BandMismatchError", "3 bands"),
    ("only nodata", "NoDataError", "no valid pixel"),
    ("tiny window", "ConfigError", "--tile 8"),
    ("missing raster", "RasterReadError", "does not exist"),
])
def test_bad_input_gives_exit_code_2_one_clear_error_and_no_output(tmp_path, rgb_model, capsys, case, kind,
                                                                  words) -> None:
    args = write_bad(tmp_path, case, rgb_model)
    before = set(tmp_path.rglob("*"))
    code, events = classify(capsys, *args, "--out", str(tmp_path / "lc.tif"), "--probabilities",
                            str(tmp_path / "p.tif"))
    errors = [e for e in events if e["event"] == "error"]
    assert code == 2 and len(errors) == 1 and errors[0]["kind"] == kind and words in errors[0]["message"], errors
    assert set(tmp_path.rglob("*")) == before


def test_an_8_bit_model_on_reflectance_warns(tmp_path, rgb_model, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="core")
    image = (1000 + 50 * np.random.default_rng(0).random((3, 40, 40))).astype("uint16")
    map_land_cover(write_geotiff(tmp_path / "refl.tif", image, nodata=None), rgb_model, tmp_path / "lc.tif",
                   device_name="cpu")
    assert "trained on 8-bit images" in caplog.text and "uint16" in caplog.text


def test_blending_per_window_answers_gives_exact_constants_and_nan_where_no_window_is_valid() -> None:
    height, width = 150, 97
    invalid_rows = slice(40, 60)

    def predict(tiles):  # every window says (0.25, 0.75); rows 40-59 are nodata
        oks = np.ones((len(tiles), tiles[0].height, tiles[0].width), dtype=bool)
        for ok, t in zip(oks, tiles):
            rows = np.arange(t.row, t.row + t.height)
            ok[(rows >= invalid_rows.start) & (rows < invalid_rows.stop)] = False
        return np.tile(np.array([0.25, 0.75], dtype=np.float32)[None, :, None, None], (len(tiles), 1, 1, 1)), oks

    strips = list(stream_blended(height, width, 2, Tiling(32, 16, 4), predict, lambda: None))
    assert [int(w.row_off) for w, _ in strips] == sorted(int(w.row_off) for w, _ in strips)
    out = np.concatenate([s for _, s in strips], axis=1)  # (2, H, W)
    assert out.shape == (2, height, width)
    assert np.isnan(out[:, invalid_rows]).all()
    rest = np.delete(out, np.r_[invalid_rows], axis=1)
    assert np.allclose(rest[0], 0.25) and np.allclose(rest[1], 0.75)


def test_class_colours_follow_the_known_legends_and_never_repeat() -> None:
    assert class_colors(list(BIGEARTHNET_CLASSES)) == [CORINE_COLORS[name] for name in BIGEARTHNET_CLASSES]
    colors = class_colors(["Forest", "Pine forest", "Deep water", *[f"class {i}" for i in range(60)]])
    assert colors[0] == EUROSAT_COLORS["Forest"] and len(set(colors)) == len(colors)
    assert colors[2][2] > colors[2][0]  # water is blue


@pytest.mark.realdata
def test_real_bigearthnet_band_folder_is_mapped_on_its_10_m_grid(shared_data, tmp_path) -> None:
    data = shared_data / "classification" / "BigEarthNet-S2-Example"
    config = ClassifyConfig(linear_probe=True, epochs=1, batch_size=4, val_fraction=0.0, device="cpu")
    finetune_classify(data, tmp_path / "model", config)
    patch = sorted(p for p in data.iterdir() if p.is_dir())[0]
    result = map_land_cover(patch, tmp_path / "model", tmp_path / "lc.tif", tmp_path / "p.tif", device_name="cpu")
    assert result.multi_label and result.window == 120
    with rasterio.open(next(patch.glob("*_B02.tif"))) as b02, rasterio.open(tmp_path / "lc.tif") as out, \
            rasterio.open(tmp_path / "p.tif") as prob:
        assert (out.crs, out.transform, out.shape) == (b02.crs, b02.transform, b02.shape)
        ids = out.read(1)
        assert prob.count == len(result.classes)
        assert ((prob.read() >= 0) & (prob.read() <= 1)).all()  # sigmoid per label
    assert set(np.unique(ids)) <= set(range(len(result.classes)))
