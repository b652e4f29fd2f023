"""Raster reading, scenes, sampling and normalisation (rasterio, numpy; no QGIS)."""
