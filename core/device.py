"""Choosing and describing the compute device."""

from __future__ import annotations

import torch

from .config import DEVICES_HELP, is_device_name
from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU.

    Raises:
        ConfigError: the name is not one of auto, cpu, cuda or cuda:N, or CUDA was asked for but is
            not available.
    """
    if not is_device_name(name):
        raise ConfigError(f"--device {name!r} is unknown; use {DEVICES_HELP} (N: the GPU index, e.g. cuda:0)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: only {torch.cuda.device_count()} GPU(s) here; use cuda:0..cuda:"
                f"{torch.cuda.device_count() - 1}"
            )
    return device


def describe_device(device: torch.device) -> str:
    """A human line such as ``CPU (2 threads)`` or ``CUDA:0 NVIDIA H100 (79 GiB)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"CUDA:{index} {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"CPU ({torch.get_num_threads()} threads)"
