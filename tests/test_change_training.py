"""Fine-tuning, loading and evaluating change models on a generated OSCD-layout root."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_oscd
from core.change.losses import change_loss
from core.change.patches import ChangePatchDataset, CityStack, split_rows
from core.change.training import WeightAverage, best_threshold, change_step, load_change_model, parameter_groups
from core.cli import main
from core.models.siamese import SiameseUNet


@pytest.mark.parametrize("fusion", ["diff", "diff+mean"])
def test_siamese_unet_shapes_and_symmetry(fusion: str) -> None:
    model = SiameseUNet("resnet18", in_chans=4, fusion=fusion).eval()
    a, b = torch.randn(2, 4, 48, 40), torch.randn(2, 4, 48, 40)
    with torch.no_grad():
        logits = model(a, b)
        torch.testing.assert_close(logits, model(b, a))  # |f(a) - f(b)| and (f(a) + f(b)) / 2 are order-free
        fused = model.fused_features(a, a)
    assert logits.shape == (2, 1, 48, 40)
    widths = [c * (2 if fusion == "diff+mean" else 1) for c in model.encoder.channels]
    assert [f.shape[1] for f in fused] == widths
    assert all(float(f.abs().max()) > 0 for f in fused) == (fusion == "diff+mean")  # a difference alone is 0


def test_change_loss_ignores_unlabelled_pixels() -> None:
    label = torch.tensor([[[1.0, 0.0], [255.0, 255.0]]])  # the bottom row is unlabelled
    logits = torch.zeros(1, 1, 2, 2)
    wild = logits.clone()
    wild[0, 0, 1] = torch.tensor([50.0, -50.0])  # anything on unlabelled pixels
    assert float(change_loss(logits, label)) == float(change_loss(wild, label))
    right = wild.clone()
    right[0, 0, 0] = torch.tensor([10.0, -10.0])  # confident and right on the labelled pixels
    assert float(change_loss(right, label)) < 0.01 < float(change_loss(logits, label))


def test_weight_average_follows_the_weights_with_its_decay() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    before = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 3
    average.update(model)
    torch.testing.assert_close(average.model[0].weight, before + 0.1)
    assert int(average.model[1].num_batches_tracked) == 3 and not average.model[0].weight.requires_grad


def test_best_threshold_picks_the_best_pooled_f1() -> None:
    label = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    prob = np.array([[0.1, 0.3, 0.6, 0.9]], dtype=np.float32)
    threshold, counts = best_threshold([prob], [label])
    assert 0.3 <= threshold < 0.6 and counts.f1 == 1.0


def test_finetune_then_evaluate_from_a_pretrained_encoder(tmp_path, capsys) -> None:
    root = make_oscd(tmp_path / "oscd")
    encoder = tmp_path / "encoder"
    assert main(["pretrain", "--data", str(root / "images" / "alpha"), "--out", str(encoder), "--steps", "2",
                 "--batch-size", "4", "--patch-size", "32", "--queue-size", "16", "--num-workers", "0",
                 "--bands", "B02,B03,B04"]) == 0
    model_dir = tmp_path / "change"
    code = main(["finetune-change", "--data", str(root), "--out", str(model_dir), "--encoder", str(encoder),
                 "--cities", "alpha,beta", "--val-cities", "gamma", "--steps", "6", "--batch-size", "2",
                 "--patch-size", "32", "--eval-every", "3", "--events", "jsonl"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0, events[-1]
    assert events[-1]["outputs"]["best_step"] in (3, 6)
    model, config = load_change_model(model_dir, torch.device("cpu"))
    assert config["bands"] == ["B02", "B03", "B04"]  # the encoder's bands, selected from the 4 OSCD bands
    assert config["provenance"]["encoder"] == str(encoder) and 0 < config["threshold"] < 1
    assert (model_dir / "history.csv").read_text().startswith("step,loss,val_f1")

    report = tmp_path / "report"
    assert main(["evaluate", "--data", str(root), "--model", str(model_dir), "--cities", "gamma",
                 "--report", str(report), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores["pooled"]) >= {"precision", "recall", "f1", "iou"}
    assert (report / "gamma.png").read_bytes()[:4] == b"\x89PNG" and "| gamma |" in (report / "report.md").read_text()


def test_finetune_on_some_of_the_encoders_bands_keeps_their_weights_and_statistics(tmp_path, capsys) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha", "beta"))
    encoder = tmp_path / "encoder"
    assert main(["pretrain", "--data", str(root / "images" / "alpha"), "--out", str(encoder), "--steps", "1",
                 "--batch-size", "4", "--patch-size", "32", "--queue-size", "16", "--num-workers", "0",
                 "--bands", "B02,B03,B04"]) == 0
    args = ["finetune-change", "--data", str(root), "--encoder", str(encoder), "--cities", "alpha",
            "--val-cities", "beta", "--steps", "1", "--batch-size", "2", "--patch-size", "32", "--events", "jsonl"]
    assert main([*args, "--out", str(tmp_path / "nir"), "--bands", "B04,B08"]) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert "B08" in error and "B02,B03,B04" in error and not (tmp_path / "nir" / "config.json").exists()

    assert main([*args, "--out", str(tmp_path / "change"), "--bands", "B04,B02"]) == 0
    _, config = load_change_model(tmp_path / "change", torch.device("cpu"))
    pretrained = json.loads((encoder / "config.json").read_text())["normalization"]
    assert config["bands"] == config["normalization"]["bands"] == ["B04", "B02"]
    assert config["normalization"]["mean"] == [pretrained["mean"][2], pretrained["mean"][0]]
    assert config["architecture"]["in_chans"] == 2 and "fusion" not in config["architecture"]

    assert main([*args, "--out", str(tmp_path / "mean"), "--fusion", "diff+mean"]) == 0
    model, config = load_change_model(tmp_path / "mean", torch.device("cpu"))
    assert config["architecture"]["fusion"] == model.fusion == "diff+mean"


def test_a_band_subset_of_a_pretrained_encoder_is_the_encoder_fed_zeros_for_the_others() -> None:
    full = SiameseUNet("resnet18", in_chans=3).eval()
    weights = {f"encoder_q.{k}": v for k, v in full.encoder.state_dict().items()}
    part = SiameseUNet("resnet18", in_chans=2).eval()
    part.load_pretrained_encoder(weights, channels=[2, 0])
    x = torch.randn(1, 2, 32, 32)
    padded = torch.cat([x[:, 1:2], torch.zeros(1, 1, 32, 32), x[:, 0:1]], dim=1)  # bands 2, 0 -> 0, (1 at 0), 2
    with torch.no_grad():
        torch.testing.assert_close(part.encoder(x)[-1], full.encoder(padded)[-1])


def test_the_encoder_learns_at_its_share_of_the_learning_rate() -> None:
    model = SiameseUNet("resnet18", in_chans=2)
    groups = parameter_groups(model, encoder_lr_scale=0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    batch = {"x1": torch.randn(2, 2, 32, 32), "x2": torch.randn(2, 2, 32, 32),
             "label": (torch.rand(2, 32, 32) > 0.9).float()}
    change_step(model, optimizer, batch, lr=0.02, device=torch.device("cpu"))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.002, 0.02])
    model.encoder.requires_grad_(False)  # --freeze-encoder: only the decoder's group is left
    assert [g["lr_scale"] for g in parameter_groups(model, 0.1)] == [1.0]


def test_evaluate_cva_needs_no_model_and_finds_planted_blocks(tmp_path) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha",))
    assert main(["evaluate", "--data", str(root), "--method", "cva", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["pooled"]["f1"] > 0.8


@pytest.mark.parametrize("args,expect", [
    (["--model", "nowhere"], "does not exist"),
    (["--method", "features", "--model", "nowhere"], "does not exist"),
    (["--method", "cva", "--cities", "atlantis"], "choose from alpha"),
])
def test_evaluate_bad_input(args, expect, tmp_path, capsys) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha",))
    code = main(["evaluate", "--data", str(root), *args, "--events", "jsonl"])
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 2 and expect in error["message"]


def test_split_rows_holds_out_the_bottom_rows_for_validation() -> None:
    x = np.arange(2 * 40 * 10, dtype=np.float32).reshape(2, 40, 10)
    label = np.zeros((40, 10), dtype=np.uint8)
    train, val = split_rows(CityStack("c", x, x + 1, label), 0.25)
    assert train.shape == (30, 10) and val.shape == (10, 10) and "c" in val.name
    np.testing.assert_array_equal(np.concatenate([train.x2, val.x2], axis=1), x + 1)


def test_jitter_changes_each_date_by_a_gain_and_offset_per_band_and_leaves_the_mask() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 40, 40)).astype(np.float32)
    label = (rng.random((40, 40)) < 0.1).astype(np.uint8)
    city = CityStack("c", x, x.copy(), label)
    plain, jittered = (ChangePatchDataset([city], 32, 4, seed=3, jitter=j)[1] for j in (0.0, 0.2))
    assert torch.equal(plain["label"], jittered["label"]) and torch.equal(plain["x1"], plain["x2"])
    assert not torch.allclose(jittered["x1"], jittered["x2"])  # the two dates get different draws
    for date in ("x1", "x2"):  # an affine map per band: x' = gain * x + offset
        for band in range(4):
            a, b = plain[date][band].flatten().numpy(), jittered[date][band].flatten().numpy()
            gain, offset = np.polyfit(a, b, 1)
            assert np.allclose(gain * a + offset, b, atol=1e-4) and abs(gain - 1.0) < 1.0
    assert torch.equal(ChangePatchDataset([city], 32, 4, seed=3, jitter=0.2)[1]["x1"], jittered["x1"])


def test_device_command_reports_the_device(capsys) -> None:
    assert main(["device", "--device", "cpu", "--events", "jsonl"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["outputs"]["type"] == "cpu" and result["outputs"]["device"].startswith("CPU (")
