"""Job 1, self-supervised pre-training (SwiMDiff): an encoder learnt from unlabelled multi-date rasters.

Open :mod:`core.pretrain.training` first (the loop: data -> model -> losses -> checkpoints); the pieces
are :mod:`~core.pretrain.scenes` (which rasters are dates of one place), :mod:`~core.pretrain.sampler`
(two dates of a place as positive views), :mod:`~core.pretrain.losses` (scene-wide matching, diffusion),
:mod:`~core.pretrain.distributed` (DDP); every job logs its losses with :mod:`core.history`. The model
itself is :mod:`core.models.swimdiff`.
"""
