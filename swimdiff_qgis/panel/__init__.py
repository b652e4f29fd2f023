"""The SwiMDiff panel: the dock (``dock.py``, open it first) and one module per group of pages: ``detect.py``
(Detect changes), ``adapt.py`` (Adapt to this area), ``training.py`` (Pre-train, Fine-tune), ``landcover.py``
(Classify land cover, Train a land-cover classifier); the widgets they share are in ``widgets.py``, ``bands.py``,
``plot.py`` and ``outputs.py``."""
