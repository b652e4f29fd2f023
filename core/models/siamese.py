"""Siamese U-Net for change detection on a (pre-trained) encoder, as in SeCo / FC-Siam-diff.

Both dates go through one shared encoder; at every scale the feature maps are fused by absolute
difference, and a light U-Net decoder turns the fused pyramid into one change logit per pixel.

``fusion="diff+mean"`` also passes the dates' mean features, (f1 + f2) / 2, to the decoder: a difference
alone does not say *what* a place is (water, a field, a roof), so the decoder cannot learn that a field
changing colour is not change; the mean says it and keeps the model symmetric in the dates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import Encoder, pretrained_encoder_state

FUSIONS = ("diff", "diff+mean")


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip, two 3x3 conv-BN-ReLU."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(c_in + c_skip, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([h, skip], dim=1))


class SiameseUNet(nn.Module):
    """Change logits from two co-registered images.

    Args:
        arch: timm ResNet of the encoder.
        in_chans: bands per date.
        decoder_channels: widths of the decoder blocks from stride 16 down to stride 2.
        fusion: ``"diff"`` (|f1 - f2|) or ``"diff+mean"`` (and (f1 + f2) / 2) at every scale.
    """

    def __init__(self, arch: str = "resnet18", in_chans: int = 13,
                 decoder_channels: Sequence[int] = (128, 64, 48, 32), fusion: str = "diff") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        self.encoder = Encoder(arch, in_chans)
        width = 2 if fusion == "diff+mean" else 1
        skips = [c * width for c in self.encoder.channels[-2::-1]]  # strides 16, 8, 4, 2
        widths = list(decoder_channels)
        if len(widths) != len(skips):
            raise ValueError(f"decoder_channels needs {len(skips)} widths, got {widths}")
        ins = [self.encoder.channels[-1] * width, *widths[:-1]]
        self.decoder = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, widths))
        self.head = nn.Conv2d(widths[-1], 1, kernel_size=1)

    def fused_features(self, x1: torch.Tensor, x2: torch.Tensor) -> list[torch.Tensor]:
        """|f(x1) - f(x2)| at every scale (and (f(x1) + f(x2)) / 2 with ``fusion="diff+mean"``); both dates share
        one encoder pass (batched)."""
        features = self.encoder(torch.cat([x1, x2], dim=0))  # [(2N, c_i, H/r_i, W/r_i)]
        pairs = [f.chunk(2, dim=0) for f in features]
        if self.fusion == "diff+mean":
            return [torch.cat([(f1 - f2).abs(), (f1 + f2) / 2], dim=1) for f1, f2 in pairs]
        return [(f1 - f2).abs() for f1, f2 in pairs]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) twice -> change logits (N, 1, H, W)."""
        fused = self.fused_features(x1, x2)
        h = fused[-1]
        for block, skip in zip(self.decoder, fused[-2::-1]):
            h = block(h, skip)
        logits = self.head(h)  # (N, 1, H/2, W/2)
        return F.interpolate(logits, size=x1.shape[-2:], mode="bilinear", align_corners=False)

    def load_pretrained_encoder(self, weights: dict[str, torch.Tensor], channels: Sequence[int] | None = None,
                                prefix: str = "encoder_q.") -> int:
        """Copy a SwiMDiff checkpoint's query encoder into this encoder (see
        :func:`~core.models.encoder.pretrained_encoder_state`: ``channels`` picks its input bands); returns
        tensors loaded.

        Raises:
            KeyError: the checkpoint holds no encoder under ``prefix`` or it does not fit.
        """
        return pretrained_encoder_state(weights, self.encoder, channels, prefix)
