"""Model folders and resumable training state, written atomically and loaded without unpickling.

A model folder holds ``model.safetensors`` (weights of the unwrapped modules) and ``config.json``
(``format_version``, kind, architecture, bands, normalisation, patch size, provenance, metrics).
Resumable state is one ``train_state.safetensors`` file: tensors (full model, optimizer moments,
RNG) plus JSON metadata (step, optimizer hyper-parameters, history) in the safetensors header.
Every file is written to a hidden temporary in the same folder (named after the file and this
process, see :mod:`core.io.writer`), checked, then renamed: a full disk keeps the previous file
and raises :class:`~core.errors.OutputError` ("no space left on '<folder>'").
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointFormatError
from .io.writer import LIVE_TEMPORARIES, remove_stale_temporaries, sync_file, temporary_name, write_error

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.safetensors"
PRETRAIN_KIND = "swimdiff-pretrain"


Writer = Callable[[Path], None]  # writes the file it is given
Check = Callable[[Path], None]  # raises OSError unless the file it is given holds what was meant


def _not_empty(tmp: Path) -> None:
    if tmp.stat().st_size == 0:
        raise OSError(f"'{tmp}' is empty after writing")


def png_complete(tmp: Path) -> None:
    """A :data:`Check` for PNG files: the signature first, the IEND chunk last (a cut file has none)."""
    with open(tmp, "rb") as handle:
        head = handle.read(8)
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 12))
        tail = handle.read()
    if head != b"\x89PNG\r\n\x1a\n" or tail[4:8] != b"IEND":
        raise OSError(f"'{tmp}' is not a complete PNG after writing")


def save_png(path: Path, fig: Any) -> None:
    """Write a matplotlib figure as a PNG through :func:`atomic_write` (checked whole), then close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), check=png_complete)
    finally:
        plt.close(fig)


def atomic_write_all(jobs: Sequence[tuple[Path, Writer, Check]]) -> None:
    """Write several files that appear together: each ``write(tmp)`` goes to a hidden temporary sibling of
    its path, is synced and checked; only when every one passed are they renamed into place.

    Raises:
        OutputError: a file could not be written ("no space left on '<folder>'" when the disk is full);
            every temporary is removed and every previous file kept.
    """
    done: list[tuple[Path, Path]] = []
    path = Path()
    try:
        for path, write, check in jobs:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
            tmp = temporary_name(path)
            LIVE_TEMPORARIES.add(tmp)
            done.append((tmp, path))
            write(tmp)
            sync_file(tmp)
            check(tmp)
        umask = os.umask(0)
        os.umask(umask)
        for tmp, path in done:  # every file is written and checked: rename them all
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
    except (OSError, SafetensorError) as error:  # how the writers report a full disk
        raise write_error(path, error) from error
    finally:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)
            LIVE_TEMPORARIES.discard(tmp)


def atomic_write(path: Path, write: Writer, check: Check = _not_empty) -> None:
    """Call ``write(tmp)`` on a hidden temporary sibling of ``path``, sync and ``check`` it, then rename it
    onto ``path``. Raises :class:`~core.errors.OutputError` (see :func:`atomic_write_all`)."""
    atomic_write_all([(path, write, check)])


def _text_job(path: Path, text: str) -> tuple[Path, Writer, Check]:
    data = text.encode("utf-8")

    def check(tmp: Path) -> None:
        if tmp.read_bytes() != data:
            raise OSError(f"'{tmp}' does not hold the {len(data)} bytes written")

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return path, write, check


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, checked by reading it back."""
    atomic_write_all([_text_job(path, text)])


def _tensors_job(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[Path, Writer, Check]:
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    def check(tmp: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(tmp), framework="pt") as handle:  # reads the header and the size of every tensor
            if set(handle.keys()) != set(plain):
                raise OSError(f"'{tmp}' holds {len(list(handle.keys()))} tensors, not {len(plain)}")

    return path, lambda tmp: save_file(plain, str(tmp), metadata=metadata), check


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    atomic_write_all([_tensors_job(path, tensors, metadata)])


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
    """Write ``model.safetensors`` and ``config.json`` (with ``format_version``): both or neither.

    Raises:
        OutputError: the folder cannot be written (a full disk names it); the previous model stays.
    """
    config = {"format_version": FORMAT_VERSION, **config}
    atomic_write_all([
        _tensors_job(out_dir / MODEL_FILE, weights, {"format_version": str(FORMAT_VERSION),
                                                     "kind": str(config.get("kind", ""))}),
        _text_job(out_dir / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True)),
    ])


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
