"""Scene classifier: a (pre-trained) encoder, global average pooling and one linear layer.

Two training modes, as in SeCo and SwiMDiff's land-cover evaluation: a *linear probe* trains only
the linear layer on frozen features (the encoder stays in eval mode, so its batch-norm statistics
do not move), and *fine-tuning* trains everything.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .encoder import Encoder, pool, pretrained_encoder_state


class Classifier(nn.Module):
    """Class logits from an image patch.

    The head standardises the pooled features with a batch normalisation without affine parameters
    before the linear layer (as MAE's linear probe does): features of different encoders, pre-trained
    or random, differ in scale by orders of magnitude, and one learning rate should suit them all.

    Args:
        arch: timm ResNet of the encoder.
        in_chans: input bands.
        num_classes: K, the number of classes (one logit each).
    """

    def __init__(self, arch: str = "resnet18", in_chans: int = 13, num_classes: int = 10) -> None:
        super().__init__()
        self.encoder = Encoder(arch, in_chans)
        self.head = nn.Sequential(nn.BatchNorm1d(self.encoder.out_dim, affine=False),
                                  nn.Linear(self.encoder.out_dim, num_classes))
        self.frozen = False

    def freeze_encoder(self) -> None:
        """Linear probe: the encoder gets no gradients and stays in eval mode, even under ``train()``."""
        self.encoder.requires_grad_(False)
        self.frozen = True
        self.encoder.eval()

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> pooled last-stage features (N, D)."""
        if self.frozen:
            with torch.no_grad():
                return pool(self.encoder(x)[-1])
        return pool(self.encoder(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, K)."""
        return self.head(self.features(x))

    def load_pretrained_encoder(self, weights: dict[str, torch.Tensor], channels: Sequence[int] | None = None,
                                prefix: str = "encoder_q.") -> int:
        """Copy a pre-trained query encoder into this encoder, keeping only some input channels (see
        :func:`~core.models.encoder.pretrained_encoder_state`); returns tensors loaded.

        Raises:
            KeyError: no encoder under ``prefix``, or weights that do not fit this architecture.
        """
        return pretrained_encoder_state(weights, self.encoder, channels, prefix)
