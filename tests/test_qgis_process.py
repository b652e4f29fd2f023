"""Headless end to end: ``qgis_process.bin run swimdiff:detectchange`` on a real OSCD pair (../shared/data), and
``swimdiff:classify`` on a generated raster with a classifier trained on generated patches.

The plugin is enabled in a fresh QGIS profile with no SwiMDiff setting at all, so the worker interpreter must
be found on its own (the ``.venv`` in the plugin folder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[1]
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
DEFAULT_MODEL = ROOT / "resources" / "models" / "oscd-change"
MASK_NODATA = 255


def date_vrt(band_folder: Path, vrt: Path) -> Path:
    """One multi-band VRT of a folder of ``*_Bxx.tif`` files (finest grid), bands described B01..B12, B8A."""
    files = sorted(band_folder.glob("*_B*.tif"))
    dataset = gdal.BuildVRT(str(vrt), [str(f) for f in files], separate=True, resolution="highest")
    for index, path in enumerate(files, 1):
        dataset.GetRasterBand(index).SetDescription(path.stem.rsplit("_", 1)[1])
    dataset = None  # writes the VRT
    return vrt


def qgis_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def headless_env(tmp_path: Path) -> dict[str, str]:
    """``qgis_process`` in a fresh profile with the plugin (under another folder name) enabled."""
    if not Path(QGIS_PROCESS).exists():
        pytest.skip("qgis_process.bin is not installed")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "swimdiff").symlink_to(ROOT, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "SWIMDIFF_PYTHON"}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins),
               QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    enabled = qgis_process("plugins", "enable", "swimdiff", env=env)
    assert enabled.returncode == 0, enabled.stderr
    return env


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["cva", "model"])
def test_qgis_process_detects_changes_on_a_real_oscd_pair(method: str, headless_env, shared_data: Path,
                                                          tmp_path: Path) -> None:
    if method == "model" and not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip(f"the default model {DEFAULT_MODEL} is not built yet")
    city = shared_data / "oscd" / "images" / "bercy"
    t1, t2 = date_vrt(city / "imgs_1", tmp_path / "t1.vrt"), date_vrt(city / "imgs_2", tmp_path / "t2.vrt")
    out, probability = tmp_path / "change.tif", tmp_path / "probability.tif"

    run = qgis_process("--json", "run", "swimdiff:detectchange", "--", f"T1={t1}", f"T2={t2}",
                       f"METHOD={['model', 'features', 'cva'].index(method)}", f"OUTPUT={out}",
                       f"PROBABILITY={probability}", env=headless_env)

    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(run.stdout)
    results = report["results"]
    assert (results["OUTPUT"], results["PROBABILITY"]) == (str(out), str(probability))
    info = "\n".join(report["log"]["info"])
    assert f"worker: {ROOT}/.venv/bin/python -m core.cli detect" in info
    if method == "cva":
        assert "comparing 13 bands: B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12" in info

    reference, mask_ds, score_ds = gdal.Open(str(t1)), gdal.Open(str(out)), gdal.Open(str(probability))
    for dataset in (mask_ds, score_ds):
        assert (dataset.RasterXSize, dataset.RasterYSize) == (reference.RasterXSize, reference.RasterYSize)
        assert dataset.GetGeoTransform() == pytest.approx(reference.GetGeoTransform(), rel=1e-9, abs=1e-12)
        crs = osr.SpatialReference(wkt=dataset.GetProjection())
        assert crs.IsSame(osr.SpatialReference(wkt=reference.GetProjection()))
        assert crs.GetAuthorityCode(None) == "4326"
    assert (reference.RasterXSize, reference.RasterYSize) == (360, 395)  # bercy's 10 m bands

    mask = mask_ds.GetRasterBand(1).ReadAsArray()
    score = score_ds.GetRasterBand(1).ReadAsArray()
    assert mask_ds.GetRasterBand(1).GetNoDataValue() == MASK_NODATA
    valid = mask != MASK_NODATA
    assert set(np.unique(mask)) <= {0, 1, MASK_NODATA} and valid.mean() > 0.99
    assert np.isfinite(score[valid]).all()
    np.testing.assert_array_equal(mask[valid], (score[valid] > results["USED_THRESHOLD"]).astype(np.uint8))
    assert results["CHANGED_FRACTION"] == pytest.approx(mask[valid].mean())
    assert 0 < results["CHANGED_FRACTION"] < 0.5


def test_qgis_process_classifies_land_cover(headless_env, tmp_path: Path) -> None:
    from test_qgis_landcover import CLASSES, NODATA_BLOCK, make_scene, train_classifier

    model = train_classifier(tmp_path / "classifier")
    scene = make_scene(tmp_path / "scene.tif")
    out, probabilities = tmp_path / "landcover.tif", tmp_path / "probabilities.tif"

    run = qgis_process("--json", "run", "swimdiff:classify", "--", f"INPUT={scene}", f"MODEL={model}",
                       f"OUTPUT={out}", f"PROBABILITIES={probabilities}", "BATCH_SIZE=4", env=headless_env)

    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(run.stdout)["results"]
    assert (results["OUTPUT"], results["PROBABILITIES"]) == (str(out), str(probabilities))
    assert json.loads(results["CLASSES"]) == list(CLASSES)
    reference, landcover, probability = gdal.Open(str(scene)), gdal.Open(str(out)), gdal.Open(str(probabilities))
    for dataset in (landcover, probability):
        assert (dataset.RasterXSize, dataset.RasterYSize) == (reference.RasterXSize, reference.RasterYSize)
        assert dataset.GetGeoTransform() == reference.GetGeoTransform()
        assert osr.SpatialReference(wkt=dataset.GetProjection()).GetAuthorityCode(None) == "32631"
    band = landcover.GetRasterBand(1)
    ids = band.ReadAsArray()
    assert band.GetNoDataValue() == MASK_NODATA and band.GetColorTable().GetCount() >= len(CLASSES)
    assert json.loads(landcover.GetMetadataItem("CLASS_NAMES")) == list(CLASSES)
    assert (ids[:NODATA_BLOCK, :NODATA_BLOCK] == MASK_NODATA).all()
    valid = ids != MASK_NODATA
    assert set(np.unique(ids[valid])) <= {0, 1} and valid.sum() == ids.size - NODATA_BLOCK ** 2
    shares = probability.ReadAsArray()  # (classes, rows, columns)
    assert probability.RasterCount == len(CLASSES)
    np.testing.assert_array_equal(ids[valid], shares[:, valid].argmax(axis=0))
    fractions = json.loads(results["CLASS_FRACTIONS"])
    assert fractions == pytest.approx({name: float((ids[valid] == i).mean()) for i, name in enumerate(CLASSES)})
