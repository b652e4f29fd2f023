"""``swimdiff detect --method cva``: georeferenced, streamed, atomic outputs and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from conftest import smooth_field, write_geotiff
from core.change.cva import cva_change, detect_cva
from core.change.pair import MASK_NODATA, open_pair
from core.cli import main
from core.errors import Cancelled


@pytest.fixture
def pair(tmp_path):
    """t1 and t2 (4 named bands, 300 x 200 px, UTM) with a planted change and a nodata strip in t2."""
    rng = np.random.default_rng(0)
    t1 = smooth_field(rng, 4, 300)[:, :200, :]
    t2 = (t1.astype(np.int32) + rng.normal(0, 15, t1.shape)).clip(1, 65535).astype("uint16")
    t2[:, 50:80, 100:160] += 1500  # the change: a 30 x 60 block
    t2[:, 190:, :] = 0  # nodata strip
    names = ["B02", "B03", "B04", "B08"]
    a = write_geotiff(tmp_path / "t1.tif", t1, descriptions=names)
    b = write_geotiff(tmp_path / "t2.tif", t2, descriptions=names)
    return a, b


def test_cva_finds_the_planted_change_and_keeps_the_grid(pair, tmp_path) -> None:
    a, b = pair
    result = detect_cva(open_pair(a, b), tmp_path / "change.tif", tmp_path / "score.tif", tile=64)
    with rasterio.open(a) as src, rasterio.open(result.change) as out, rasterio.open(result.score) as score:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        assert out.nodata == MASK_NODATA and out.dtypes[0] == "uint8" and out.profile["compress"] == "deflate"
        assert out.colormap(1)[1][:3] == (230, 30, 30)
        mask = out.read(1)
        magnitude = score.read(1)
    assert (mask[190:] == MASK_NODATA).all() and np.isnan(magnitude[190:]).all()
    planted = np.zeros(mask.shape, dtype=bool)
    planted[50:80, 100:160] = True
    detected = mask == 1
    iou = (detected & planted).sum() / (detected | planted).sum()
    assert iou > 0.9
    assert result.changed_fraction == pytest.approx(detected.sum() / (mask != MASK_NODATA).sum())
    assert not result.warped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change.tif", "score.tif", "t1.tif", "t2.tif"]


def test_streamed_cva_equals_the_in_memory_computation(pair, tmp_path) -> None:
    a, b = pair
    p = open_pair(a, b)
    streamed = detect_cva(p, tmp_path / "c.tif", tile=64)
    r1, r2 = p.readers()
    (x1, v1), (x2, v2) = r1.read_all(), r2.read_all()
    magnitude, threshold = cva_change(x1, x2, v1 & v2)
    assert streamed.threshold == pytest.approx(threshold, rel=1e-4)
    with rasterio.open(streamed.change) as out:
        mask = out.read(1)
    np.testing.assert_array_equal(mask == 1, (magnitude > threshold) & v1 & v2)


def test_t2_on_another_grid_is_warped_onto_t1(pair, tmp_path) -> None:
    a, b = pair
    with rasterio.open(b) as src:
        data = src.read()
    coarse = write_geotiff(tmp_path / "t2_20m.tif", data[:, ::2, ::2], pixel=20.0,
                           descriptions=["B02", "B03", "B04", "B08"])
    p = open_pair(a, coarse)
    assert p.warped
    result = detect_cva(p, tmp_path / "warped.tif", tile=128)
    with rasterio.open(result.change) as out, rasterio.open(a) as src:
        assert out.shape == src.shape and out.transform == src.transform


def test_cancel_leaves_no_file(pair, tmp_path) -> None:
    a, b = pair
    calls = iter(range(1000))
    with pytest.raises(Cancelled):
        detect_cva(open_pair(a, b), tmp_path / "c.tif", tmp_path / "s.tif", tile=64,
                   should_stop=lambda: next(calls) > 30)  # stops while the outputs are being written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.tif", "t2.tif"]


@pytest.mark.parametrize("case", ["no_overlap", "band_mismatch", "unwritable", "corrupt"])
def test_bad_input_is_one_clear_error(case, pair, tmp_path, capsys) -> None:
    a, b = pair
    out = tmp_path / "out.tif"
    if case == "no_overlap":
        with rasterio.open(b) as src:
            b = write_geotiff(tmp_path / "far.tif", src.read(), origin=(900000.0, 4600000.0),
                              descriptions=["B02", "B03", "B04", "B08"])
        expect = "does not overlap"
    elif case == "band_mismatch":
        with rasterio.open(b) as src:
            b = write_geotiff(tmp_path / "other.tif", src.read()[:2], descriptions=["B11", "B12"])
        expect = "share no band"
    elif case == "unwritable":
        out, expect = tmp_path / "missing" / "out.tif", "does not exist"
    else:
        b = tmp_path / "broken.tif"
        b.write_bytes(b"II*\x00garbage")
        expect = "broken.tif"
    code = main(["detect", "--method", "cva", "--t1", str(a), "--t2", str(b), "--out", str(out), "--events", "jsonl"])
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2 and error["event"] == "error" and expect in error["message"], error
    assert not out.exists()


def test_real_oscd_pair_through_the_cli(shared_data, tmp_path, capsys) -> None:
    city = shared_data / "oscd" / "images" / "bercy"
    out = tmp_path / "bercy.tif"
    code = main(["detect", "--method", "cva", "--t1", str(city / "imgs_1"), "--t2", str(city / "imgs_2"),
                 "--out", str(out), "--events", "jsonl"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and lines[-1]["event"] == "result"
    b02 = next((city / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(out) as result, rasterio.open(b02) as ref:
        assert (result.crs, result.transform, result.shape) == (ref.crs, ref.transform, ref.shape)
        changed = (result.read(1) == 1).mean()
    assert 0.001 < changed < 0.2
