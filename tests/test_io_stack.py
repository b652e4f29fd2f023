"""``swimdiff stack`` / :func:`core.io.stack.build_stack`: a named 10 m VRT from Sentinel-2 band files."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from conftest import BadInput, check_bad_input, run_cli, smooth_field, write_geotiff
from core.errors import Cancelled
from core.io.bands import SENTINEL2_BANDS, SENTINEL2_L2A_BANDS
from core.io.raster import StackReader, open_date
from core.io.stack import NATIVE_RESOLUTION, band_from_path, build_stack

TILE = "T31TCJ_20200101T105441"


def read_all(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile, tuple]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.descriptions


def write_jp2(path: Path, data: np.ndarray, pixel: float) -> Path:
    """A real (lossless) JPEG 2000 band file, as in .SAFE products (GDAL's JP2OpenJPEG driver)."""
    tif = write_geotiff(path.with_suffix(".tif"), data, pixel=pixel, nodata=None)
    rasterio.shutil.copy(tif, path, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    tif.unlink()
    return path


def make_safe(root: Path, level: str, size: int = 60, granules: int = 1) -> tuple[Path, dict[tuple[str, int], Path]]:
    """A .SAFE tree: L1C (``IMG_DATA/*_Bxx.jp2`` + TCI) or L2A (``R10m``/``R20m``/``R60m``/*_Bxx_NNm.jp2, no B10,
    plus TCI, AOT, SCL); returns the product folder and the band files by (band, metres)."""
    safe = root / f"S2A_MSI{level}_20200101T105441_N0208_R051_T31TCJ_20200101T112141.SAFE"
    files: dict[tuple[str, int], Path] = {}
    rng = np.random.default_rng(1)
    for g in range(granules):
        image_data = safe / "GRANULE" / f"{level}_T31TCJ_A0{g}_20200101T105441" / "IMG_DATA"
        if level == "L1C":
            image_data.mkdir(parents=True)
            for band in SENTINEL2_BANDS:
                metres = NATIVE_RESOLUTION[band]
                data = smooth_field(rng, 1, size * 10 // metres)
                files[band, metres] = write_jp2(image_data / f"{TILE}_{band}.jp2", data, metres)
            write_jp2(image_data / f"{TILE}_TCI.jp2", smooth_field(rng, 1, size), 10)
            continue
        for metres in (10, 20, 60):
            folder = image_data / f"R{metres}m"
            folder.mkdir(parents=True)
            for band in SENTINEL2_L2A_BANDS:
                if NATIVE_RESOLUTION[band] <= metres and (metres > 10 or band in ("B02", "B03", "B04", "B08")):
                    data = smooth_field(rng, 1, size * 10 // metres)
                    files[band, metres] = write_jp2(folder / f"{TILE}_{band}_{metres}m.jp2", data, metres)
            for extra in ("AOT", "WVP", "SCL" if metres > 10 else "TCI"):
                write_jp2(folder / f"{TILE}_{extra}_{metres}m.jp2", smooth_field(rng, 1, size * 10 // metres), metres)
    (safe / "MTD_MSIL1C.xml").write_text("<metadata/>")
    return safe, files


def bilinear_2x(band: np.ndarray) -> np.ndarray:
    """Reference 2x bilinear upsampling of pixel-centred grids: out[2k] = .25 s[k-1] + .75 s[k], out[2k+1] =
    .75 s[k] + .25 s[k+1] along each axis (edges clamped)."""
    def axis0(a: np.ndarray) -> np.ndarray:
        prev, nxt = np.vstack([a[:1], a[:-1]]), np.vstack([a[1:], a[-1:]])
        out = np.empty((2 * a.shape[0], a.shape[1]))
        out[0::2], out[1::2] = 0.25 * prev + 0.75 * a, 0.75 * a + 0.25 * nxt
        return out

    return axis0(axis0(band.astype(float)).T).T


def test_band_file_names() -> None:
    assert band_from_path(Path("x/T31TCJ_20200101T105441_B8A.jp2")) == ("B8A", 20)
    assert band_from_path(Path("x/R10m/T31TCJ_20200101T105441_B02_10m.jp2")) == ("B02", 10)
    assert band_from_path(Path("x/R60m/T31TCJ_20200101T105441_B02_60m.jp2")) == ("B02", 60)
    assert band_from_path(Path("x/S2A_OPER_MSI_L1C_TL_MPS__20161130T130757_A007527_T31UDQ_B01.tif")) == ("B01", 60)
    for other in ("T_TCI.jp2", "T_SCL_20m.jp2", "T_AOT_10m.jp2", "T_B02.png", "MTD_TL.xml", "T_B13.tif"):
        assert band_from_path(Path(other)) is None, other


def test_folder_stack_is_named_in_sensor_order_on_the_b02_grid(make_band_folder: Callable[..., Path],
                                                               tmp_path: Path) -> None:
    folder = make_band_folder(size=120)
    result = build_stack(folder, tmp_path / "stack.vrt")

    data, profile, names = read_all(tmp_path / "stack.vrt")
    assert names == SENTINEL2_BANDS == result.bands
    assert names.index("B8A") == names.index("B08") + 1
    b02, b02_profile, _ = read_all(next(folder.glob("*_B02.tif")))
    assert (profile["width"], profile["height"], profile["count"]) == (120, 120, 13)
    assert profile["transform"] == b02_profile["transform"] and profile["crs"] == b02_profile["crs"]
    assert profile["dtype"] == "uint16" and result.kind == "folder"
    assert np.array_equal(data[1], b02[0])  # a 10 m band is copied as is
    assert set(result.resampled) == {"B01", "B05", "B06", "B07", "B8A", "B09", "B10", "B11", "B12"}
    assert set(result.resampled.values()) == {"bilinear"}
    b05, _, _ = read_all(next(folder.glob("*_B05.tif")))  # 60 x 60 at 20 m
    expected = bilinear_2x(b05[0])  # (120, 120)
    assert np.abs(data[4].astype(float) - expected)[1:-1, 1:-1].max() <= 0.5  # bilinear, rounded to uint16
    # the same pixels StackReader gives detect for the band folder, up to rounding of exact .5 ties
    date = open_date(folder)
    x, _ = StackReader(date, date.grid, list(SENTINEL2_BANDS)).read_all()
    difference = np.abs(x - data.astype(np.float32))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_vrt_refers_to_band_files_by_absolute_path_and_can_move(make_band_folder: Callable[..., Path],
                                                                tmp_path: Path) -> None:
    folder = make_band_folder(bands=("B02", "B03", "B11"))
    build_stack(folder, tmp_path / "stack.vrt")
    sources = ET.parse(tmp_path / "stack.vrt").getroot().findall(".//SourceFilename")
    assert [Path(s.text).name for s in sources] == [f"T31TCJ_20200101_{b}.tif" for b in ("B02", "B03", "B11")]
    assert all(Path(s.text).is_absolute() and s.get("relativeToVRT") == "0" for s in sources)
    (tmp_path / "elsewhere").mkdir()
    moved = shutil.move(tmp_path / "stack.vrt", tmp_path / "elsewhere" / "moved.vrt")
    data, _, names = read_all(moved)
    assert names == ("B02", "B03", "B11") and data.shape == (3, 120, 120)
    assert np.array_equal(data[0], read_all(next(folder.glob("*_B02.tif")))[0][0])


def test_band_selection_keeps_sensor_order_and_nodata(tmp_path: Path) -> None:
    folder = tmp_path / "bands"
    folder.mkdir()
    rng = np.random.default_rng(3)
    b02, b05 = smooth_field(rng, 1, 40), smooth_field(rng, 1, 20)
    b02[0, :10, :10] = 0
    write_geotiff(folder / "X_B02.tif", b02, nodata=0)
    write_geotiff(folder / "X_B05.tif", b05, pixel=20.0, nodata=65535)
    write_geotiff(folder / "X_B04.tif", smooth_field(rng, 1, 40), nodata=None)

    result = build_stack(folder, tmp_path / "s.vrt", bands=["b5", "B02", "band 4"])

    assert result.bands == ("B02", "B04", "B05")
    with rasterio.open(tmp_path / "s.vrt") as ds:
        assert ds.nodatavals == (0.0, None, 65535.0)
        masked = ds.read(1, masked=True)
        assert masked.mask[:10, :10].all() and not masked.mask[10:, 10:].any()
    assert result.nodata == {"B02": 0.0, "B05": 65535.0}


def test_l1c_safe_product(tmp_path: Path) -> None:
    safe, files = make_safe(tmp_path, "L1C")
    result = build_stack(safe, tmp_path / "l1c.vrt")

    data, profile, names = read_all(tmp_path / "l1c.vrt")
    assert result.kind == "L1C" and names == SENTINEL2_BANDS  # TCI ignored
    b02, b02_profile, _ = read_all(files["B02", 10])
    assert profile["transform"] == b02_profile["transform"] and data.shape == (13, 60, 60)
    assert np.array_equal(data[1], b02[0])
    with rasterio.open(tmp_path / "l1c.vrt") as ds:
        assert ds.nodatavals == (0.0,) * 13  # the product format's "no data" value; the JP2 files do not say it


def test_l2a_safe_takes_each_band_at_its_finest_resolution(tmp_path: Path) -> None:
    safe, files = make_safe(tmp_path, "L2A")
    result = build_stack(safe, tmp_path / "l2a.vrt")

    data, profile, names = read_all(tmp_path / "l2a.vrt")
    assert result.kind == "L2A" and names == SENTINEL2_L2A_BANDS and data.shape == (12, 60, 60)
    expected = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B01": 60, "B09": 60}
    for band, source in zip(result.bands, result.sources):
        assert source == files[band, expected.get(band, 20)].resolve(), band
    assert np.array_equal(data[1], read_all(files["B02", 10])[0][0])
    assert profile["transform"] == read_all(files["B02", 10])[1]["transform"]
    # the granule folder and its IMG_DATA folder give the same stack
    granule = next((safe / "GRANULE").iterdir())
    for source in (granule, granule / "IMG_DATA"):
        assert build_stack(source, tmp_path / "again.vrt", overwrite=True).sources == result.sources


def test_l2a_stack_at_20_m_uses_the_r20m_files(tmp_path: Path) -> None:
    safe, files = make_safe(tmp_path, "L2A")
    result = build_stack(safe, tmp_path / "l2a20.vrt", resolution=20)
    data, profile, _ = read_all(tmp_path / "l2a20.vrt")
    assert profile["transform"].a == 20.0 and data.shape == (12, 30, 30)
    assert np.array_equal(data[1], read_all(files["B02", 20])[0][0])  # ESA's own 20 m B02, not a resampled one
    assert result.resampled == {"B01": "bilinear", "B09": "bilinear"}


def test_l1c_stack_at_20_m_averages_the_10_m_bands(tmp_path: Path) -> None:
    safe, files = make_safe(tmp_path, "L1C")
    result = build_stack(safe, tmp_path / "l1c20.vrt", resolution=20, bands=["B02", "B05"])
    data, profile, _ = read_all(tmp_path / "l1c20.vrt")
    b02 = read_all(files["B02", 10])[0][0].astype(float)
    expected = b02.reshape(30, 2, 30, 2).mean(axis=(1, 3))
    assert result.resampled == {"B02": "average"} and profile["transform"].a == 20.0
    assert np.abs(data[0] - expected).max() <= 0.5


def test_geotiff_output_is_a_tiled_compressed_copy(make_band_folder: Callable[..., Path], tmp_path: Path) -> None:
    folder = make_band_folder(bands=("B02", "B05", "B01"), size=300)
    build_stack(folder, tmp_path / "stack.vrt")
    progress: list[float] = []
    build_stack(folder, tmp_path / "stack.tif", progress=lambda f, m: progress.append(f))
    vrt, tif = read_all(tmp_path / "stack.vrt"), read_all(tmp_path / "stack.tif")
    assert np.array_equal(vrt[0], tif[0]) and tif[2] == ("B01", "B02", "B05")
    assert tif[1]["driver"] == "GTiff" and tif[1]["tiled"] and tif[1]["compress"] == "deflate"
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs_1", "stack.tif", "stack.vrt"]


@pytest.mark.parametrize("suffix, stop_after", [(".vrt", 0), (".vrt", 2), (".tif", 3), (".tif", 5)])
def test_stopping_leaves_nothing(make_band_folder: Callable[..., Path], tmp_path: Path, suffix: str,
                                 stop_after: int) -> None:
    folder = make_band_folder(bands=("B02", "B05"), size=600)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        build_stack(folder, tmp_path / f"stack{suffix}", should_stop=lambda: next(calls) >= stop_after)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs_1"]


def test_cli_result_event(make_band_folder: Callable[..., Path], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_band_folder(bands=("B02", "B8A", "B08"))
    code, events = run_cli(["stack", "--source", str(folder), "--out", str(tmp_path / "s.vrt")], capsys)
    assert code == 0
    assert events[-1] == {"event": "result", "outputs": {
        "stack": str(tmp_path / "s.vrt"), "bands": ["B02", "B08", "B8A"], "kind": "folder", "crs": "EPSG:32631",
        "width": 120, "height": 120, "resampled": {"B8A": "bilinear"}}}
    assert any(e["event"] == "progress" for e in events)


# --- refusals ------------------------------------------------------------------------------------------------

def _bands(folder: Path, names: tuple[str, ...] = ("B02", "B05"), **kw: object) -> Path:
    bands = folder / "bands"
    bands.mkdir(exist_ok=True)
    for name in names:
        metres = NATIVE_RESOLUTION[name]
        write_geotiff(bands / f"X_{name}.tif", smooth_field(np.random.default_rng(0), 1, 600 // metres),
                      pixel=float(metres), nodata=None, **kw)  # type: ignore[arg-type]
    return bands


def _stack(folder: Path, *extra: str, source: Path | None = None, out: str = "stack.vrt") -> list[str]:
    return ["stack", "--source", str(source or folder / "bands"), "--out", str(folder / out), *extra]


def _other_crs(folder: Path) -> list[str]:
    bands = _bands(folder, ("B02",))
    write_geotiff(bands / "X_B05.tif", smooth_field(np.random.default_rng(0), 1, 30), pixel=20.0, crs="EPSG:32632")
    return _stack(folder)


def _other_extent(folder: Path) -> list[str]:
    bands = _bands(folder, ("B02",))
    write_geotiff(bands / "X_B05.tif", smooth_field(np.random.default_rng(0), 1, 30), pixel=20.0,
                  origin=(501000.0, 4600000.0))
    return _stack(folder)


def _twice(folder: Path) -> list[str]:
    bands = _bands(folder)
    shutil.copy(bands / "X_B02.tif", bands / "Y_B02.tif")
    return _stack(folder)


def _truncated(folder: Path) -> list[str]:
    bands = _bands(folder)
    (bands / "X_B05.tif").write_bytes((bands / "X_B05.tif").read_bytes()[:300])
    return _stack(folder)


def _not_a_raster(folder: Path) -> list[str]:
    bands = _bands(folder)
    (bands / "X_B05.tif").write_text("not a raster")
    return _stack(folder)


def _two_granules(folder: Path) -> list[str]:
    safe, _ = make_safe(folder, "L1C", granules=2)
    return _stack(folder, source=safe)


def _existing(folder: Path) -> list[str]:
    _bands(folder)
    (folder / "stack.vrt").write_text("mine")
    return _stack(folder)


def _empty(folder: Path) -> list[str]:
    (folder / "bands").mkdir()
    (folder / "bands" / "X_TCI.jp2").write_bytes(b"x")
    return _stack(folder)


BAD = [
    BadInput("no-band-files", _empty, 2, "no Sentinel-2 band files", absent=("stack.vrt",)),
    BadInput("source-missing", lambda f: _stack(f), 2, "does not exist", absent=("stack.vrt",)),
    BadInput("source-is-a-file", lambda f: _stack(f, source=_bands(f) / "X_B02.tif"), 2, "is a file, not a folder",
             absent=("stack.vrt",)),
    BadInput("two-granules", _two_granules, 2, "holds 2 GRANULE", absent=("stack.vrt",)),
    BadInput("band-twice", _twice, 2, "two files for B02", absent=("stack.vrt",)),
    BadInput("different-crs", _other_crs, 2, "is in EPSG:32632", absent=("stack.vrt",)),
    BadInput("different-extent", _other_extent, 2, "does not cover the extent", absent=("stack.vrt",)),
    BadInput("unreadable-band", _not_a_raster, 2, "cannot read band B05", absent=("stack.vrt",)),
    BadInput("damaged-band-header", _truncated, 2, "X_B05.tif' has no CRS", absent=("stack.vrt",)),
    BadInput("missing-band", lambda f: _stack(_bands(f).parent, "--bands", "B02,B04"), 2, "has no B04",
             absent=("stack.vrt",)),
    BadInput("not-a-band", lambda f: _stack(_bands(f).parent, "--bands", "B02,NDVI"), 2, "not Sentinel-2 bands",
             absent=("stack.vrt",)),
    BadInput("band-listed-twice", lambda f: _stack(_bands(f).parent, "--bands", "B02,b2"), 2, "more than once",
             absent=("stack.vrt",)),
    BadInput("bad-resolution", lambda f: _stack(_bands(f).parent, "--resolution", "30"), 2,
             "not a Sentinel-2 resolution", absent=("stack.vrt",)),
    BadInput("no-band-at-resolution", lambda f: _stack(_bands(f, ("B02", "B03")).parent, "--resolution", "20"), 2,
             "no 20 m grid", absent=("stack.vrt",)),
    BadInput("out-not-vrt", lambda f: _stack(_bands(f).parent, out="stack.png"), 2, "neither a .vrt nor a .tif",
             absent=("stack.png",)),
    BadInput("out-is-an-input", lambda f: _stack(_bands(f).parent, "--overwrite", out="bands/X_B02.tif"), 2,
             "one of the band files", unchanged=("bands/X_B02.tif",)),
    BadInput("out-exists", _existing, 2, "pass --overwrite", unchanged=("stack.vrt",)),
    BadInput("out-folder-missing", lambda f: _stack(_bands(f).parent, out="nowhere/stack.vrt"), 2,
             "does not exist; create it"),
    BadInput("out-is-a-folder", lambda f: (f / "d.vrt").mkdir() or _stack(_bands(f).parent, out="d.vrt"), 2,
             "is a folder"),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_stack_refuses_bad_input(case: BadInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_bad_input(case, tmp_path / "case", capsys)


# --- real data -----------------------------------------------------------------------------------------------

@pytest.mark.realdata
def test_real_oscd_stacks_detect_like_their_band_folders(shared_data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Stacks of both dates of bercy give the very change mask the band folders give (CVA, same bilinear kernel)."""
    city = shared_data / "oscd" / "images" / "bercy"
    for date in ("imgs_1", "imgs_2"):
        code, _ = run_cli(["stack", "--source", str(city / date), "--out", str(tmp_path / f"{date}.vrt")], capsys)
        assert code == 0
    runs = {"stacks": (tmp_path / "imgs_1.vrt", tmp_path / "imgs_2.vrt"), "folders": (city / "imgs_1", city / "imgs_2")}
    masks = {}
    for name, (t1, t2) in runs.items():
        out = tmp_path / f"{name}.tif"
        code, events = run_cli(["detect", "--method", "cva", "--t1", str(t1), "--t2", str(t2), "--out", str(out)],
                               capsys)
        assert code == 0, events[-1]
        masks[name] = read_all(out)[0][0]
    assert masks["stacks"].shape == (395, 360)
    assert 0 < (masks["stacks"] == 1).mean() < 0.05
    assert np.array_equal(masks["stacks"], masks["folders"])
    # band by band: the 10 m bands are the files; the others agree with StackReader's warp up to .5 ties
    with rasterio.open(tmp_path / "imgs_1.vrt") as ds:
        stacked = ds.read().astype(np.float32)
        b02 = next((city / "imgs_1").glob("*_B02.tif"))
        assert ds.descriptions == SENTINEL2_BANDS
        with rasterio.open(b02) as ref:
            assert ds.transform == ref.transform and ds.crs == ref.crs
    b05 = next((city / "imgs_1").glob("*_B05.tif"))
    with rasterio.open(b05) as src, rasterio.open(b02) as ref:
        with WarpedVRT(src, crs=ref.crs, transform=ref.transform, width=ref.width, height=ref.height,
                       resampling=Resampling.bilinear) as warped:
            difference = np.abs(warped.read(1).astype(np.float32) - stacked[SENTINEL2_BANDS.index("B05")])
    assert difference.max() <= 1 and (difference > 0).mean() < 0.005
