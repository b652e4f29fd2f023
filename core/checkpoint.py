"""Model folders and resumable training state, written atomically and loaded without unpickling.

A model folder holds ``model.safetensors`` (weights of the unwrapped modules) and ``config.json``
(``format_version``, kind, architecture, bands, normalisation, patch size, provenance, metrics).
Resumable state is one ``train_state.safetensors`` file: tensors (full model, optimizer moments,
RNG) plus JSON metadata (step, optimizer hyper-parameters, history) in the safetensors header.
Every file is written to a temporary name in the same folder, then renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointFormatError

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.safetensors"
PRETRAIN_KIND = "swimdiff-pretrain"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointFormatError(f"'{path}' is missing; give a folder written by 'swimdiff pretrain'")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointFormatError(
            f"'{path}' is not a valid safetensors file ({error}); it may be truncated or corrupted: "
            "re-create it with 'swimdiff pretrain'"
        ) from error


def save_model(out_dir: Path, weights: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write ``model.safetensors`` then ``config.json`` (with ``format_version``) atomically."""
    config = {"format_version": FORMAT_VERSION, **config}
    _save_tensors(out_dir / MODEL_FILE, weights, {"format_version": str(FORMAT_VERSION),
                                                   "kind": str(config.get("kind", ""))})
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True))


def read_config(model_dir: Path, kind: str | None = PRETRAIN_KIND) -> dict[str, Any]:
    """Read and validate ``config.json`` of a model folder.

    Raises:
        CheckpointFormatError: the folder or file is missing, not JSON, of another kind or version.
    """
    path = Path(model_dir) / CONFIG_FILE
    if not Path(model_dir).is_dir():
        raise CheckpointFormatError(f"model folder '{model_dir}' does not exist; give a folder with {CONFIG_FILE}")
    if not path.is_file():
        raise CheckpointFormatError(f"'{model_dir}' is not a SwiMDiff model folder (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointFormatError(f"'{path}' is not valid JSON ({error}); the model folder is corrupted") from error
    if not isinstance(config, dict) or "format_version" not in config:
        raise CheckpointFormatError(f"'{path}' has no format_version; it is not a SwiMDiff model config")
    if config["format_version"] != FORMAT_VERSION:
        raise CheckpointFormatError(
            f"'{path}' has format_version {config['format_version']!r}; this SwiMDiff reads {FORMAT_VERSION}: "
            "upgrade the plugin or re-create the model"
        )
    if kind is not None and config.get("kind") != kind:
        raise CheckpointFormatError(f"'{path}' holds a {config.get('kind')!r} model, expected {kind!r}")
    return config


def load_model(model_dir: Path, kind: str | None = PRETRAIN_KIND) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load (weights, config) of a model folder, validating both."""
    config = read_config(model_dir, kind)
    weights, _ = _load_tensors(Path(model_dir) / MODEL_FILE)
    return weights, config


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], model_dir: str | Path) -> None:
    """Load saved weights (fp16 or fp32) into ``model`` as fp32.

    Raises:
        CheckpointFormatError: the weights do not fit the architecture its config.json describes.
    """
    try:
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    except RuntimeError as error:
        raise CheckpointFormatError(f"'{model_dir}': weights do not fit the architecture in config.json ({error})"
                                    ) from error


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON-able metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, slots in meta["scalars"].items():
        state.setdefault(int(index), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(out_dir: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the resumable state as one file (tensors + JSON metadata in the header)."""
    _save_tensors(out_dir / STATE_FILE, tensors, {"format_version": str(FORMAT_VERSION), "kind": "train-state",
                                                  "meta": json.dumps(meta)})


def load_train_state(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_train_state` wrote.

    Raises:
        CheckpointFormatError: the file is missing, corrupted or not a SwiMDiff training state.
    """
    path = Path(out_dir) / STATE_FILE
    tensors, header = _load_tensors(path)
    if header.get("kind") != "train-state" or header.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointFormatError(f"'{path}' is not a SwiMDiff training state of format {FORMAT_VERSION}")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointFormatError(f"'{path}' has no readable metadata ({error}); it is corrupted") from error
    return tensors, meta
