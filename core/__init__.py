"""SwiMDiff core: pure PyTorch, no QGIS, driven by the ``swimdiff`` command line (:mod:`core.cli`).

Three jobs, one package each: :mod:`core.pretrain` (self-supervised SwiMDiff pre-training),
:mod:`core.change` (change detection) and :mod:`core.landcover` (land-cover classification). They share
:mod:`core.io` (rasters in and out), :mod:`core.models` (the networks) and the modules here: configs,
checkpoints, devices, events and errors. ``docs/architecture.md`` draws the flow.
"""

__version__ = "0.1.0"
