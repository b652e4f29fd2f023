"""Change metrics, Otsu's threshold, CVA and the OSCD label traps."""

from __future__ import annotations

import numpy as np
import pytest

from core.change.cva import cva_magnitude, otsu_from_histogram, otsu_threshold, standardise
from core.change.metrics import ChangeCounts, count_changes
from core.change.oscd import oscd_cities, read_change_mask
from core.errors import RasterReadError


def test_counts_and_scores() -> None:
    prediction = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    label = np.array([1, 0, 1, 0, 255, 0], dtype=np.uint8)  # the 255 pixel is ignored
    counts = count_changes(prediction, label)
    assert counts == ChangeCounts(tp=1, fp=1, fn=1, tn=2)
    assert counts.precision == 0.5 and counts.recall == 0.5 and counts.f1 == 0.5
    assert counts.iou == pytest.approx(1 / 3)
    pooled = counts + ChangeCounts(tp=3, fp=0, fn=0, tn=10)
    assert pooled.f1 == pytest.approx(2 * (4 / 5) * (4 / 5) / (8 / 5))
    assert ChangeCounts().f1 == 0.0


def test_otsu_splits_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(1.0, 0.2, 5000), rng.normal(5.0, 0.3, 500)])
    threshold = otsu_threshold(values)
    is_high = np.arange(values.size) >= 5000
    assert ((values > threshold) == is_high).mean() > 0.999
    hist, edges = np.histogram(values, bins=256)
    assert otsu_from_histogram(hist, edges) == threshold


def test_cva_is_zero_without_change_and_grows_with_it() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 20, 20)).astype(np.float32)
    valid = np.ones((20, 20), dtype=bool)
    z = standardise(x, valid)
    np.testing.assert_allclose(z.reshape(4, -1).mean(1), 0, atol=1e-5)
    assert np.allclose(cva_magnitude(z, z), 0)
    moved = z.copy()
    moved[:, :5, :5] += 3.0
    magnitude = cva_magnitude(z, moved)
    assert magnitude[:5, :5].min() == pytest.approx(6.0) and magnitude[10:, 10:].max() == 0


def test_oscd_mask_values_are_remapped(make_band_folder, tmp_path) -> None:
    from conftest import write_geotiff

    for date in ("imgs_1", "imgs_2"):
        make_band_folder(f"oscd/images/town/{date}", size=60, bands=("B02", "B03"))
    (tmp_path / "oscd/labels/town/cm").mkdir(parents=True)
    raw = np.ones((1, 60, 60), dtype=np.uint8)  # 1 = no change
    raw[0, :10] = 2  # 2 = change
    raw[0, 10:12] = 0  # neither: unlabelled
    write_geotiff(tmp_path / "oscd/labels/town/cm/town-cm.tif", raw, crs=None, nodata=None)
    (city,) = oscd_cities(tmp_path / "oscd")
    mask = read_change_mask(city, 60, 60)
    assert mask.dtype == np.uint8 and (mask[:10] == 1).all() and (mask[10:12] == 255).all() and (mask[12:] == 0).all()
    with pytest.raises(RasterReadError, match="does not belong"):
        read_change_mask(city, 61, 60)
    with pytest.raises(RasterReadError, match="choose from town"):
        oscd_cities(tmp_path / "oscd", ["paris"])
