"""Reading dates and scenes from generated GeoTIFFs: band naming, resampling, nodata, errors."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from core.errors import BandMismatchError, GridMismatchError, NoDataError, RasterReadError
from core.io.bands import band_from_filename, canonical_order, normalise_band_name, parse_band_list
from core.io.raster import StackReader, open_date
from core.pretrain.scenes import common_bands, discover_scenes


def test_band_names_are_canonical() -> None:
    assert normalise_band_name("b2") == "B02"
    assert normalise_band_name("B8a") == "B8A"
    assert normalise_band_name("NDVI") == "NDVI"
    assert band_from_filename("S2A_OPER_MSI_L1C_TL_EPA__20160809T015434_A000162_T32TPP_B8A.tif") == "B8A"
    assert band_from_filename("T32TPP_20180211T102141_B01.tif") == "B01"
    assert band_from_filename("preview.tif") is None
    assert canonical_order(["B12", "B8A", "B02", "B08"]) == ["B02", "B08", "B8A", "B12"]
    assert parse_band_list("B04, b3,B2") == ("B04", "B03", "B02")
    with pytest.raises(BandMismatchError, match="more than once"):
        parse_band_list("B02,B2")


def test_multiband_names_from_descriptions_else_index(make_geotiff) -> None:
    named = open_date(make_geotiff("named.tif", bands=3, descriptions=["B04", "B03", "B02"]))
    assert named.band_names == ["B02", "B03", "B04"]  # stacked in sensor order
    assert [b.index for b in named.bands] == [3, 2, 1]
    plain = open_date(make_geotiff("plain.tif", bands=3))
    assert plain.band_names == ["band1", "band2", "band3"]
    assumed = open_date(make_geotiff("l2a.tif", bands=3), assume_band_names=("B02", "B03", "B04"))
    assert assumed.band_names == ["B02", "B03", "B04"]


def test_band_folder_resamples_to_finest_grid(make_band_folder) -> None:
    date = open_date(make_band_folder(size=120))
    assert len(date.bands) == 13
    assert date.grid.pixel_size == (10.0, 10.0)
    assert (date.grid.width, date.grid.height) == (120, 120)
    reader = StackReader(date, date.grid, ["B02", "B05", "B01"])
    x, valid = reader.read(Window(30, 40, 48, 48))
    assert x.shape == (3, 48, 48) and x.dtype == np.float32
    assert valid.all()
    # B05 is at 20 m: its resampled window must be smooth at 10 m (neighbours nearly equal)
    assert np.abs(np.diff(x[1], axis=1)).mean() < np.abs(np.diff(x[0], axis=1)).mean()
    whole, _ = reader.read_all(rows_per_block=50)
    np.testing.assert_allclose(whole[:, 40:88, 30:78], x)


def test_nodata_pixels_are_invalid_and_zeroed(make_geotiff, tmp_path) -> None:
    import rasterio

    path = make_geotiff("holes.tif", bands=2, size=32, nodata=0)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[0, :4, :] = 0
        ds.write(data)
    date = open_date(path)
    x, valid = StackReader(date, date.grid, date.band_names).read(Window(0, 0, 32, 32))
    assert not valid[:4].any() and valid[4:].all()
    assert (x[:, :4] == 0).all()


def test_not_a_raster_names_the_file(tmp_path) -> None:
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not a GeoTIFF")
    with pytest.raises(RasterReadError, match="notes.tif"):
        open_date(bad)
    with pytest.raises(RasterReadError, match="does not exist"):
        open_date(tmp_path / "missing.tif")


def test_truncated_geotiff_is_a_clear_error(make_geotiff) -> None:
    path = make_geotiff("cut.tif", bands=4, size=256, nodata=None)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(RasterReadError, match="cut.tif"):
        date = open_date(path)
        StackReader(date, date.grid, date.band_names).read_all()


def test_scene_from_dated_folder_and_explicit_files(make_geotiff, tmp_path) -> None:
    a = make_geotiff("a_2020.tif", bands=4, seed=1)
    b = make_geotiff("b_2021.tif", bands=4, seed=2)
    scenes = discover_scenes([tmp_path])
    assert [(s.scene_id, s.name, len(s.dates)) for s in scenes] == [(0, tmp_path.name, 2)]
    explicit = discover_scenes([b, a])
    assert [d.source for d in explicit[0].dates] == [b, a]


def test_oscd_layout_gives_one_scene_per_city(make_band_folder, tmp_path) -> None:
    for city in ("alpha", "beta"):
        make_band_folder(f"oscd/images/{city}/imgs_1", size=60, bands=("B02", "B03", "B04", "B05"))
        make_band_folder(f"oscd/images/{city}/imgs_2", size=60, bands=("B02", "B03", "B04", "B05"), seed=3)
    scenes = discover_scenes([tmp_path / "oscd"])
    assert [(s.scene_id, s.name, len(s.dates)) for s in scenes] == [(0, "alpha", 2), (1, "beta", 2)]
    assert common_bands(scenes) == ["B02", "B03", "B04", "B05"]
    with pytest.raises(BandMismatchError, match="B08"):
        common_bands(scenes, ["B02", "B08"])


def test_dates_in_other_crs_or_place_are_rejected(make_geotiff) -> None:
    a = make_geotiff("a.tif", bands=2)
    b = make_geotiff("b.tif", bands=2, crs="EPSG:32632")
    with pytest.raises(GridMismatchError, match="b.tif.*reproject"):
        discover_scenes([a, b])
    c = make_geotiff("c.tif", bands=2, origin=(510000.0, 4600000.0))
    with pytest.raises(GridMismatchError, match="c.tif.*same extent"):
        discover_scenes([a, c])


def test_all_nodata_raster_is_rejected(make_geotiff) -> None:
    empty = make_geotiff("empty.tif", bands=2, fill=0, nodata=0)
    with pytest.raises(NoDataError, match="empty.tif"):
        discover_scenes([empty])


def test_missing_band_names_the_date(make_geotiff) -> None:
    a = make_geotiff("a.tif", bands=2, descriptions=["B02", "B03"])
    b = make_geotiff("b.tif", bands=2, descriptions=["B02", "B04"])
    scenes = discover_scenes([a, b])
    assert common_bands(scenes) == ["B02"]
    with pytest.raises(BandMismatchError, match="b.tif.*B03"):
        common_bands(scenes, ["B02", "B03"])
