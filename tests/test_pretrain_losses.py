"""The scene-wide matching loss against a naive loop-based reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.pretrain.losses import diffusion_loss, positive_pair_accuracy, swm_contrastive_loss


def reference_swm_loss(q, k, queue, queue_scene, scene_id, temperature, mode, alpha, swm_temperature) -> float:
    """One query at a time, with Python loops and math.exp."""
    total = 0.0
    n, size = q.shape[0], queue.shape[0]
    for i in range(n):
        pos = float(q[i] @ k[i]) / temperature
        negs = []
        same = []
        for j in range(size):
            is_same = int(queue_scene[j]) == int(scene_id[i])
            if mode == "mask" and is_same:
                continue
            negs.append(float(q[i] @ queue[j]) / temperature)
            same.append((len(negs) - 1, j) if is_same else None)
        log_z = math.log(math.exp(pos) + sum(math.exp(v) for v in negs))
        log_p_pos = pos - log_z
        same_idx = [s for s in same if s is not None]
        if mode == "soft" and alpha > 0 and same_idx:
            weights = [math.exp(float(q[i] @ queue[j]) / swm_temperature) for _, j in same_idx]
            z = sum(weights)
            loss = -(1 - alpha) * log_p_pos
            for (col, _), w in zip(same_idx, weights):
                loss -= alpha * (w / z) * (negs[col] - log_z)
        else:
            loss = -log_p_pos
        total += loss
    return total / n


def _inputs(seed: int = 0, n: int = 6, size: int = 10, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(size, dim, generator=g, dtype=torch.float64), dim=1)
    queue_scene = torch.randint(-1, 3, (size,), generator=g)
    scene_id = torch.randint(0, 4, (n,), generator=g)  # scene 3 never appears in the queue
    return q, k, queue, queue_scene, scene_id


@pytest.mark.parametrize("mode,alpha", [("soft", 0.5), ("soft", 1.0), ("soft", 0.0), ("mask", 0.5), ("off", 0.5)])
def test_matches_reference(mode: str, alpha: float) -> None:
    for seed in range(3):
        q, k, queue, queue_scene, scene_id = _inputs(seed)
        loss = swm_contrastive_loss(q, k, queue, queue_scene, scene_id, temperature=0.2, mode=mode, alpha=alpha,
                                       swm_temperature=0.1)
        expected = reference_swm_loss(q, k, queue, queue_scene, scene_id, 0.2, mode, alpha, 0.1)
        assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_alpha_zero_is_plain_moco() -> None:
    q, k, queue, queue_scene, scene_id = _inputs(4)
    loss = swm_contrastive_loss(q, k, queue, queue_scene, scene_id, temperature=0.1, mode="soft", alpha=0.0)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.1
    moco = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))
    assert float(loss) == pytest.approx(float(moco), rel=1e-6)


def test_soft_matching_lowers_loss_when_same_scene_keys_are_similar() -> None:
    q, k, queue, _, _ = _inputs(5, n=1, size=4)
    queue[0] = q[0]  # a same-scene key identical to the query: a false negative
    scene_id = torch.tensor([7])
    queue_scene = torch.tensor([7, 1, 1, 1])
    plain = swm_contrastive_loss(q, k, queue, queue_scene, scene_id, mode="off")
    soft = swm_contrastive_loss(q, k, queue, queue_scene, scene_id, mode="soft", alpha=0.5)
    masked = swm_contrastive_loss(q, k, queue, queue_scene, scene_id, mode="mask")
    assert soft < plain and masked < plain


def test_gradient_flows_to_queries_only() -> None:
    q, k, queue, queue_scene, scene_id = _inputs(6)
    q.requires_grad_(True)
    loss = swm_contrastive_loss(q, k, queue, queue_scene, scene_id)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_positive_pair_accuracy_counts_own_key_first() -> None:
    q = torch.eye(4)
    assert float(positive_pair_accuracy(q, q)) == 1.0
    assert float(positive_pair_accuracy(q, q[[1, 0, 2, 3]])) == 0.5


def test_diffusion_loss_is_mse() -> None:
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4) * 2
    assert float(diffusion_loss(a, b)) == pytest.approx(4.0)
