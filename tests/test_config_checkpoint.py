"""Configs validate and round-trip; model folders and training state round-trip and fail clearly."""

from __future__ import annotations

import json

import pytest
import torch

from core.checkpoint import (
    FORMAT_VERSION,
    flatten_optimizer,
    load_model,
    load_train_state,
    read_config,
    save_model,
    save_train_state,
    unflatten_optimizer,
)
from core.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from core.errors import CheckpointFormatError, ConfigError


@pytest.mark.parametrize("config", [
    DataConfig(paths=("a", "b"), bands=("B02", "B03"), patch_size=64),
    ModelConfig(arch="resnet34", in_chans=4, denoiser_channels=(16, 32, 64)),
    LossConfig(swm_mode="mask", swm_alpha=0.25, lambda_diffusion=0.0),
    TrainConfig(steps=0, epochs=3, device="cuda:1"),
])
def test_configs_round_trip_through_json(config) -> None:
    again = type(config).from_dict(json.loads(config.to_json()))
    assert again == config


@pytest.mark.parametrize("build,match", [
    (lambda: DataConfig(paths=()), "--data"),
    (lambda: DataConfig(paths=("a",), patch_size=90), "--patch-size=90.*multiple of 16"),
    (lambda: ModelConfig(arch="vit_small"), "--arch='vit_small'"),
    (lambda: LossConfig(swm_alpha=1.5), r"--swm-alpha=1.5.*\[0, 1\]"),
    (lambda: LossConfig(swm_mode="hard"), "soft, mask, off"),
    (lambda: LossConfig(lambda_contrastive=0.0, lambda_diffusion=0.0), "at least one loss"),
    (lambda: TrainConfig(steps=0, epochs=0), "--steps"),
    (lambda: TrainConfig(device="tpu"), "cuda:N"),
])
def test_configs_reject_bad_values_with_the_fix(build, match) -> None:
    with pytest.raises(ConfigError, match=match):
        build()
    with pytest.raises(ValueError):
        build()


def test_unknown_config_field_is_rejected() -> None:
    with pytest.raises(ConfigError, match="no field"):
        LossConfig.from_dict({"alpha": 1})


def test_model_folder_round_trip(tmp_path) -> None:
    weights = {"encoder_q.w": torch.randn(3, 4), "head_q.b": torch.arange(5)}
    save_model(tmp_path, weights, {"kind": "swimdiff-pretrain", "bands": ["B02"]})
    loaded, config = load_model(tmp_path)
    assert config["format_version"] == FORMAT_VERSION and config["bands"] == ["B02"]
    assert loaded.keys() == weights.keys()
    for key in weights:
        torch.testing.assert_close(loaded[key], weights[key])
    assert not list(tmp_path.glob("*.tmp"))


def test_foreign_or_corrupted_model_folders_are_rejected(tmp_path) -> None:
    with pytest.raises(CheckpointFormatError, match="does not exist"):
        read_config(tmp_path / "nope")
    with pytest.raises(CheckpointFormatError, match="no config.json"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointFormatError, match="not valid JSON"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 99, "kind": "swimdiff-pretrain"}))
    with pytest.raises(CheckpointFormatError, match="format_version 99"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "kind": "other"}))
    with pytest.raises(CheckpointFormatError, match="'other'"):
        read_config(tmp_path)
    save_model(tmp_path, {"w": torch.ones(1000)}, {"kind": "swimdiff-pretrain"})
    blob = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointFormatError, match="corrupted"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointFormatError):
        load_model(tmp_path)


def test_training_state_round_trips_optimizer_and_rng(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors, meta = flatten_optimizer(optimizer.state_dict())
    rng = torch.get_rng_state()
    save_train_state(tmp_path, {**tensors, "rng.torch": rng}, {"step": 7, "optimizer": meta})
    loaded, loaded_meta = load_train_state(tmp_path)
    assert loaded_meta["step"] == 7
    torch.testing.assert_close(loaded["rng.torch"], rng)
    restored = torch.optim.AdamW(model.parameters(), lr=0.5)
    restored.load_state_dict(unflatten_optimizer({k: v for k, v in loaded.items() if k.startswith("optimizer.")},
                                                 loaded_meta["optimizer"]))
    assert restored.param_groups[0]["lr"] == 0.01
    for a, b in zip(optimizer.state.values(), restored.state.values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"])
