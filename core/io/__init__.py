"""Reading and writing rasters, shared by every job (rasterio, numpy; no torch, no QGIS).

Open :mod:`core.io.raster` first (a date's named bands on a reference grid, read window by window);
then :mod:`~core.io.bands` (what a band is called), :mod:`~core.io.normalization` (per-band statistics
and the value scale), :mod:`~core.io.tiling` / :mod:`~core.io.blend` (where tiles go and how their
answers are blended), :mod:`~core.io.writer` / :mod:`~core.io.output_paths` (verified, atomic outputs
that never replace an input) and :mod:`~core.io.stack` (a named 10 m stack from Sentinel-2 band files).
"""
