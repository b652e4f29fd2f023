"""Sliding-window prediction of change probabilities with blended overlapping tiles."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..io.tiling import blend_weights, tile_grid
from ..models.siamese import SiameseUNet


@torch.no_grad()
def predict_batch(model: nn.Module, x1: np.ndarray, x2: np.ndarray, device: torch.device,
                  amp: bool = False) -> np.ndarray:
    """Scores of a batch of normalised pairs, (n, C, h, w) twice -> (n, h, w) float32.

    A :class:`SiameseUNet` gives change probabilities (sigmoid of its logits); another two-date
    network returning (n, h, w), e.g. :class:`~core.models.distance.FeatureDistance`, its scores.
    """
    model.eval()
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        out = model(torch.from_numpy(x1).to(device), torch.from_numpy(x2).to(device)).float()
    out = torch.sigmoid(out)[:, 0] if isinstance(model, SiameseUNet) else out
    return out.cpu().numpy()


def predict_probability(model: nn.Module, x1: np.ndarray, x2: np.ndarray, tile: int = 256, overlap: int = 32,
                        batch_size: int = 8, device: torch.device | None = None) -> np.ndarray:
    """Change probability (or score, see :func:`predict_batch`) (H, W) of two normalised (C, H, W) arrays."""
    device = device or next(model.parameters()).device
    height, width = x1.shape[-2:]
    tile = min(tile, height, width)
    overlap = min(overlap, tile // 2)
    tiles = tile_grid(height, width, tile, overlap)
    w = blend_weights(tile, tile, overlap)  # every tile is full size
    total = np.zeros((height, width), dtype=np.float32)
    weight = np.zeros((height, width), dtype=np.float32)
    for start in range(0, len(tiles), batch_size):
        group = tiles[start:start + batch_size]
        a = np.stack([x1[:, t.row:t.row + tile, t.col:t.col + tile] for t in group])  # (n, C, tile, tile)
        b = np.stack([x2[:, t.row:t.row + tile, t.col:t.col + tile] for t in group])
        for t, prob in zip(group, predict_batch(model, a, b, device)):
            total[t.row:t.row + tile, t.col:t.col + tile] += prob * w
            weight[t.row:t.row + tile, t.col:t.col + tile] += w
    return total / np.maximum(weight, 1e-12)
