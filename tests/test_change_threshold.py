"""``swimdiff threshold``: a saved change probability re-thresholded into the mask ``detect`` would write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import BadInput, check_bad_input, run_cli, smooth_field, write_geotiff
from core.change.default_model import DEFAULT_CHANGE_MODEL
from core.change.pair import MASK_COLORS, change_mask
from core.change.threshold import threshold_probability
from core.cli import main
from core.errors import Cancelled

ORIGIN = (600000.0, 5000000.0)


def probability_file(path: Path, values: np.ndarray, nodata: float | None = float("nan"), crs: str = "EPSG:32630",
                     dtype: str = "float32") -> Path:
    """A 1-band probability GeoTIFF (20 m pixels, ``crs``) of the (H, W) ``values``."""
    return write_geotiff(path, values[None].astype(dtype), crs=crs, origin=ORIGIN, pixel=20.0, nodata=nodata)


def read_mask(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(1), {"crs": ds.crs.to_string(), "transform": tuple(ds.transform), "nodata": ds.nodata,
                            "dtype": ds.dtypes[0], "count": ds.count, "tags": ds.tags(),
                            "colormap": {k: ds.colormap(1)[k] for k in (0, 1)}, "description": ds.descriptions[0]}


def test_the_mask_is_change_above_the_threshold_with_nodata_grid_and_tags_kept(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.1, 0.5, 0.50001, 1.0],
                       [np.nan, 0.49, 0.7, np.nan, 0.2],
                       [-1.0, 0.6, 0.3, 0.5, 0.9]])  # -1: the file's declared nodata
    prob = probability_file(tmp_path / "prob.tif", values, nodata=-1.0)
    out = tmp_path / "mask.tif"
    assert main(["threshold", "--probability", str(prob), "--threshold", "0.5", "--out", str(out)]) == 0
    mask, meta = read_mask(out)
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 1], [255, 0, 1, 255, 0], [255, 1, 0, 0, 1]])
    with rasterio.open(prob) as p:
        assert meta["crs"] == "EPSG:32630" and meta["transform"] == tuple(p.transform)
    assert (meta["nodata"], meta["dtype"], meta["count"], meta["description"]) == (255, "uint8", 1, "change")
    assert {k: c[:3] for k, c in meta["colormap"].items()} == {k: c[:3] for k, c in MASK_COLORS.items()}
    assert {k: meta["tags"][k] for k in ("method", "threshold", "probability")} == {
        "method": "threshold", "threshold": "0.5", "probability": str(prob)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "prob.tif"]  # no temporary left


def test_strips_equal_the_whole_raster_and_progress_reaches_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = rng.random((70, 45)).astype(np.float32)
    values[10:20, 5:9] = np.nan
    prob = probability_file(tmp_path / "prob.tif", values)
    seen: list[float] = []
    result = threshold_probability(prob, 0.37, tmp_path / "mask.tif", progress=lambda f, _m: seen.append(f), rows=16)
    mask, _ = read_mask(tmp_path / "mask.tif")
    np.testing.assert_array_equal(mask, change_mask(values, 0.37))
    assert seen == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5, 1.0])  # 70 rows in strips of 16
    valid = ~np.isnan(values)
    assert result.changed_fraction == pytest.approx((values[valid] > 0.37).mean())
    assert result.threshold == 0.37 and result.change == tmp_path / "mask.tif"


def test_the_mask_rule_ties_and_nan() -> None:
    """One rule for every method (core.change.pair.change_mask): change strictly above the threshold."""
    values = np.array([0.0, 0.3, np.nextafter(np.float32(0.3), np.float32(1)), 0.2999, np.nan, 1.0], np.float32)
    np.testing.assert_array_equal(change_mask(values, np.float32(0.3)), [0, 0, 1, 0, 255, 1])
    np.testing.assert_array_equal(change_mask(values, 0.0), [0, 1, 1, 1, 255, 1])
    np.testing.assert_array_equal(change_mask(values, 1.0), [0, 0, 0, 0, 255, 0])


def test_a_cancel_leaves_no_mask_and_keeps_the_previous_one(tmp_path: Path) -> None:
    prob = probability_file(tmp_path / "prob.tif", np.full((40, 40), 0.8))
    out = tmp_path / "mask.tif"
    out.write_bytes(b"previous")
    with pytest.raises(Cancelled, match="thresholding cancelled"):
        threshold_probability(prob, 0.5, out, should_stop=lambda: True, rows=8)
    assert out.read_bytes() == b"previous" and not list(tmp_path.glob(".*.tmp"))


def twelve_band_pair(folder: Path, bands: list[str], size: int = 64) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    t1 = smooth_field(rng, len(bands), size)
    t2 = t1.copy()
    t2[:, 20:44, 16:40] += 1500  # a new bright block
    t2[:, :, :5] = 0  # nodata columns
    return (write_geotiff(folder / "t1.tif", t1, descriptions=bands),
            write_geotiff(folder / "t2.tif", t2, descriptions=bands))


@pytest.mark.skipif(not (DEFAULT_CHANGE_MODEL / "model.safetensors").is_file(), reason="no shipped change model")
def test_the_mask_equals_the_one_detect_writes_at_the_same_threshold(tmp_path: Path) -> None:
    bands = json.loads((DEFAULT_CHANGE_MODEL / "config.json").read_text())["bands"]
    t1, t2 = twelve_band_pair(tmp_path, bands)
    prob = tmp_path / "prob.tif"
    assert main(["detect", "--t1", str(t1), "--t2", str(t2), "--out", str(tmp_path / "first.tif"),
                 "--probability", str(prob), "--tile", "64", "--device", "cpu"]) == 0
    with rasterio.open(prob) as p:
        values = p.read(1)
    threshold = float(f"{np.nanmedian(values):.4g}")  # a threshold with change on both sides
    assert main(["detect", "--t1", str(t1), "--t2", str(t2), "--out", str(tmp_path / "detected.tif"),
                 "--threshold", repr(threshold), "--tile", "64", "--device", "cpu"]) == 0
    assert main(["threshold", "--probability", str(prob), "--threshold", repr(threshold),
                 "--out", str(tmp_path / "rethresholded.tif")]) == 0
    detected, want = read_mask(tmp_path / "detected.tif")
    mask, got = read_mask(tmp_path / "rethresholded.tif")
    np.testing.assert_array_equal(mask, detected)
    assert (mask[:, :5] == 255).all() and 0 < (mask == 1).sum() < (mask != 255).sum()  # nodata, both classes
    assert {k: v for k, v in got.items() if k != "tags"} == {k: v for k, v in want.items() if k != "tags"}
    assert got["tags"]["threshold"] == want["tags"]["threshold"] == f"{threshold:.4g}"


# --- bad input: one row per case -----------------------------------------------------------------------------

def _prob(folder: Path, name: str = "prob.tif", **kwargs) -> str:
    values = kwargs.pop("values", np.linspace(0, 1, 64 * 64).reshape(64, 64))
    return str(probability_file(folder / name, values, **kwargs))


def _argv(threshold: str = "0.5", out: str = "mask.tif", make=_prob):
    return lambda f: ["threshold", "--probability", make(f), "--threshold", threshold, "--out", str(f / out)]


def _three_bands(f: Path) -> str:
    return str(write_geotiff(f / "prob.tif", np.zeros((3, 16, 16), np.float32), nodata=None))


def _not_a_raster(f: Path) -> str:
    (f / "prob.tif").write_text("not a raster")
    return str(f / "prob.tif")


CASES = [
    BadInput("threshold_above_one", _argv("1.5"), 2, "--threshold 1.5 is out of range", absent=("mask.tif",)),
    BadInput("threshold_below_zero", _argv("-0.1"), 2, "use 0 to 1", absent=("mask.tif",)),
    BadInput("threshold_nan", _argv("nan"), 2, "--threshold nan is out of range", absent=("mask.tif",)),
    BadInput("threshold_infinite", _argv("inf"), 2, "--threshold inf is out of range", absent=("mask.tif",)),
    BadInput("probability_missing", _argv(make=lambda f: str(f / "gone.tif")), 2, "gone.tif' does not exist",
             absent=("mask.tif",)),
    BadInput("probability_not_a_raster", _argv(make=_not_a_raster), 2, "cannot be read as a raster",
             absent=("mask.tif",), unchanged=("prob.tif",)),
    BadInput("probability_three_bands", _argv(make=_three_bands), 2, "has 3 bands of float32, not one band",
             absent=("mask.tif",)),
    BadInput("probability_integer", _argv(make=lambda f: _prob(f, values=np.ones((8, 8)), dtype="uint8", nodata=0)),
             2, "has 1 band of uint8, not one band of probabilities", absent=("mask.tif",)),
    BadInput("out_is_the_probability", _argv(out="prob.tif"), 2, "is an input file of --probability",
             unchanged=("prob.tif",)),
    BadInput("out_folder_missing", _argv(out="no/mask.tif"), 2, "does not exist", absent=("no",)),
    BadInput("probability_all_nan", _argv(make=lambda f: _prob(f, values=np.full((8, 8), np.nan))), 2,
             "holds no valid pixel", absent=("mask.tif",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: BadInput, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_bad_input(case, tmp_path / "case", capsys)


def test_out_linked_to_the_probability_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def argv(f: Path) -> list[str]:
        prob = _prob(f)
        (f / "link.tif").symlink_to(prob)
        return ["threshold", "--probability", prob, "--threshold", "0.5", "--out", str(f / "link.tif")]

    check_bad_input(BadInput("out_links_to_probability", argv, 2, "under another name", unchanged=("prob.tif",)),
                    tmp_path / "case", capsys)


def test_the_result_event_names_the_mask_the_threshold_and_the_share(tmp_path: Path, capsys) -> None:
    prob = probability_file(tmp_path / "prob.tif", np.array([[0.1, 0.9], [0.8, np.nan]]))
    code, events = run_cli(["threshold", "--probability", str(prob), "--threshold", "0.25", "--out",
                            str(tmp_path / "m.tif")], capsys)
    (result,) = [e for e in events if e["event"] == "result"]
    assert code == 0 and result["outputs"] == {"change": str(tmp_path / "m.tif"), "probability": str(prob),
                                               "method": "threshold", "threshold": 0.25,
                                               "changed_fraction": pytest.approx(2 / 3)}
