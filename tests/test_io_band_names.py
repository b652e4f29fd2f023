"""Band names and value scale (issue 11): nothing re-ordered, nothing mapped or scaled silently.

Unit tests of the naming rules (descriptions, file names, VRT sources, siblings, an RGB export), of the value
scale (recorded in every config, inferred for old ones, detected on a sample), the real files an
analyst has (a ``gdalbuildvrt -separate`` stack of an OSCD city, float reflectance), and one
``BadInput`` row per bad command line.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from conftest import (
    BadInput,
    check_bad_input,
    forest_sea_raster,
    make_rgb_classes,
    run_cli,
    smooth_field,
    write_geotiff,
)
from core.change.pair import name_by_order
from core.checkpoint import FORMAT_VERSION
from core.errors import BandMismatchError, ValueScaleError
from core.io.bands import (
    SENTINEL2_BANDS,
    SENTINEL2_L2A_BANDS,
    assumed_band_names,
    band_from_filename,
    canonical_order,
    names_from_descriptions,
    parse_band_list,
    vrt_band_names,
)
from core.io.normalization import BandStats, estimate_band_stats, rescale_factor, scale_of_values, with_value_scale
from core.io.raster import BandRef, StackReader, open_date
from core.pretrain.scenes import discover_scenes, same_pixels

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "resources" / "models" / "oscd-change"
STAC = ("coastal", "blue", "green", "red", "rededge", "nir", "nir08", "nir09", "cirrus", "swir16", "swir22")


# --- names -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("descriptions, sentinel2, names, ambiguous", [
    (["R", "G", "B"], False, ["B04", "B03", "B02"], []),
    (["Red", "Green", "Blue", "NIR"], False, ["B04", "B03", "B02", "B08"], []),
    (list(STAC), False, ["B01", "B02", "B03", "B04", "rededge", "B08", "B8A", "B09", "B10", "B11", "B12"], []),
    (["B04", "B03", "B02"], False, ["B04", "B03", "B02"], []),
    (["B2", "B3", "B4", "B8"], False, ["B2", "B3", "B4", "B8"], ["B2", "B3", "B4", "B8"]),  # Landsat or S2?
    (["B2", "B3", "B4", "B8A"], False, ["B02", "B03", "B04", "B8A"], []),  # B8A: only Sentinel-2 has it
    (["B2", "B3", "B4"], True, ["B02", "B03", "B04"], []),  # the file says Sentinel-2
    (["SR_B4", "SR_B5"], False, ["SR_B4", "SR_B5"], ["SR_B4", "SR_B5"]),  # Landsat's B5 is NIR, not B05
    (["Band 1", "band_2", ""], False, [None, None, None], []),  # positions name nothing
    (["NDVI", None], False, ["NDVI", None], []),
], ids=["rgb", "colour-words", "stac", "s2-ids", "short-ids", "short-ids-b8a", "short-ids-s2-file", "landsat-c2",
        "positional", "partial"])
def test_descriptions_are_recognised_only_where_unambiguous(descriptions, sentinel2, names, ambiguous) -> None:
    assert names_from_descriptions(descriptions, sentinel2) == (names, ambiguous)


def test_file_names_words_and_order() -> None:
    assert band_from_filename("S2A_OPER_MSI_L1C_TL_EPA__20160809T015434_A000162_T32TPP_B8A.tif") == "B8A"
    assert band_from_filename("T31UDQ_20200101T105019_B04_10m.jp2") == "B04"
    assert band_from_filename("LC08_L2SP_199031_20200101_20200823_02_T1_SR_B4.TIF") is None
    assert band_from_filename("LC08_L1TP_199031_20200101_20200823_02_T1_B10.TIF") is None  # thermal, not cirrus
    assert band_from_filename("scene_B4.tif") is None  # Landsat's spelling
    assert parse_band_list("red, green,blue") == ("B04", "B03", "B02")
    assert assumed_band_names("L2A") == SENTINEL2_L2A_BANDS and assumed_band_names("l1c") == SENTINEL2_BANDS
    assert assumed_band_names("R,G,B,nir") == ("B04", "B03", "B02", "B08") and assumed_band_names("") == ()
    with pytest.raises(BandMismatchError, match="--assume-band-names lists"):
        assumed_band_names("B02,b2")
    assert canonical_order(["R", "G", "B"]) == ["R", "G", "B"]  # was sorted into B, G, R
    assert canonical_order(["NDVI", "B8A", "B04", "B02"]) == ["B02", "B04", "B8A", "NDVI"]


def test_a_raster_keeps_its_users_band_order(make_geotiff) -> None:
    unknown = open_date(make_geotiff("zyx.tif", bands=3, descriptions=["Z", "Y", "X"]))
    assert unknown.band_names == ["Z", "Y", "X"] and [b.index for b in unknown.bands] == [1, 2, 3]
    rgb = open_date(make_geotiff("rgb.tif", bands=3, descriptions=["R", "G", "B"]))
    assert rgb.band_names == ["B02", "B03", "B04"] and [b.index for b in rgb.bands] == [3, 2, 1]  # red is band 1
    assert not rgb.unnamed and open_date(make_geotiff("plain.tif", bands=3)).unnamed


def _band_files(folder: Path, names: tuple[str, ...] = SENTINEL2_BANDS, prefix: str = "T31TCJ_20200101") -> Path:
    """One constant single-band file per name (value 100 x its position), all on one 10 m grid."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names, 1):
        write_geotiff(folder / f"{prefix}_{name}.tif", np.full((1, 32, 32), 100 * i, "uint16"), nodata=None)
    return folder


def _separate_vrt(path: Path, files: list[Path]) -> Path:
    """What ``gdalbuildvrt -separate`` writes: one band per file, in the given order, no descriptions."""
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{i}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{f.name}</SourceFilename><SourceBand>1</SourceBand>'
        '<SrcRect xOff="0" yOff="0" xSize="32" ySize="32" /><DstRect xOff="0" yOff="0" xSize="32" ySize="32" />'
        "</SimpleSource></VRTRasterBand>" for i, f in enumerate(files, 1))
    path.write_text(f'<VRTDataset rasterXSize="32" rasterYSize="32"><SRS>EPSG:32631</SRS>'
                    f"<GeoTransform>500000, 10, 0, 4600000, 0, -10</GeoTransform>{bands}</VRTDataset>")
    return path


def test_a_separate_vrt_is_named_from_its_band_files(tmp_path) -> None:
    folder = _band_files(tmp_path / "bands")
    files = sorted(folder.iterdir())  # file order: ..., B09, B10, B11, B12, B8A (B8A last)
    assert files[-1].name.endswith("_B8A.tif")
    vrt = _separate_vrt(folder / "stack.vrt", files)
    assert vrt_band_names(vrt.read_text())[-1] == "B8A"
    date = open_date(vrt)
    assert date.band_names == list(SENTINEL2_BANDS) and not date.unnamed
    x, _ = StackReader(date, date.grid, ["B8A", "B09", "B11"]).read(Window(0, 0, 8, 8))
    expected = [100 * (SENTINEL2_BANDS.index(b) + 1) for b in ("B8A", "B09", "B11")]
    assert x[:, 0, 0].tolist() == expected  # by order, band 13 would have been read as B12 and B8A as B09


def test_one_band_file_brings_its_siblings(tmp_path) -> None:
    folder = _band_files(tmp_path / "imgs_1", ("B02", "B03", "B04", "B08"))
    _band_files(folder, ("B02",), prefix="OTHER_DATE")  # another date's file in the same folder stays out
    date = open_date(folder / "T31TCJ_20200101_B03.tif")
    assert date.band_names == ["B02", "B03", "B04", "B08"]
    assert {b.path.name.split("_B")[0] for b in date.bands} == {"T31TCJ_20200101"}


def test_order_fallback_says_so_with_the_fix_and_ambiguous_names_are_refused(make_geotiff, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="core")
    date = name_by_order(open_date(make_geotiff("plain.tif", bands=3)), ["B04", "B03", "B02"])
    assert date.band_names == ["B04", "B03", "B02"]
    assert "plain.tif" in caplog.text and "taking them in order as B04, B03, B02" in caplog.text
    assert "--assume-band-names" in caplog.text
    gee = open_date(make_geotiff("gee.tif", bands=3, descriptions=["B2", "B3", "B4"]))
    assert "may be Landsat or Sentinel-2" in caplog.text
    with pytest.raises(BandMismatchError, match="Landsat.*--assume-band-names.*B02,B03,B04"):
        name_by_order(gee, ["B02", "B03", "B04"])
    named = open_date(make_geotiff("gee.tif", bands=3, descriptions=["B2", "B3", "B4"]), ("B02", "B03", "B04"))
    assert name_by_order(named, ["B02", "B03", "B04"]) is named
    with pytest.raises(BandMismatchError, match="--assume-band-names gives 12 names.*has 3 bands"):
        open_date(make_geotiff("three.tif", bands=3), SENTINEL2_L2A_BANDS)


def test_pretraining_refuses_an_unnamed_sentinel2_stack_and_flags_the_rest(make_geotiff, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="core")
    l2a = [make_geotiff(f"l2a_{i}.tif", bands=12, size=32, seed=i) for i in range(2)]
    with pytest.raises(BandMismatchError, match="l2a_0.tif.*--assume-band-names l2a"):
        discover_scenes(l2a)
    assert discover_scenes(l2a, SENTINEL2_L2A_BANDS)[0].dates[0].band_names == list(SENTINEL2_L2A_BANDS)
    discover_scenes([make_geotiff("rgb.tif", bands=3, size=32)])
    assert "rgb.tif' does not name its bands" in caplog.text and "--assume-band-names" in caplog.text
    assert "has one date" in caplog.text  # one file is no time series


# --- value scale -------------------------------------------------------------------------------------------------

def test_every_model_states_its_value_scale_and_old_configs_get_it_from_their_means() -> None:
    shipped = json.loads((SHIPPED / "config.json").read_text())["normalization"]
    assert shipped["value_scale"] == "sentinel2_dn"
    old = {k: v for k, v in shipped.items() if k != "value_scale"}  # a config written before the field existed
    stats = BandStats.from_dict(old)
    assert stats.value_scale == "sentinel2_dn" and stats.to_dict()["value_scale"] == "sentinel2_dn"
    assert BandStats.from_dict(stats.to_dict()) == stats
    reflectance = BandStats(("B02",), (0.12,), (0.05,))
    assert reflectance.value_scale == "reflectance"
    rng = np.random.default_rng(0)
    valid = np.ones((16, 16), bool)
    measured = estimate_band_stats(["B02"], [(rng.uniform(0, 0.4, (1, 16, 16)).astype("float32"), valid)])
    assert measured.to_dict()["value_scale"] == "reflectance"
    eight = estimate_band_stats(["B04"], [(rng.integers(0, 256, (1, 16, 16)).astype("float32"), valid)])
    assert eight.value_scale == "uint8"


@pytest.mark.parametrize("values, scale", [
    (np.array([0.01, 0.2, 0.45, 1.3]), "reflectance"),
    (np.array([0.0, 17.0, 130.0, 255.0]), "uint8"),
    (np.array([120.0, 900.0, 2400.0, 11000.0]), "sentinel2_dn"),
    (np.array([1.5, 17.25, 40.5, 80.125]), None),  # per-cent reflectance fits no scale
    (np.array([]), None),
], ids=["reflectance", "8-bit", "dn", "per-cent", "empty"])
def test_scale_of_values(values, scale) -> None:
    assert scale_of_values(values) == scale


def test_reflectance_is_rescaled_in_the_reading_path_and_8_bit_stops(make_geotiff, tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="core")
    dn = smooth_field(np.random.default_rng(1), 2, 48)
    refl = write_geotiff(tmp_path / "refl.tif", (dn / 10000).astype("float32"), nodata=None,
                         descriptions=["B02", "B03"])
    date = with_value_scale(open_date(refl), ["B02", "B03"], "sentinel2_dn")
    assert date.scale == 10000 and "refl.tif' holds reflectance" in caplog.text
    x, _ = StackReader(date, date.grid, ["B02", "B03"]).read(Window(0, 0, 48, 48))
    np.testing.assert_allclose(x, dn, rtol=1e-5)
    assert with_value_scale(open_date(refl), ["B02"], "sentinel2_dn", declared="sentinel2_dn").scale == 1.0
    assert rescale_factor("sentinel2_dn", "reflectance", "a.tif") == pytest.approx(1e-4)
    with pytest.raises(ValueScaleError, match="8-bit.*cannot be turned back into reflectance"):
        rescale_factor("uint8", "sentinel2_dn", "a.tif")


def test_same_raster_is_recognised_by_files_or_pixels(make_geotiff, tmp_path) -> None:
    a = make_geotiff("a.tif", bands=2, seed=1)
    copy = Path(shutil.copy(a, tmp_path / "copy.tif"))
    other = make_geotiff("b.tif", bands=2, seed=2)
    bands = ["band1", "band2"]
    (tmp_path / "link.tif").symlink_to(a)
    assert same_pixels(open_date(a), open_date(tmp_path / "link.tif"), bands)
    assert same_pixels(open_date(a), open_date(copy), bands)
    assert not same_pixels(open_date(a), open_date(other), bands)


def test_a_vrt_of_the_same_band_files_is_the_same_raster(make_band_folder, tmp_path) -> None:
    """t1 as the band folder, t2 as a gdalbuildvrt stack of the same files (on another grid): no pixels compare."""
    if shutil.which("gdalbuildvrt") is None:
        pytest.skip("gdalbuildvrt (gdal-bin) is not installed")
    first, second = make_band_folder("imgs_1", seed=1), make_band_folder("imgs_2", seed=2)

    def stack(folder: Path, vrt: Path) -> Path:
        subprocess.run(["gdalbuildvrt", "-q", "-separate", str(vrt), *sorted(map(str, folder.glob("*.tif")))],
                       check=True)
        return vrt

    bands = ["B02", "B03", "B04", "B08", "B11"]
    elsewhere = stack(first, tmp_path / "elsewhere.vrt")  # absolute source paths, a coarser (average) grid
    beside = stack(first, first / "stack.vrt")  # relative source paths
    assert not open_date(elsewhere).grid.same_as(open_date(first).grid)
    for vrt in (elsewhere, beside):
        assert same_pixels(open_date(first), open_date(vrt), bands), vrt
    subprocess.run(["gdalbuildvrt", "-q", str(tmp_path / "of_a_vrt.vrt"), str(beside)], check=True)
    b03 = sorted(first.glob("*_B03.tif"))[0].resolve()
    assert BandRef("band3", tmp_path / "of_a_vrt.vrt", 3).origin() == (b03, 1)  # through two VRTs
    assert not same_pixels(open_date(first), open_date(stack(second, tmp_path / "t2.vrt")), bands)


# --- real files an analyst has -----------------------------------------------------------------------------------

@pytest.mark.realdata
def test_gdalbuildvrt_stack_of_a_real_city_reads_the_right_bands(shared_data, tmp_path) -> None:
    if shutil.which("gdalbuildvrt") is None:
        pytest.skip("gdalbuildvrt (gdal-bin) is not installed")
    folder = shared_data / "oscd" / "images" / "nantes" / "imgs_1"
    files = sorted(str(p) for p in folder.glob("*.tif") if not p.name.endswith("_B10.tif"))  # B8A last
    vrt = tmp_path / "stack.vrt"
    subprocess.run(["gdalbuildvrt", "-q", "-separate", "-resolution", "highest", str(vrt), *files], check=True)
    date = open_date(vrt)
    assert date.band_names == list(SENTINEL2_L2A_BANDS) and not date.unnamed
    assert all(Path(files[ref.index - 1]).name.endswith(f"_{ref.name}.tif") for ref in date.bands)
    folder_date = open_date(folder)
    assert folder_date.grid.same_as(date.grid)
    window = Window(100, 100, 160, 160)
    from_vrt, _ = StackReader(date, date.grid, ["B02", "B8A", "B09"]).read(window)
    from_folder, _ = StackReader(folder_date, date.grid, ["B02", "B8A", "B09", "B12"]).read(window)
    np.testing.assert_array_equal(from_vrt[0], from_folder[0])  # 10 m: the very same pixels
    corr = np.corrcoef(from_vrt[1].ravel(), from_folder[1:].reshape(3, -1))[0, 1:]  # VRT's B8A vs B8A, B09, B12
    assert corr[0] > 0.95 and corr[0] > corr[1] + 0.05 and corr[0] > corr[2] + 0.05, corr


@pytest.mark.realdata
def test_float_reflectance_gives_the_digital_number_map(shared_data, tmp_path, capsys) -> None:
    city = shared_data / "oscd" / "images" / "nantes"
    paths = {}
    for i in (1, 2):
        date = open_date(city / f"imgs_{i}")
        grid = open_date(city / "imgs_1").grid
        x, _ = StackReader(date, grid, SENTINEL2_L2A_BANDS).read(Window(200, 150, 128, 128))
        for kind, data in (("dn", x.round().astype("uint16")), ("refl", (x.round() / 10000).astype("float32"))):
            paths[kind, i] = write_geotiff(tmp_path / f"{kind}{i}.tif", data, nodata=None,
                                           descriptions=SENTINEL2_L2A_BANDS)

    def detect(kind: str, *extra: str) -> np.ndarray:
        out = tmp_path / f"out_{kind}{len(extra)}"
        code, events = run_cli(["detect", "--t1", str(paths[kind, 1]), "--t2", str(paths[kind, 2]), "--out",
                                f"{out}.tif", "--probability", f"{out}_p.tif", "--tile", "128", "--device", "cpu",
                                *extra], capsys)
        assert code == 0, events[-1]
        with rasterio.open(f"{out}_p.tif") as ds:
            return ds.read(1)

    dn, refl = detect("dn"), detect("refl")
    np.testing.assert_allclose(refl, dn, atol=1e-4)
    assert np.nanmax(detect("refl", "--value-scale", "sentinel2_dn")) < 0.1  # what it used to do: no change


def test_an_rgb_export_is_read_by_its_band_names_not_their_order(tmp_path, capsys) -> None:
    from core.config import ClassifyConfig
    from core.landcover.training import finetune_classify

    data = make_rgb_classes(tmp_path / "data", per_class=8, classes=("Forest", "Sea"))
    finetune_classify(data, tmp_path / "model", ClassifyConfig(linear_probe=True, epochs=6, batch_size=8,
                                                               val_fraction=0.0, device="cpu"))
    rgb = forest_sea_raster(tmp_path / "rgb.tif")  # unnamed R, G, B (8-bit)
    with rasterio.open(rgb) as ds:
        image = ds.read()
    bgr = write_geotiff(tmp_path / "bgr.tif", image[::-1].copy(), nodata=0, descriptions=["Blue", "Green", "Red"])
    maps = []
    for raster in (rgb, bgr):
        out = tmp_path / f"lc_{raster.stem}.tif"
        code, events = run_cli(["classify", "--raster", str(raster), "--model", str(tmp_path / "model"), "--out",
                                str(out), "--probabilities", str(tmp_path / f"p_{raster.stem}.tif"), "--device",
                                "cpu"], capsys)
        assert code == 0, events[-1]
        with rasterio.open(tmp_path / f"p_{raster.stem}.tif") as ds:
            maps.append(ds.read())
    np.testing.assert_allclose(maps[1], maps[0], atol=1e-5)  # blue first in the file, still read as blue


# --- bad command lines (one row per case) ------------------------------------------------------------------------

def _l2a(folder: Path, name: str, dtype: str = "uint16", seed: int = 0, scale: float = 1.0,
         names: tuple[str, ...] | None = SENTINEL2_L2A_BANDS, count: int = 12) -> str:
    data = smooth_field(np.random.default_rng(seed), count if names is None else len(names), 64)
    data = (data * scale).astype(dtype) if dtype != "uint8" else (data // 8).clip(0, 255).astype("uint8")
    return str(write_geotiff(folder / name, data, nodata=None, descriptions=names))


def _detect(*extra: str, t2: str = "b.tif", dtype: str = "uint16", scale: float = 1.0,
            names: tuple[str, ...] | None = SENTINEL2_L2A_BANDS):
    def argv(folder: Path) -> list[str]:
        a = _l2a(folder, "a.tif", dtype, 1, scale, names)
        if t2 in ("a.tif", "link.tif", "copy.tif"):
            b = a if t2 == "a.tif" else str(shutil.copy(a, folder / t2))
            if t2 == "link.tif":
                Path(b).unlink()
                Path(b).symlink_to(a)
        else:
            b = _l2a(folder, t2, dtype, 2, scale, names)
        return ["detect", "--t1", a, "--t2", b, "--out", str(folder / "out.tif"), *extra]
    return argv


def _fake_classifier(folder: Path, bands: tuple[str, ...], mean: float, scale: str) -> str:
    """A classifier folder's config.json (all that is read before a raster is refused)."""
    model = folder / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "format_version": FORMAT_VERSION, "kind": "swimdiff-classify", "classes": ["a", "b"],
        "normalization": {"bands": list(bands), "mean": [mean] * len(bands), "std": [1.0] * len(bands),
                          "value_scale": scale}}))
    return str(model)


def _classify(raster_dtype: str, model_scale: str, *extra: str, named: bool = True):
    def argv(folder: Path) -> list[str]:
        rgb = ("B04", "B03", "B02")
        model = _fake_classifier(folder, rgb, 100.0 if model_scale == "uint8" else 1200.0, model_scale)
        raster = _l2a(folder, "scene.tif", raster_dtype, names=rgb if named else None, count=3)
        return ["classify", "--raster", raster, "--model", model, "--out", str(folder / "lc.tif"), *extra]
    return argv


def _pretrain_unnamed(folder: Path) -> list[str]:
    return ["pretrain", "--data", _l2a(folder, "boadella_2020.tif", "int16", names=None),
            _l2a(folder, "boadella_2021.tif", "int16", seed=3, names=None), "--out", str(folder / "run"),
            "--steps", "1"]


BAD_INPUT = [
    BadInput("threshold-above-1", _detect("--threshold", "1.5"), 2, "--threshold 1.5", ("out.tif",)),
    BadInput("threshold-nan-model", _detect("--threshold", "nan"), 2, "use 0 to 1", ("out.tif",)),
    BadInput("threshold-negative-cva", _detect("--method", "cva", "--threshold", "-0.5"), 2, "use 0 or more",
             ("out.tif",)),
    BadInput("threshold-nan-cva", _detect("--method", "cva", "--threshold", "nan"), 2, "--threshold nan",
             ("out.tif",)),
    BadInput("threshold-negative-features", _detect("--method", "features", "--threshold", "-1"), 2,
             "it is a distance", ("out.tif",)),
    BadInput("t1-is-t2", _detect(t2="a.tif"), 2, "are the same raster", ("out.tif",), ("a.tif",)),
    BadInput("t1-is-t2-by-a-link", _detect(t2="link.tif"), 2, "are the same raster", ("out.tif",)),
    BadInput("t2-is-a-copy-of-t1", _detect("--method", "cva", t2="copy.tif"), 2, "the same pixels",
             ("out.tif",), ("a.tif", "copy.tif")),
    BadInput("8-bit-into-dn-model", _detect(dtype="uint8"), 2, "cannot be turned back into reflectance",
             ("out.tif",), ("a.tif", "b.tif")),
    BadInput("per-cent-reflectance", _detect(dtype="float32", scale=0.01), 2, "cannot tell the value scale",
             ("out.tif",)),
    BadInput("assume-wrong-count-detect", _detect("--assume-band-names", "l1c", names=None), 2,
             "--assume-band-names gives 13 names", ("out.tif",)),
    BadInput("short-ids-may-be-landsat", _detect(names=("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9",
                                                        "B10", "B11", "B12")), 2, "may be Landsat", ("out.tif",)),
    BadInput("landsat-sr-names", _detect(names=tuple(f"SR_B{i}" for i in range(1, 13))), 2,
             "SR_B1, SR_B2, SR_B3, SR_B4, SR_B5, SR_B6, SR_B7, SR_B8, SR_B9, SR_B10, SR_B11, SR_B12 may be Landsat",
             ("out.tif",)),
    BadInput("classify-8-bit-into-dn-model", _classify("uint8", "sentinel2_dn"), 2, "8-bit", ("lc.tif",),
             ("scene.tif",)),
    BadInput("classify-dn-into-8-bit-model", _classify("uint16", "uint8"), 2, "gdal_translate -ot Byte",
             ("lc.tif",)),
    BadInput("classify-assume-wrong-count", _classify("uint16", "sentinel2_dn", "--assume-band-names", "l2a",
                                                      named=False), 2,
             "--assume-band-names gives 12 names", ("lc.tif",)),
    BadInput("pretrain-unnamed-l2a-stack", _pretrain_unnamed, 2, "--assume-band-names l2a", ("run",)),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c.id for c in BAD_INPUT])
def test_bad_input(case: BadInput, tmp_path, capsys) -> None:
    check_bad_input(case, tmp_path / "case", capsys)
