"""Sliding-window prediction of change probabilities with blended overlapping tiles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .data.tiling import Tile, blend_weights, tile_grid
from .models.siamese import SiameseUNet


@torch.no_grad()
def predict_batch(model: SiameseUNet, x1: np.ndarray, x2: np.ndarray, device: torch.device,
                  amp: bool = False) -> np.ndarray:
    """Change probabilities of a batch of normalised pairs, (n, C, h, w) twice -> (n, h, w) float32."""
    model.eval()
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        logits = model(torch.from_numpy(x1).to(device), torch.from_numpy(x2).to(device))  # (n, 1, h, w)
    return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


@torch.no_grad()
def predict_tiles(model: SiameseUNet, x1: np.ndarray, x2: np.ndarray, tiles: list[Tile], batch_size: int,
                  device: torch.device, amp: bool = False) -> list[np.ndarray]:
    """Change probabilities of each tile of two normalised (C, H, W) arrays -> [(h, w) float32]."""
    out: list[np.ndarray] = []
    for start in range(0, len(tiles), batch_size):
        group = tiles[start:start + batch_size]
        shapes = {(t.height, t.width) for t in group}
        if len(shapes) > 1:  # edge tiles of another size go one by one
            for t in group:
                out += predict_tiles(model, x1, x2, [t], 1, device, amp)
            continue
        a = np.stack([x1[:, t.row:t.row + t.height, t.col:t.col + t.width] for t in group])  # (n, C, h, w)
        b = np.stack([x2[:, t.row:t.row + t.height, t.col:t.col + t.width] for t in group])
        out += list(predict_batch(model, a, b, device, amp))
    return out


def predict_probability(model: SiameseUNet, x1: np.ndarray, x2: np.ndarray, tile: int = 256, overlap: int = 32,
                        batch_size: int = 8, device: torch.device | None = None,
                        tick: Callable[[], None] | None = None) -> np.ndarray:
    """Change probability (H, W) of two normalised (C, H, W) arrays held in memory."""
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
        for t, prob in zip(group, predict_tiles(model, x1, x2, group, batch_size, device)):
            total[t.row:t.row + t.height, t.col:t.col + t.width] += prob * w
            weight[t.row:t.row + t.height, t.col:t.col + t.width] += w
        if tick:
            tick()
    return total / np.maximum(weight, 1e-12)
