"""``swimdiff detect --mask-clouds``: s2cloudless masks on real Sentinel-2 L1C dates, cloudy pixels as nodata.

Real data: OSCD's Paris pair (``imgs_2``, 2017-11-07, has two cumulus clouds, bottom centre and top right;
``imgs_1`` is clear) and Norcia (clear), 13 L1C bands each; Boadella (L2A, 12 bands without B10) for the
refusal. Detection tests run on a 128 x 180 px crop of Paris around the bottom cloud, so they take seconds.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

import core.io.clouds as clouds_module
from conftest import BadInput, check_bad_input, run_cli, smooth_field, write_geotiff
from core.change.default_model import DEFAULT_CHANGE_MODEL
from core.change.pair import MASK_NODATA, open_pair
from core.io.bands import SENTINEL2_BANDS
from core.io.clouds import (
    CLOUD_BANDS,
    CloudOptions,
    coarse_grid,
    detect_clouds,
    load_detector,
    processing_factor,
)
from core.io.raster import StackReader, open_date

PARIS = ("oscd", "images", "paris")
CROP = Window(120, 280, 180, 128)  # cols 120-300, rows 280-408 of Paris: the bottom cloud of imgs_2


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails: the detector must work offline."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted during cloud masking")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def crop(shared: Path, date: str, out: Path, scale: float = 1.0, dtype: str = "uint16", offset: float = 0.0) -> Path:
    """The 13 bands of an OSCD date, cropped to :data:`CROP` on its B02 grid, as one named GeoTIFF."""
    source = open_date(shared.joinpath(*PARIS, date))
    x, _ = StackReader(source, source.grid, SENTINEL2_BANDS).read(CROP)  # (13, 128, 180)
    data = ((x + offset) * scale).astype(dtype)
    profile = dict(driver="GTiff", width=CROP.width, height=CROP.height, count=13, dtype=dtype, nodata=0,
                   crs=source.grid.crs, transform=window_transform(CROP, source.grid.transform))
    with rasterio.open(out, "w", **profile) as ds:
        ds.write(data)
        for i, name in enumerate(SENTINEL2_BANDS, 1):
            ds.set_band_description(i, name)
    return out


@pytest.fixture
def paris_crop(shared_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    return crop(shared_data, "imgs_1", tmp_path / "t1.tif"), crop(shared_data, "imgs_2", tmp_path / "t2.tif")


def read(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.tags()


# --- the masks on real dates -----------------------------------------------------------------------


@pytest.mark.realdata
def test_the_detector_ships_in_the_package_and_runs_offline(no_network: None, shared_data: Path) -> None:
    detector = load_detector(0.4)
    assert Path(detector.model_filename).is_file()
    date = open_date(shared_data.joinpath("oscd", "images", "norcia", "imgs_1"))
    assert detect_clouds(date, date.grid).mask.shape == (41, 65)  # 241 x 385 px of ~10 m on a 60 m grid


@pytest.mark.realdata
def test_a_cloudy_date_is_masked_where_its_clouds_are_and_clear_dates_are_not(shared_data: Path) -> None:
    paris = shared_data.joinpath(*PARIS)
    cloudy = open_date(paris / "imgs_2")
    mask = detect_clouds(cloudy, cloudy.grid)
    whole = mask.window(Window(0, 0, cloudy.grid.width, cloudy.grid.height))  # (408, 390) on the 10 m grid
    assert whole.shape == (cloudy.grid.height, cloudy.grid.width)
    assert 0.04 < whole.mean() < 0.12  # two cumulus clouds and their 120 m margin
    assert whole[355, 200] and whole[45, 335]  # the centres of both clouds
    assert not whole[200, 100] and not whole[250, 300]  # the Seine and the city around it
    stricter = detect_clouds(cloudy, cloudy.grid, CloudOptions(threshold=0.7)).mask
    assert 0 < stricter.sum() < mask.mask.sum() and not (stricter & ~mask.mask).any()
    for folder in (paris / "imgs_1", shared_data / "oscd" / "images" / "norcia" / "imgs_1"):
        clear = open_date(folder)
        assert detect_clouds(clear, clear.grid).fraction < 0.01, folder


@pytest.mark.realdata
def test_strips_and_windows_give_the_mask_s2cloudless_makes_of_the_whole_image(
        shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tile borders leave no seams: the mask of any window is cut from one mask of the whole raster, and
    classifying it strip by strip changes nothing."""
    date = open_date(shared_data.joinpath(*PARIS, "imgs_2"))
    factor = processing_factor(date.grid)
    assert factor == 6  # ~10 m pixels (EPSG:4326) on a ~60 m processing grid
    coarse = coarse_grid(date.grid, factor)
    x, valid = StackReader(date, coarse, CLOUD_BANDS).read(Window(0, 0, coarse.width, coarse.height))
    detector = load_detector(0.4)
    whole = detector.get_cloud_masks((x / 10000).transpose(1, 2, 0)[None])[0].astype(bool)
    monkeypatch.setattr(clouds_module, "STRIP_PIXELS", 500)  # 8 rows of 62 px per strip: 9 strips
    strips = detect_clouds(date, date.grid)
    np.testing.assert_array_equal(strips.mask[valid], whole[valid])
    tiled = np.zeros((date.grid.height, date.grid.width), dtype=bool)
    for top in range(0, date.grid.height, 100):  # windows that cut across processing pixels
        for left in range(0, date.grid.width, 70):
            h, w = min(100, date.grid.height - top), min(70, date.grid.width - left)
            tiled[top:top + h, left:left + w] = strips.window(Window(left, top, w, h))
    np.testing.assert_array_equal(tiled, np.kron(strips.mask, np.ones((6, 6), bool))[:408, :390])


@pytest.mark.realdata
def test_reflectance_gives_the_same_mask_and_an_offset_is_warned_about(
        shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dn = open_date(crop(shared_data, "imgs_2", tmp_path / "dn.tif"))
    reflectance = open_date(crop(shared_data, "imgs_2", tmp_path / "r.tif", scale=1e-4, dtype="float32"))
    expected = detect_clouds(dn, dn.grid).mask
    assert expected.mean() > 0.1
    np.testing.assert_array_equal(detect_clouds(reflectance, dn.grid).mask, expected)
    caplog.set_level(logging.WARNING)
    shifted = open_date(crop(shared_data, "imgs_2", tmp_path / "o.tif", offset=1000))
    detect_clouds(shifted, shifted.grid)
    assert "processing baseline 04.00" in caplog.text and "subtract the offset" in caplog.text


# --- detect --mask-clouds --------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["cva", pytest.param("model", marks=pytest.mark.skipif(
    not (DEFAULT_CHANGE_MODEL / "model.safetensors").is_file(), reason="no shipped change model"))])
def test_cloudy_pixels_are_nodata_in_every_output(method: str, paris_crop: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a, b = paris_crop
    out, score = tmp_path / "change.tif", tmp_path / "score.tif"
    argv = ["detect", "--t1", str(a), "--t2", str(b), "--method", method, "--out", str(out),
            "--probability", str(score)]
    code, plain_events = run_cli([*argv, "--out", str(tmp_path / "plain.tif"), "--probability",
                                  str(tmp_path / "plain_score.tif")], capsys)
    assert code == 0
    code, events = run_cli([*argv, "--mask-clouds", "--tile", "64"], capsys)
    assert code == 0
    result = [e for e in events if e["event"] == "result"][0]["outputs"]
    assert "cloudy_fraction" not in [e for e in plain_events if e["event"] == "result"][0]["outputs"]
    pair = open_pair(a, b)
    t1, t2 = (detect_clouds(d, pair.grid).window(Window(0, 0, 180, 128)) for d in (pair.t1, pair.t2))
    assert result["cloudy_fraction_t1"] == pytest.approx(t1.mean())  # no nodata in the crop: all pixels valid
    assert result["cloudy_fraction_t2"] == pytest.approx(t2.mean())
    assert result["cloudy_fraction"] == pytest.approx((t1 | t2).mean())
    assert result["cloudy_fraction_t1"] < 0.01 < 0.2 < result["cloudy_fraction_t2"]
    assert result["cloud_threshold"] == 0.4
    mask, tags = read(out)
    scores, score_tags = read(score)
    plain, _ = read(tmp_path / "plain.tif")
    np.testing.assert_array_equal(mask == MASK_NODATA, t1 | t2)
    np.testing.assert_array_equal(np.isnan(scores), t1 | t2)
    assert (plain[t1 | t2] == 1).sum() > 0  # unmasked, the cloud is mapped as change...
    assert result["changed_fraction"] == pytest.approx((mask == 1).sum() / (mask != MASK_NODATA).sum())
    if method == "model":  # ...and the outputs say how clouds were masked (cva.py writes its own tags)
        for t in (tags, score_tags):
            assert re.match(r"s2cloudless [\d.]+: probability > 0.4 on a 6\d m grid", t["cloud_mask"])
            assert float(t["cloudy_fraction"]) == pytest.approx(result["cloudy_fraction"], abs=1e-6)


@pytest.mark.realdata
def test_masks_do_not_depend_on_the_tiling(paris_crop: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    a, b = paris_crop
    masks = []
    for tile in ("64", "512"):
        out = tmp_path / f"change{tile}.tif"
        assert run_cli(["detect", "--t1", str(a), "--t2", str(b), "--method", "cva", "--mask-clouds",
                        "--cloud-threshold", "0.6", "--tile", tile, "--out", str(out)], capsys)[0] == 0
        masks.append(read(out)[0])
    np.testing.assert_array_equal(masks[0], masks[1])
    assert 0 < (masks[0] == MASK_NODATA).mean() < 0.5  # a higher threshold masks less, but the cloud still


# --- refusals --------------------------------------------------------------------------------------


def boadella(folder: Path, *extra: str) -> list[str]:
    from conftest import SHARED_DATA

    scenes = sorted((SHARED_DATA / "multitemporal" / "boadella_s2l2a_12dates").glob("*.tif"))
    if len(scenes) < 2:
        pytest.skip("../shared/data is not here")
    return ["detect", "--t1", str(scenes[0]), "--t2", str(scenes[1]), "--method", "cva", "--out",
            str(folder / "change.tif"), "--mask-clouds", *extra]


def synthetic(folder: Path, names: tuple[str, ...], *extra: str, dtype: str = "uint16") -> list[str]:
    paths = []
    for i, date in enumerate(("t1", "t2")):
        data = smooth_field(np.random.default_rng(i), len(names), 64)
        data = (data // 40).astype(dtype) if dtype == "uint8" else data
        paths.append(write_geotiff(folder / f"{date}.tif", data, descriptions=names))
    return ["detect", "--t1", str(paths[0]), "--t2", str(paths[1]), "--method", "cva", "--out",
            str(folder / "change.tif"), "--probability", str(folder / "score.tif"), *extra]


BAD_INPUT = [
    BadInput("l2a_has_no_b10", lambda f: boadella(f, "--assume-band-names", "l2a"), 2,
             "lacks B10", absent=("change.tif",)),
    BadInput("l2a_unnamed", lambda f: boadella(f), 2, "perhaps an L2A product", absent=("change.tif",)),
    BadInput("rgb", lambda f: synthetic(f, ("B04", "B03", "B02"), "--mask-clouds"), 2,
             "lacks B01, B05, B08, B8A, B09, B10, B11, B12", absent=("change.tif", "score.tif")),
    BadInput("eight_bit", lambda f: synthetic(f, SENTINEL2_BANDS, "--mask-clouds", dtype="uint8"), 2,
             "s2cloudless needs top-of-atmosphere reflectance", absent=("change.tif", "score.tif")),
    BadInput("threshold_out_of_range", lambda f: synthetic(f, SENTINEL2_BANDS, "--mask-clouds",
                                                           "--cloud-threshold", "1.5"), 2,
             "--cloud-threshold 1.5 is out of range", absent=("change.tif",)),
    BadInput("threshold_without_masking", lambda f: synthetic(f, SENTINEL2_BANDS, "--cloud-threshold", "0.5"), 2,
             "only used with --mask-clouds", absent=("change.tif",)),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c.id for c in BAD_INPUT])
def test_bad_input(case: BadInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = check_bad_input(case, tmp_path / case.id, capsys)
    if case.id.startswith("l2a"):
        assert "run without --mask-clouds" in error["message"] and error["kind"] == "BandMismatchError"


@pytest.mark.realdata
def test_the_l2a_refusal_names_the_raster_and_the_fix(shared_data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = boadella(tmp_path, "--assume-band-names", "l2a")
    code, events = run_cli(argv, capsys)
    message = [e for e in events if e["event"] == "error"][0]["message"]
    assert code == 2 and "Boadella_2020-01-13.tif" in message and "use the L1C product" in message
    assert list(tmp_path.iterdir()) == []


# --- the Processing algorithm ----------------------------------------------------------------------


@pytest.mark.qgis
@pytest.mark.realdata
def test_the_processing_algorithm_masks_clouds_and_reports_their_fraction(
        provider, paris_crop: tuple[Path, Path], tmp_path: Path) -> None:
    import processing
    from osgeo import gdal

    def band(path: str) -> np.ndarray:
        dataset = gdal.Open(path)  # kept while its band is read (a dropped dataset crashes GDAL's bindings)
        return dataset.GetRasterBand(1).ReadAsArray()

    a, b = paris_crop
    result = processing.run("swimdiff:detectchange", {
        "T1": str(a), "T2": str(b), "METHOD": 2, "MASK_CLOUDS": True, "OUTPUT": str(tmp_path / "change.tif")})
    mask = band(result["OUTPUT"])  # QGIS's GDAL, never rasterio in QGIS
    assert 0.2 < result["CLOUDY_FRACTION"] == pytest.approx((mask == MASK_NODATA).mean())
    plain = processing.run("swimdiff:detectchange", {
        "T1": str(a), "T2": str(b), "METHOD": 2, "OUTPUT": str(tmp_path / "plain.tif")})
    assert plain["CLOUDY_FRACTION"] is None
    assert (band(plain["OUTPUT"]) != MASK_NODATA).all()
