"""SwiMDiff core: pure PyTorch, no QGIS.

Self-supervised pre-training of remote-sensing encoders with scene-wide matching and a
pixel-level diffusion constraint (Tian et al., IEEE TGRS 2024), plus the data, training and
checkpoint machinery the QGIS plugin drives through the ``swimdiff`` command line.
"""

__version__ = "0.1.0"
