"""The change network's loss: BCE plus soft Dice on the change class, over labelled pixels only."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def change_loss(logits: torch.Tensor, label: torch.Tensor, ignore: float = 255.0) -> torch.Tensor:
    """BCE plus soft Dice on the change class, over labelled pixels only.

    Dice keeps the rare change class (0.3-4 % of pixels) from being drowned by the background.

    Args:
        logits: change logits, (N, 1, H, W).
        label: 0 (no change), 1 (change) or ``ignore``, (N, H, W).
    """
    logits = logits[:, 0].float()  # (N, H, W)
    known = label != ignore  # (N, H, W)
    target = torch.where(known, label, torch.zeros_like(label))
    bce = F.binary_cross_entropy_with_logits(logits[known], target[known]) if known.any() else logits.sum() * 0
    prob = torch.sigmoid(logits) * known  # (N, H, W)
    intersection = (prob * target).sum()
    dice = 1.0 - (2.0 * intersection + 1.0) / (prob.sum() + target.sum() + 1.0)
    return bce + dice
