"""Job 2, change detection: fine-tune a Siamese U-Net on labelled change masks, map the changes of two rasters.

Open :mod:`core.change.detection` first (two rasters -> change mask and probability GeoTIFFs, streamed);
:mod:`~core.change.pair` opens the two dates, :mod:`~core.change.cva` is the label-free baseline,
:mod:`~core.change.training` fine-tunes (on :mod:`~core.change.oscd` data cut into
:mod:`~core.change.patches`), :mod:`~core.change.evaluation` scores a model per city
(:mod:`~core.change.metrics`, :mod:`~core.change.report`).
"""
