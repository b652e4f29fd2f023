"""The "SwiMDiff" Processing provider: thin algorithm adapters over the ``swimdiff`` worker."""
