"""The encoder: a timm ResNet with ``in_chans`` = number of bands, returning multi-scale maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import nn


class Encoder(nn.Module):
    """A timm ResNet trunk that returns its feature maps at strides 2, 4, 8, 16 and 32.

    The last map, average-pooled, is the image embedding used by the contrastive branch; the
    finer maps condition the diffusion denoiser and, later, feed change-detection decoders.
    """

    def __init__(self, arch: str = "resnet18", in_chans: int = 13) -> None:
        super().__init__()
        self.body: nn.Module = timm.create_model(arch, pretrained=False, in_chans=in_chans, features_only=True)
        info: Any = self.body.feature_info
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())

    @property
    def out_dim(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, C, H, W) -> [(N, c_i, H / r_i, W / r_i) for r_i in 2, 4, 8, 16, 32]."""
        return self.body(x)


class ProjectionHead(nn.Module):
    """MoCo v2's 2-layer MLP head."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, out_dim), not yet normalised."""
        return self.net(h)


def pool(feature: torch.Tensor) -> torch.Tensor:
    """Global average pooling, (N, C, h, w) -> (N, C)."""
    return feature.mean(dim=(2, 3))


def pretrained_encoder_state(weights: dict[str, torch.Tensor], encoder: nn.Module,
                             channels: Sequence[int] | None = None, prefix: str = "encoder_q.") -> int:
    """Load a pre-trained query encoder's tensors into ``encoder``, keeping only some input channels.

    Args:
        weights: a ``swimdiff pretrain`` model's tensors.
        channels: indices of the pre-trained encoder's input channels that ``encoder``'s inputs are, in
            order (None: all of them). The stem convolution's weight (O, C_pre, k, k) becomes
            (O, len(channels), k, k): dropping a centred (normalised) input is feeding it its mean.
        prefix: where the encoder's tensors live in ``weights``.

    Returns:
        The number of tensors loaded.

    Raises:
        KeyError: no encoder under ``prefix``, or weights that do not fit this architecture.
    """
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if not state:
        raise KeyError(f"no weights start with '{prefix}'")
    first = next(k for k, v in encoder.state_dict().items() if v.ndim == 4)  # the stem convolution
    if channels is not None and first in state:
        state[first] = state[first][:, list(channels)].clone()  # (O, C, k, k)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"encoder weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return len(state)
