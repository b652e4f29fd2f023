"""Patch sampling: co-located views of two dates, scene ids, determinism, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import PatchSizeError
from core.io.normalization import BandStats, estimate_band_stats
from core.pretrain.places import place_id
from core.pretrain.sampler import ScenePairDataset, augment, build_sources, random_windows
from core.pretrain.scenes import discover_scenes


def _dataset(tmp_path, make_geotiff, cache_mb=64, length=8, seed=0):
    for name, s in (("a_1.tif", 1), ("a_2.tif", 2)):
        make_geotiff(name, bands=3, size=96, seed=s)
    scenes = discover_scenes([tmp_path / "a_1.tif", tmp_path / "a_2.tif"])
    bands = scenes[0].dates[0].band_names
    sources = build_sources(scenes, bands, 32, cache_mb)
    stats = estimate_band_stats(bands, random_windows(sources, 32, 4, seed=0))
    return ScenePairDataset(scenes, sources, stats, 32, length=length, seed=seed), stats


def test_samples_are_deterministic_and_tagged(tmp_path, make_geotiff) -> None:
    dataset, _ = _dataset(tmp_path, make_geotiff)
    first, again = dataset[3], dataset[3]
    assert first["x_q"].shape == (3, 32, 32) and first["x_k"].shape == (3, 32, 32)
    scene = dataset.scenes[0]  # a 64 px raster: all of it lies in one 2560 m ground cell, whatever the window
    assert first["scene_id"] == place_id(scene.grid, 0, 0) == place_id(scene.grid, 63, 63) == dataset[9]["scene_id"]
    torch.testing.assert_close(first["x_q"], again["x_q"])
    assert not torch.equal(dataset[3]["x_q"], dataset[4]["x_q"])


def test_streaming_and_cached_reads_agree(tmp_path, make_geotiff) -> None:
    cached, _ = _dataset(tmp_path, make_geotiff, cache_mb=64)
    scenes = cached.scenes
    bands = scenes[0].dates[0].band_names
    streaming = build_sources(scenes, bands, 32, 0)
    assert streaming[0][0]._cached is None and cached.sources[0][0]._cached is not None
    a = cached.sources[0][1].read(10, 20, 32)
    b = streaming[0][1].read(10, 20, 32)
    np.testing.assert_array_equal(a[0], b[0])


def test_normalisation_statistics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, size=(2, 40, 40)).astype(np.float32)
    valid = np.ones((40, 40), dtype=bool)
    valid[:10] = False
    stats = estimate_band_stats(["B02", "B03"], [(x, valid)])
    np.testing.assert_allclose(stats.mean, x[:, 10:].reshape(2, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(stats.std, x[:, 10:].reshape(2, -1).std(1), rtol=1e-4)
    z = stats.apply(x, valid)
    assert (z[:, :10] == 0).all()
    assert abs(z[:, 10:].mean()) < 1e-4
    assert BandStats.from_dict(stats.to_dict()) == stats


def test_augment_keeps_shape_and_changes_pixels() -> None:
    x = np.random.default_rng(1).normal(size=(4, 48, 48)).astype(np.float32)
    view = augment(x, np.random.default_rng(2))
    assert view.shape == (4, 48, 48) and view.dtype == torch.float32
    assert not np.allclose(view.numpy(), x)


def test_patch_larger_than_scene_is_a_clear_error(tmp_path, make_geotiff) -> None:
    path = make_geotiff("small.tif", bands=2, size=40)
    scenes = discover_scenes([path])
    with pytest.raises(PatchSizeError, match="--patch-size 64.*small.tif.*--patch-size 32"):
        build_sources(scenes, scenes[0].dates[0].band_names, 64, 64)
