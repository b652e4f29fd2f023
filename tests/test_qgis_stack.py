"""``swimdiff:buildstack`` inside QGIS (pytest-qgis, offscreen), driving the real ``swimdiff stack`` worker.

Band files are written with QGIS's own GDAL (osgeo), keeping rasterio out of the QGIS process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr
from qgis.core import QgsCoordinateReferenceSystem, QgsProcessingException, QgsRasterLayer

pytestmark = pytest.mark.qgis

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
METRES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
          "B09": 60, "B10": 60, "B11": 20, "B12": 20}


def write_band(path: Path, metres: int, size: int = 120, driver: str = "GTiff") -> Path:
    """One uint16 band on EPSG:32631 at ``metres``, covering ``size`` x 10 m, written with QGIS's GDAL."""
    n = size * 10 // metres
    data = (1000 + np.add.outer(np.arange(n), np.arange(n)) * metres).astype(np.uint16)
    memory = gdal.GetDriverByName("MEM").Create("", n, n, 1, gdal.GDT_UInt16)
    memory.SetGeoTransform((500000.0, metres, 0.0, 4600000.0, 0.0, -metres))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    memory.SetProjection(srs.ExportToWkt())
    memory.GetRasterBand(1).WriteArray(data)
    options = ["QUALITY=100", "REVERSIBLE=YES"] if driver == "JP2OpenJPEG" else []
    gdal.GetDriverByName(driver).CreateCopy(str(path), memory, options=options)
    return path


def descriptions(path: str) -> list[str]:
    dataset = gdal.Open(path)
    return [dataset.GetRasterBand(i).GetDescription() for i in range(1, dataset.RasterCount + 1)]


def test_buildstack_loads_a_named_13_band_10_m_layer(provider, qgis_new_project, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProject

    folder = tmp_path / "imgs_1"
    folder.mkdir()
    for band in S2_BANDS:
        write_band(folder / f"T31TCJ_20200101_{band}.tif", METRES[band])

    result = processing.runAndLoadResults("swimdiff:buildstack", {"SOURCE": str(folder),
                                                                   "OUTPUT": str(tmp_path / "stack.vrt")})

    assert result["OUTPUT"] == str(tmp_path / "stack.vrt")
    layers = list(QgsProject.instance().mapLayers().values())
    assert [Path(layer.source()).name for layer in layers] == ["stack.vrt"]
    layer = layers[0]
    assert layer.isValid() and layer.bandCount() == 13 and (layer.width(), layer.height()) == (120, 120)
    assert layer.crs() == QgsCoordinateReferenceSystem("EPSG:32631")
    assert layer.rasterUnitsPerPixelX() == 10.0
    assert [layer.bandName(i) for i in range(1, 14)] == [f"Band {i:02d}: {b}" for i, b in enumerate(S2_BANDS, 1)]
    assert descriptions(result["OUTPUT"]) == list(S2_BANDS)
    del layer, layers


def test_buildstack_reads_an_l2a_safe_product_into_12_bands(provider, tmp_path: Path) -> None:
    import processing

    image_data = tmp_path / "S2B_MSIL2A_20200101.SAFE" / "GRANULE" / "L2A_T31TCJ_A1" / "IMG_DATA"
    for metres in (10, 20, 60):
        (image_data / f"R{metres}m").mkdir(parents=True)
        for band in S2_BANDS:
            if band != "B10" and (METRES[band] == metres or metres > 10 and METRES[band] < metres):
                write_band(image_data / f"R{metres}m" / f"T31TCJ_{band}_{metres}m.jp2", metres, driver="JP2OpenJPEG")
        write_band(image_data / f"R{metres}m" / f"T31TCJ_AOT_{metres}m.jp2", metres, driver="JP2OpenJPEG")

    result = processing.run("swimdiff:buildstack", {"SOURCE": str(tmp_path / "S2B_MSIL2A_20200101.SAFE"),
                                                    "BANDS": "b4, B3,B02, B8A", "OUTPUT": str(tmp_path / "l2a.tif")})

    layer = QgsRasterLayer(result["OUTPUT"], "l2a")
    assert layer.isValid() and layer.bandCount() == 4 and layer.rasterUnitsPerPixelX() == 10.0
    assert descriptions(result["OUTPUT"]) == ["B02", "B03", "B04", "B8A"]
    assert gdal.Open(result["OUTPUT"]).GetDriver().ShortName == "GTiff"
    del layer
    result = processing.run("swimdiff:buildstack", {"SOURCE": str(image_data), "OUTPUT": str(tmp_path / "all.vrt")})
    assert descriptions(result["OUTPUT"]) == [b for b in S2_BANDS if b != "B10"]


def test_buildstack_reports_a_folder_without_band_files(provider, tmp_path: Path) -> None:
    import processing

    (tmp_path / "empty").mkdir()
    with pytest.raises(QgsProcessingException, match="holds no Sentinel-2 band files"):
        processing.run("swimdiff:buildstack", {"SOURCE": str(tmp_path / "empty"), "OUTPUT": str(tmp_path / "s.vrt")})
    assert not (tmp_path / "s.vrt").exists()
