"""Encoder, conditional denoiser and the SwiMDiff model that composes them."""
