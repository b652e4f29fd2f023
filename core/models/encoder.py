"""The encoder: a timm ResNet with ``in_chans`` = number of bands, returning multi-scale maps."""

from __future__ import annotations

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
