"""No-change scenes: seasonal pairs of a quiet place, cloudy dates left out, trained on as "no change"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_oscd, smooth_field, write_geotiff
from core.change.no_change import load_no_change_scene, mostly_cloud, scene_dates, seasonal_pairs
from core.cli import main
from core.errors import BandMismatchError, RasterReadError
from core.io.normalization import BandStats

BANDS = ["B02", "B03", "B04", "B08"]


def _scene(folder: Path, dates: int = 5, cloudy: tuple[int, ...] = (), named: bool = False) -> Path:
    """``dates`` unnamed 4-band rasters of one place (``2020-0N.tif``); those in ``cloudy`` bright white."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = smooth_field(rng, len(BANDS), 48)
    for i in range(dates):
        data = (base + 50 * i).astype("uint16") if i not in cloudy else np.full_like(base, 6000)
        data[:, :4, :4] = 0  # a nodata corner in every date
        write_geotiff(folder / f"2020-0{i + 1}.tif", data, descriptions=BANDS if named else None)
    return folder


def test_dates_half_the_series_apart_are_paired() -> None:
    dates = [Path(f"d{i}.tif") for i in range(5)]
    assert seasonal_pairs(dates) == [(dates[0], dates[2]), (dates[1], dates[3])]
    assert seasonal_pairs(dates[:2]) == [(dates[0], dates[1])]


def test_a_scene_is_paired_labelled_no_change_and_its_cloudy_dates_left_out(tmp_path, caplog) -> None:
    folder = _scene(tmp_path / "quiet", dates=5, cloudy=(1,))
    assert [p.name for p in scene_dates(folder)] == [f"2020-0{i}.tif" for i in range(1, 6)]
    assert mostly_cloud(folder / "2020-02.tif", BANDS, BANDS) and not mostly_cloud(folder / "2020-01.tif", BANDS, BANDS)
    stats = BandStats(BANDS, [1000.0] * 4, [300.0] * 4)
    with caplog.at_level("INFO"):
        stacks = load_no_change_scene(folder, BANDS, stats, match=True, assume_band_names=BANDS)
    assert "left out 2020-02.tif (mostly cloud or snow)" in caplog.text
    assert [s.name for s in stacks] == ["2020-01~2020-04 (no change)", "2020-03~2020-05 (no change)"]
    for stack in stacks:
        assert stack.x1.shape == (4, 48, 48) and stack.label.shape == (48, 48)
        assert (stack.label[:4, :4] == 255).all() and (stack.label[4:] == 0).all()


def test_bad_scenes_are_refused_with_the_folder_and_the_fix(tmp_path) -> None:
    stats = BandStats(BANDS, [1000.0] * 4, [300.0] * 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RasterReadError, match="'.*empty' holds 0 raster"):
        load_no_change_scene(tmp_path / "empty", BANDS, stats)
    folder = _scene(tmp_path / "three-bands", dates=2)
    with pytest.raises(BandMismatchError, match="--assume-band-names"):
        load_no_change_scene(folder, ["B01", *BANDS], BandStats(["B01", *BANDS], [1000.0] * 5, [300.0] * 5))


def test_finetune_change_trains_on_a_no_change_scene(tmp_path) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha",))
    folder = _scene(tmp_path / "quiet", dates=4, named=True)
    out = tmp_path / "model"
    assert main(["finetune-change", "--data", str(root), "--out", str(out), "--cities", "alpha",
                 "--no-change-scene", str(folder), "--steps", "2", "--batch-size", "2", "--patch-size", "32",
                 "--eval-every", "2"]) == 0
    provenance = json.loads((out / "config.json").read_text())["provenance"]
    assert provenance["no_change_scenes"] == [str(folder)]
    assert provenance["no_change_pairs"] == ["2020-01~2020-03 (no change)", "2020-02~2020-04 (no change)"]
