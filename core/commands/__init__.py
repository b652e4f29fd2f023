"""One module per group of ``swimdiff`` commands; each exposes ``add*(commands)``."""
