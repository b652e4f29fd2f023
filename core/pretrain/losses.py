"""The SwiMDiff losses as pure functions.

* :func:`swm_contrastive_loss`: MoCo's InfoNCE with scene-wide matching. Keys in the queue that
  come from the query's own scene are likely false negatives; in ``"soft"`` mode they receive a
  share ``alpha`` of the target mass (spread by similarity, temperature ``tau'``), in ``"mask"``
  mode they are removed from the denominator, and with ``alpha = 0`` or ``"off"`` the loss is
  plain MoCo.
* :func:`positive_pair_accuracy`: a diagnostic of how well views of one place are matched.
* :func:`diffusion_loss`: the epsilon-prediction MSE of the denoising diffusion constraint.

The change network's loss is in :mod:`core.change.losses`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swm_targets(q: torch.Tensor, queue: torch.Tensor, same_scene: torch.Tensor, alpha: float,
                swm_temperature: float) -> torch.Tensor:
    """Soft targets over ``[positive key, queue keys]`` (no gradient).

    Args:
        q: L2-normalised queries, (N, D).
        queue: L2-normalised queued keys, (K, D).
        same_scene: whether queue key j comes from query i's scene, bool (N, K).
        alpha: mass moved from the positive key to same-scene keys.
        swm_temperature: tau' of the similarity softmax over same-scene keys.

    Returns:
        Target distribution, (N, 1 + K); rows without same-scene keys are one-hot on the positive.
    """
    with torch.no_grad():
        sim = torch.einsum("nc,kc->nk", q, queue) / swm_temperature  # (N, K)
        sim = sim.masked_fill(~same_scene, float("-inf"))
        has_same = same_scene.any(dim=1, keepdim=True)  # (N, 1)
        spread = torch.softmax(sim.float(), dim=1).nan_to_num(0.0)  # (N, K); all -inf rows -> 0
        mass = alpha * has_same.float()  # (N, 1)
        return torch.cat([1.0 - mass, mass * spread], dim=1)  # (N, 1 + K)


def swm_contrastive_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, queue_scene: torch.Tensor,
                         scene_id: torch.Tensor, temperature: float = 0.2, mode: str = "soft",
                         alpha: float = 0.5, swm_temperature: float = 0.1) -> torch.Tensor:
    """Scene-wide matching contrastive loss.

    Args:
        q: L2-normalised queries, (N, D).
        k: L2-normalised positive keys (same place, another date), (N, D).
        queue: L2-normalised past keys, (K, D).
        queue_scene: scene id of every queued key, (K,); -1 for empty slots.
        scene_id: scene id of every query, (N,).
        temperature: tau of the logits.
        mode: "soft", "mask" or "off".
        alpha: soft-positive mass for same-scene keys ("soft" mode).
        swm_temperature: tau' spreading that mass ("soft" mode).

    Returns:
        The mean cross-entropy against the (soft) targets.
    """
    l_pos = torch.einsum("nc,nc->n", q, k)[:, None]  # (N, 1)
    l_neg = torch.einsum("nc,kc->nk", q, queue)  # (N, K)
    same_scene = queue_scene[None, :] == scene_id[:, None]  # (N, K)
    if mode == "mask":
        l_neg = l_neg.masked_fill(same_scene, float("-inf"))
    logits = torch.cat([l_pos, l_neg], dim=1).float() / temperature  # (N, 1 + K)
    log_prob = torch.log_softmax(logits, dim=1)  # (N, 1 + K)
    if mode == "soft" and alpha > 0.0:
        target = swm_targets(q, queue, same_scene, alpha, swm_temperature)  # (N, 1 + K)
        loss = -(target * log_prob.masked_fill(target == 0, 0.0)).sum(dim=1).mean()
    else:
        loss = -log_prob[:, 0].mean()
    return loss


@torch.no_grad()
def positive_pair_accuracy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Share of queries whose own key is the most similar key of the batch.

    A training diagnostic of fixed difficulty (chance is 1/N), unlike the contrastive loss,
    which grows while the queue fills. q and k: L2-normalised, (N, D).
    """
    sim = torch.einsum("nc,mc->nm", q, k)  # (N, N)
    return (sim.argmax(dim=1) == torch.arange(q.shape[0], device=q.device)).float().mean()


def diffusion_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Epsilon-prediction MSE of the diffusion constraint, (N, C, H, W) each -> scalar."""
    return F.mse_loss(eps_pred.float(), eps.float())
