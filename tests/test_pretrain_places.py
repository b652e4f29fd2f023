"""Scene ids are places on the ground (issue 13, part 1): one large raster holds many scenes, every date and
every product of a place shares its id, and a run that really has one place keeps a contrastive task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from conftest import run_cli, smooth_field, write_geotiff
from core.config import LossConfig
from core.history import read_csv
from core.io.normalization import BandStats
from core.io.raster import Grid, StackReader, open_date
from core.pretrain.places import matching_for_places, place_id, single_place
from core.pretrain.sampler import DateSource, ScenePairDataset
from core.pretrain.scenes import Scene

UTM = CRS.from_epsg(32631)
BANDS = ("B02", "B03", "B04")


def grid(x0: float, y0: float, pixel: float = 10.0, size: int = 600, crs: CRS | None = UTM) -> Grid:
    return Grid(crs, Affine(pixel, 0, x0, 0, -pixel, y0), size, size)


def test_a_place_is_the_ground_cell_not_the_file() -> None:
    a = grid(500_000, 4_600_000)  # 10 m pixels
    b = grid(500_005, 4_600_000, pixel=20.0)  # another product of the same place: other origin and pixel size
    assert place_id(a, 100, 100) == place_id(b, 50, 49.75)  # the same point on the ground
    assert place_id(a, 10, 10) == place_id(a, 150, 150)  # one cell (cells align to map x 499200-501760)
    assert place_id(a, 10, 10) != place_id(a, 10, 300)  # 2.9 km east: the next cell
    assert place_id(a, 10, 10, cell_m=100) != place_id(a, 10, 20, cell_m=100)  # a smaller cell
    assert place_id(a, 10, 10) != place_id(grid(500_000, 4_600_000, crs=CRS.from_epsg(32632)), 10, 10)
    assert all(0 <= place_id(a, r, c) < 2**62 for r, c in ((0, 0), (599, 599)))


def test_one_place_is_a_joint_extent_within_one_cell() -> None:
    small = grid(500_000, 4_600_000, size=75)  # 750 m, like Jaca
    assert single_place([small, small])
    assert not single_place([grid(500_000, 4_600_000)])  # 6 km
    assert not single_place([small, grid(520_000, 4_600_000, size=75)])  # two small places 20 km apart
    assert not single_place([small, grid(500_000, 4_600_000, size=75, crs=CRS.from_epsg(32632))])
    assert single_place([grid(500_000, 4_600_000)], cell_m=10_000)


def three_dates(folder: Path, size: int, origin: tuple[float, float] = (500_000.0, 4_600_000.0)) -> Path:
    folder.mkdir(parents=True)
    for i in range(3):
        write_geotiff(folder / f"2020-0{i + 1}-01.tif", smooth_field(np.random.default_rng(i), len(BANDS), size),
                      descriptions=BANDS, origin=origin)
    return folder


def test_one_large_raster_holds_many_scenes_and_dates_share_them(tmp_path: Path) -> None:
    dates = [open_date(p) for p in sorted(three_dates(tmp_path / "area", 600).iterdir())]  # 6 km x 6 km
    scene = Scene(0, "area", tuple(dates))
    sources = [[DateSource(StackReader(d, scene.grid, BANDS), cache=True) for d in dates]]
    stats = BandStats(BANDS, (1000.0,) * 3, (300.0,) * 3)
    data = ScenePairDataset([scene], sources, stats, patch_size=32, length=64, seed=0)

    ids = [data[i]["scene_id"] for i in range(64)]
    assert len(set(ids)) >= 6  # up to 9 cells of 2560 m (3 x 3 over 6 km)
    again = ScenePairDataset([Scene(7, "other name", tuple(dates))], sources, stats, patch_size=32, length=64, seed=0)
    assert [again[i]["scene_id"] for i in range(64)] == ids  # ids come from the ground, not from the scene list


def test_a_run_on_one_place_switches_matching_off_and_says_why(tmp_path: Path) -> None:
    dates = tuple(open_date(p) for p in sorted(three_dates(tmp_path / "small", 75).iterdir()))
    loss, reason = matching_for_places([Scene(0, "small", dates)], 2560.0, LossConfig(swm_mode="mask"))
    assert loss.swm_mode == "off" and "one place of 2560 m" in reason and "--scene-cell" in reason
    kept, none = matching_for_places([Scene(0, "small", dates)], 200.0, LossConfig(swm_mode="mask"))
    assert kept.swm_mode == "mask" and none == ""


def pretrain(capsys: pytest.CaptureFixture[str], data: Path, out: Path, *extra: str) -> list[dict[str, float]]:
    code, events = run_cli(["pretrain", "--data", str(data), "--out", str(out), "--steps", "24", "--batch-size", "8",
                            "--patch-size", "32", "--queue-size", "64", "--log-every", "1", "--num-workers", "0",
                            "--lambda-diffusion", "0", *extra], capsys)
    assert code == 0, events[-1]
    return read_csv(out / "history.csv")


@pytest.mark.slow
def test_mask_mode_keeps_a_contrastive_loss_once_the_queue_is_full(tmp_path: Path, capsys) -> None:
    """The issue's reproduction on one 6 km raster: with one scene id per raster, every queued key was "the same
    scene" once the start-up keys were overwritten (64 keys / 8 per step: from step 9) and the loss was exactly 0."""
    rows = pretrain(capsys, three_dates(tmp_path / "area", 600), tmp_path / "run", "--swm-mode", "mask")
    late = [row["loss_contrastive"] for row in rows if row["step"] > 12]
    assert len(late) == 12 and min(late) > 0.1
    assert min(row["negatives"] for row in rows if row["step"] > 12) > 0


@pytest.mark.realdata
def test_jaca_one_place_falls_back_and_keeps_learning(shared_data: Path, tmp_path: Path, capsys) -> None:
    rows = pretrain(capsys, shared_data / "multitemporal" / "jaca_s2l2a_4dates", tmp_path / "jaca",
                    "--swm-mode", "mask", "--assume-band-names", "l2a")
    assert min(row["loss_contrastive"] for row in rows if row["step"] > 12) > 0.1
    config = json.loads((tmp_path / "jaca" / "config.json").read_text())
    assert config["loss"]["swm_mode"] == "off"
    assert "one place of 2560 m" in config["provenance"]["scene_wide_matching"]
