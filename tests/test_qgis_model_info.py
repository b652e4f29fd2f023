"""What the panel reads from a pre-trained encoder folder's config.json (swimdiff_qgis/model_info.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swimdiff_qgis.model_info import EncoderInfo, read_encoder_info

BANDS = ["B02", "B03", "B04", "B08"]


def write_encoder(folder: Path, weights: bool = True, **config) -> Path:
    """A folder shaped like the output of ``swimdiff pretrain`` (the weights file is a placeholder)."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {"format_version": 1, "kind": "swimdiff-pretrain", "architecture": {"arch": "resnet18", "in_chans": 4},
            "bands": BANDS, "patch_size": 64, **config}
    (folder / "config.json").write_text(json.dumps(body))
    if weights:
        (folder / "model.safetensors").write_bytes(b"placeholder")
    return folder


def test_an_encoder_folder_gives_its_bands_and_patch_size(tmp_path: Path) -> None:
    folder = write_encoder(tmp_path / "enc")

    info = read_encoder_info(folder)

    assert info == EncoderInfo(folder=folder, arch="resnet18", bands=tuple(BANDS), patch_size=64)
    assert info.describe() == ("resnet18 encoder; 4 bands: B02, B03, B04, B08; pre-trained on 64 px patches. "
                               "Fine-tuning uses these bands.")


def test_the_patch_size_may_come_from_the_data_config(tmp_path: Path) -> None:
    folder = write_encoder(tmp_path / "enc", patch_size=None, data={"patch_size": 96})
    assert read_encoder_info(folder).patch_size == 96


def test_the_real_pretrained_models_of_this_repository_read(tmp_path: Path) -> None:
    configs = sorted(Path(__file__).resolve().parents[1].glob("runs/*/config.json"))
    pretrain = [c.parent for c in configs if json.loads(c.read_text()).get("kind") == "swimdiff-pretrain"
                and (c.parent / "model.safetensors").is_file()]
    if not pretrain:
        pytest.skip("no pre-trained model under runs/")
    info = read_encoder_info(pretrain[0])
    assert info.bands and info.arch.startswith("resnet") and info.patch_size


FIX = ("choose a folder written by 'swimdiff pretrain' (the panel's 'Pre-train an encoder' page), or leave Encoder "
       "empty for random weights")


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing", "'{d}/missing' is not a folder; " + FIX),
    (lambda d: (d / "empty").mkdir() or d / "empty", "'{d}/empty' holds no config.json; " + FIX),
    (lambda d: write_encoder(d / "e", kind="swimdiff-change"),
     "'{d}/e' holds a swimdiff-change model, not a pre-trained encoder (swimdiff-pretrain); " + FIX),
    (lambda d: write_encoder(d / "e", bands=[]), "'{d}/e/config.json' lists no band names under 'bands'; " + FIX),
    (lambda d: write_encoder(d / "e", weights=False), "'{d}/e' has no model.safetensors beside its config.json; "
     + FIX),
])
def test_an_unusable_folder_says_what_is_wrong_and_what_to_choose(tmp_path: Path, make, message: str) -> None:
    folder = make(tmp_path)
    with pytest.raises(ValueError) as caught:
        read_encoder_info(folder)
    assert str(caught.value) == message.format(d=tmp_path)


def test_broken_json_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"^'.*/e/config\.json' cannot be read as JSON \(Expecting property name"):
        read_encoder_info(folder)


def test_what_a_pretraining_folder_holds_and_the_steps_of_its_model(tmp_path: Path) -> None:
    from swimdiff_qgis.model_info import holds_model, pretrained_steps

    assert holds_model(tmp_path / "new") == (False, False) and pretrained_steps(tmp_path / "new") is None
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "train_state.safetensors").write_bytes(b"state")
    assert holds_model(stopped) == (False, True) and pretrained_steps(stopped) is None  # nothing usable yet
    folder = write_encoder(tmp_path / "enc", provenance={"steps_done": 120})
    (folder / "train_state.safetensors").write_bytes(b"state")
    assert holds_model(folder) == (True, True) and pretrained_steps(folder) == 120
    assert pretrained_steps(write_encoder(tmp_path / "old", provenance={})) is None
    assert pretrained_steps(write_encoder(tmp_path / "change", kind="swimdiff-change",
                                          provenance={"steps_done": 5})) is None  # not an encoder
