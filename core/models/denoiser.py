"""A small denoiser conditioned on the query encoder's feature maps (the diffusion constraint).

Design for cost (measured in ``make bench-pretrain``): the noisy image is folded with a
pixel-unshuffle (every pixel kept, moved into channels) so the UNet runs at 1/``unshuffle``
resolution with few channels and no attention. Encoder feature maps of matching stride are
projected and *added* to the UNet's down path, and the pooled embedding is added to the time
embedding, so the denoiser can only do well if the encoder keeps the image's fine detail: the
gradient of the diffusion loss flows into the encoder through these additions.

Built from diffusers blocks; the noise schedule (``DDPMScheduler``) stays outside, as diffusers
does it: this module only maps ``(x_t, t, condition)`` to a prediction of ``eps``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

GROUPS = 8


def _block(c_in: int, c_out: int, temb: int) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels=c_in, out_channels=c_out, temb_channels=temb, groups=GROUPS)


class ConditionalDenoiser(nn.Module):
    """Predicts the noise ``eps`` in ``x_t`` given ``t`` and the encoder's features of ``x0``.

    Args:
        in_chans: bands of the image.
        channels: widths of the UNet levels; level ``i`` sits at stride ``unshuffle * 2**i``.
        unshuffle: pixel-unshuffle factor of the input (1, 2, 4 or 8).
        cond_channels: channels of the encoder maps, one per entry of ``cond_reductions``.
        cond_reductions: strides of the encoder maps (e.g. 2, 4, 8, 16, 32).
    """

    def __init__(self, in_chans: int, channels: Sequence[int], unshuffle: int, cond_channels: Sequence[int],
                 cond_reductions: Sequence[int]) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        c0 = channels[0]
        temb = 4 * c0
        folded = in_chans * unshuffle * unshuffle
        self.time_proj = Timesteps(c0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(c0, temb)
        self.global_cond = nn.Linear(cond_channels[-1], temb)
        self.conv_in = nn.Conv2d(folded, c0, kernel_size=1)
        stride_to_cond = {r: (i, c) for i, (r, c) in enumerate(zip(cond_reductions, cond_channels))}
        self.cond_index: list[int] = []
        self.cond_proj = nn.ModuleList()
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = c0
        for level, width in enumerate(channels):
            stride = unshuffle * 2**level
            if stride not in stride_to_cond:
                raise ValueError(f"the encoder has no feature map at stride {stride}; use another unshuffle")
            index, c_cond = stride_to_cond[stride]
            self.cond_index.append(index)
            self.cond_proj.append(nn.Conv2d(c_cond, width, kernel_size=1))
            self.down.append(_block(prev, width, temb))
            last = level == len(channels) - 1
            self.downsample.append(nn.Identity() if last else Downsample2D(width, use_conv=True))
            prev = width
        self.mid = _block(prev, prev, temb)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(channels))):
            width = channels[level]
            self.up.append(_block(prev + width, width, temb))
            self.upsample.append(Upsample2D(width, use_conv=False) if level > 0 else nn.Identity())
            prev = width
        self.norm_out = nn.GroupNorm(GROUPS, prev)
        self.conv_out = nn.Conv2d(prev, folded, kernel_size=1)
        # Per-pixel linear path from x_t to the output, scaled by the noise level: the UNet's few
        # channels cannot carry every pixel's noise, so it only has to add what depends on x0.
        self.skip = nn.Conv2d(folded, folded, kernel_size=1)
        self.skip_gate = nn.Linear(temb, folded)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predict the noise.

        Args:
            x_t: noisy images, (N, C, H, W); H and W divisible by ``unshuffle * 2**(levels - 1)``.
            t: timesteps, (N,).
            features: the encoder's maps of ``x0`` (see :class:`~core.models.encoder.Encoder`).

        Returns:
            eps prediction, (N, C, H, W).
        """
        emb = self.time_embedding(self.time_proj(t).to(x_t.dtype))  # (N, 4*c0)
        emb = emb + self.global_cond(features[-1].mean(dim=(2, 3)))  # (N, 4*c0)
        folded = F.pixel_unshuffle(x_t, self.unshuffle)  # (N, C*u*u, H/u, W/u)
        h = self.conv_in(folded)  # (N, c0, H/u, W/u)
        skips = []
        for block, proj, index, downsample in zip(self.down, self.cond_proj, self.cond_index, self.downsample):
            h = block(h, emb) + proj(features[index])  # (N, c_l, H/(u*2^l), W/(u*2^l))
            skips.append(h)
            h = downsample(h)
        h = self.mid(h, emb)
        for block, upsample in zip(self.up, self.upsample):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            h = upsample(h)
        h = self.conv_out(F.silu(self.norm_out(h)))  # (N, C*u*u, H/u, W/u)
        h = h + self.skip(folded) * self.skip_gate(emb)[:, :, None, None]  # (N, C*u*u, H/u, W/u)
        return F.pixel_shuffle(h, self.unshuffle)  # (N, C, H, W)
