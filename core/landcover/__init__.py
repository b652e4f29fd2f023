"""Job 3, land-cover classification: train a classifier from labelled patches, map a whole raster.

Open :mod:`core.landcover.mapping` first (a raster -> a class map GeoTIFF, streamed); :mod:`~core.landcover.training`
trains on :mod:`~core.landcover.patches` (EuroSAT or BigEarthNet layout) and scores with
:mod:`~core.landcover.metrics`.
"""
