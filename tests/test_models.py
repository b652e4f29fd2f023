"""The SwiMDiff model: shapes, gradient flow of the diffusion constraint, momentum and queue."""

from __future__ import annotations

import torch

from core.config import LossConfig, ModelConfig
from core.models.denoiser import ConditionalDenoiser
from core.models.encoder import Encoder
from core.models.swimdiff import SwiMDiff

TINY = ModelConfig(arch="resnet18", in_chans=4, queue_size=16, proj_hidden=32, proj_dim=16,
                   denoiser_channels=(8, 16), momentum=0.9)


def _batch(n: int = 4, size: int = 32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, size, size, generator=g), torch.randn(n, 4, size, size, generator=g), torch.arange(n) % 2


def test_encoder_returns_five_scales() -> None:
    encoder = Encoder("resnet18", in_chans=7)
    features = encoder(torch.randn(2, 7, 32, 32))
    assert encoder.reductions == [2, 4, 8, 16, 32]
    assert [tuple(f.shape[1:]) for f in features] == [(64, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]


def test_denoiser_predicts_image_shaped_noise() -> None:
    encoder = Encoder("resnet18", in_chans=4)
    denoiser = ConditionalDenoiser(4, (8, 16), 4, encoder.channels, encoder.reductions)
    x = torch.randn(2, 4, 32, 32)
    eps = denoiser(x, torch.tensor([0, 999]), encoder(x))
    assert eps.shape == x.shape


def test_diffusion_loss_sends_gradient_into_the_encoder() -> None:
    model = SwiMDiff(TINY, LossConfig(lambda_contrastive=0.0, lambda_diffusion=1.0))
    x_q, x_k, scene = _batch()
    out = model(x_q, x_k, scene)
    out.loss.backward()
    assert float(out.loss_diffusion) > 0
    grads = [p.grad for p in model.encoder_q.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.head_q.parameters())


def test_without_diffusion_there_is_no_denoiser() -> None:
    model = SwiMDiff(TINY, LossConfig(lambda_diffusion=0.0))
    assert model.denoiser is None
    out = model(*_batch())
    assert float(out.loss_diffusion) == 0.0 and float(out.loss.detach()) == float(out.loss_contrastive)
    assert not any(k.startswith("denoiser.") for k in model.exported_state_dict())


def test_queue_stores_keys_with_scene_ids_and_wraps() -> None:
    model = SwiMDiff(TINY, LossConfig(lambda_diffusion=0.0))
    x_q, x_k, scene = _batch(n=6)
    model(x_q, x_k, scene + 10)
    assert model.queue_scene[:6].tolist() == [10, 11, 10, 11, 10, 11]
    assert (model.queue_scene[6:] == -1).all()
    assert int(model.queue_ptr) == 6
    for _ in range(2):
        model(x_q, x_k, scene + 20)
    assert int(model.queue_ptr) == 18 % 16
    assert model.queue_scene[:2].tolist() == [20, 21]
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(16))


def test_momentum_update_moves_key_encoder_towards_query() -> None:
    model = SwiMDiff(TINY, LossConfig(lambda_diffusion=0.0))
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.encoder_k.parameters()]
    model.momentum_update()
    for p_q, p_k, p_0 in zip(model.encoder_q.parameters(), model.encoder_k.parameters(), before):
        torch.testing.assert_close(p_k, 0.9 * p_0 + 0.1 * p_q)
    assert not any(p.requires_grad for p in model.encoder_k.parameters())


def test_training_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = SwiMDiff(TINY, LossConfig())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    x_q, x_k, scene = _batch(n=8)
    losses = []
    for _ in range(25):
        out = model(x_q, x_k, scene)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss_diffusion))
    assert sum(losses[-5:]) / 5 < 0.92 * sum(losses[:5]) / 5
