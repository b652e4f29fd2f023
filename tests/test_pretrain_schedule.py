"""Learning-rate schedule and epoch length: pure functions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from affine import Affine

from core.config import TrainConfig
from core.io.raster import Grid
from core.pretrain.scenes import Scene
from core.pretrain.training import learning_rate, steps_per_epoch


def test_warmup_then_cosine_to_zero() -> None:
    train = TrainConfig(steps=110, lr=0.01, warmup_steps=10)
    assert learning_rate(0, 110, train) == pytest.approx(0.001)
    assert learning_rate(9, 110, train) == pytest.approx(0.01)
    assert learning_rate(10, 110, train) == pytest.approx(0.01)
    assert learning_rate(60, 110, train) == pytest.approx(0.005)
    assert learning_rate(110, 110, train) == pytest.approx(0.0, abs=1e-12)
    rates = [learning_rate(s, 110, train) for s in range(10, 110)]
    assert rates == sorted(rates, reverse=True)


def test_steps_per_epoch_counts_non_overlapping_patches_of_every_date() -> None:
    grid = Grid(crs=None, transform=Affine.identity(), width=200, height=100)
    scene = Scene(0, "s", dates=(SimpleNamespace(grid=grid),) * 3)  # type: ignore[arg-type]
    # (200 // 50) * (100 // 50) * 3 dates = 24 patches; a global batch of 8 -> 3 steps
    assert steps_per_epoch([scene], 50, 8) == 3
    assert steps_per_epoch([scene], 50, 7) == 4
