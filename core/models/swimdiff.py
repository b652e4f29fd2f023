"""SwiMDiff: MoCo v2 with scene-wide matching and a pixel-level diffusion constraint.

``L = lambda_C * L_C + lambda_D * L_D`` where ``L_C`` is the scene-wide matching contrastive loss
over a queue of keys tagged with scene ids, and ``L_D`` is the epsilon-prediction loss of a
denoiser conditioned on the query encoder's features (so its gradient shapes the encoder).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from ..config import LossConfig, ModelConfig
from ..pretrain.distributed import concat_all_gather
from ..pretrain.losses import diffusion_loss, positive_pair_accuracy, swm_contrastive_loss
from .denoiser import ConditionalDenoiser
from .encoder import Encoder, ProjectionHead, pool

logger = logging.getLogger(__name__)

EXPORTED_PREFIXES = ("encoder_q.", "head_q.", "denoiser.")


@dataclass
class SwiMDiffOutput:
    """Scalar tensors of one training step."""

    loss: torch.Tensor
    loss_contrastive: torch.Tensor
    loss_diffusion: torch.Tensor
    accuracy: torch.Tensor


class SwiMDiff(nn.Module):
    """The pre-training model; ``forward`` returns the losses of one step."""

    queue: torch.Tensor  # (K, D) L2-normalised past keys
    queue_scene: torch.Tensor  # (K,) scene id of every key, -1 when empty
    queue_ptr: torch.Tensor  # (1,) next slot to write

    def __init__(self, model: ModelConfig, loss: LossConfig) -> None:
        super().__init__()
        self.model_config = model
        self.loss_config = loss
        self.encoder_q = Encoder(model.arch, model.in_chans)
        self.head_q = ProjectionHead(self.encoder_q.out_dim, model.proj_hidden, model.proj_dim)
        self.encoder_k = copy.deepcopy(self.encoder_q).requires_grad_(False)
        self.head_k = copy.deepcopy(self.head_q).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(model.queue_size, model.proj_dim), dim=1))
        self.register_buffer("queue_scene", torch.full((model.queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.denoiser: ConditionalDenoiser | None = None
        if loss.uses_diffusion:
            self.denoiser = ConditionalDenoiser(
                model.in_chans, model.denoiser_channels, model.denoiser_unshuffle,
                self.encoder_q.channels, self.encoder_q.reductions,
            )
        self.noise_scheduler: Any = DDPMScheduler(num_train_timesteps=model.diffusion_timesteps)

    @property
    def patch_multiple(self) -> int:
        """Patch sides must be multiples of this (encoder stride and denoiser levels)."""
        levels = len(self.model_config.denoiser_channels)
        return self.model_config.denoiser_unshuffle * 2 ** (levels - 1)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q."""
        m = self.model_config.momentum
        for q_part, k_part in ((self.encoder_q, self.encoder_k), (self.head_q, self.head_k)):
            for p_q, p_k in zip(q_part.parameters(), k_part.parameters()):
                p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)
            for b_q, b_k in zip(q_part.buffers(), k_part.buffers()):
                b_k.copy_(b_q)

    def key_groups(self, n: int) -> int:
        """Batch-norm groups of a key batch of ``n``: ``key_bn_splits``, but never a group of one sample
        (at 32 px the last stage is 1x1, and batch norm refuses a single value per channel)."""
        return max(1, min(self.model_config.key_bn_splits, n // 2))

    def warn_if_small_batch(self, batch_size: int) -> None:
        """Log when a batch is too small for ``key_bn_splits`` groups of two (training still works)."""
        if self.key_groups(batch_size) < self.model_config.key_bn_splits:
            logger.warning("--batch-size %d is too small for %d key batch-norm groups of at least two patches; the "
                           "keys are normalised in %d group(s), which weakens MoCo's shuffled batch norm: use a "
                           "batch of %d or more", batch_size, self.model_config.key_bn_splits,
                           self.key_groups(batch_size), 2 * self.model_config.key_bn_splits)

    @torch.no_grad()
    def keys(self, x_k: torch.Tensor) -> torch.Tensor:
        """Momentum-encoder keys with shuffled batch-norm groups, (N, C, H, W) -> (N, D).

        The groups are random subsets of the batch the query encoder normalises as one group, so the
        batch-statistics leak MoCo's shuffle guards against is reduced here, not removed (see
        ``ModelConfig.key_bn_splits`` for why it stays so).
        """
        n = x_k.shape[0]
        perm = torch.randperm(n, device=x_k.device)
        groups = x_k[perm].tensor_split(self.key_groups(n))  # sizes differ by at most one, each >= 2
        k = torch.cat([self.head_k(pool(self.encoder_k(g)[-1])) for g in groups])  # (N, D)
        return F.normalize(k, dim=1)[torch.argsort(perm)]

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor, scene_id: torch.Tensor) -> None:
        """Write the keys of every rank, with their scene ids, into the ring-buffer queue."""
        k, scene_id = concat_all_gather(k), concat_all_gather(scene_id)
        size = self.queue.shape[0]
        index = (self.queue_ptr + torch.arange(k.shape[0], device=k.device)) % size  # (N_all,)
        self.queue[index] = k.to(self.queue.dtype)
        self.queue_scene[index] = scene_id
        self.queue_ptr[0] = (self.queue_ptr[0] + k.shape[0]) % size

    def draw_noise(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian noise and timesteps for ``x0`` from the global RNG (seeded per rank, see
        :func:`~core.pretrain.distributed.seed_rank`, so DDP ranks draw different noise),
        (n, C, H, W) -> eps, t (n,)."""
        eps = torch.randn_like(x0)  # (n, C, H, W)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        return eps, t

    def diffusion_term(self, x0: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """Noise a share of the query views and score the denoiser's eps prediction."""
        assert self.denoiser is not None
        n = max(1, math.ceil(self.loss_config.diffusion_fraction * x0.shape[0]))
        x0 = x0[:n]  # (n, C, H, W)
        eps, t = self.draw_noise(x0)  # (n, C, H, W), (n,)
        x_t = self.noise_scheduler.add_noise(x0, eps, t)  # (n, C, H, W)
        eps_pred = self.denoiser(x_t, t, [f[:n] for f in features])  # (n, C, H, W)
        return diffusion_loss(eps_pred, eps)

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor, scene_id: torch.Tensor) -> SwiMDiffOutput:
        """One training step's losses; also updates the key encoder and the queue.

        Args:
            x_q: query views, (N, C, H, W).
            x_k: key views (the same places, other dates), (N, C, H, W).
            scene_id: scene of every sample, (N,).
        """
        cfg = self.loss_config
        features = self.encoder_q(x_q)  # [(N, c_i, H/r_i, W/r_i)]
        q = F.normalize(self.head_q(pool(features[-1])), dim=1)  # (N, D)
        with torch.no_grad():
            self.momentum_update()
            k = self.keys(x_k)  # (N, D)
        loss_c = swm_contrastive_loss(
            q, k, self.queue.clone().detach(), self.queue_scene.clone(), scene_id,
            temperature=cfg.temperature, mode=cfg.swm_mode, alpha=cfg.swm_alpha, swm_temperature=cfg.swm_temperature,
        )
        accuracy = positive_pair_accuracy(q.detach(), k)
        loss_d = self.diffusion_term(x_q, features) if self.denoiser is not None else loss_c.new_zeros(())
        self.enqueue(k, scene_id)
        loss = cfg.lambda_contrastive * loss_c + cfg.lambda_diffusion * loss_d
        return SwiMDiffOutput(loss, loss_c.detach(), loss_d.detach(), accuracy)

    def exported_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights a downstream user needs: query encoder, its head and the denoiser."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(EXPORTED_PREFIXES)}
