"""``swimdiff device``: which device a run would use (the QGIS plugin shows it before a run)."""

from __future__ import annotations

import argparse
import logging

from ..events import Reporter
from .common import Formatter

logger = logging.getLogger("core.cli")


def add(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("device", formatter_class=Formatter, help="show the device a run would use",
                            description="Resolve --device as training and detection do and describe it.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=_run_device)


def _run_device(args: argparse.Namespace, reporter: Reporter) -> dict:
    import torch

    from ..device import describe_device, resolve_device

    device = resolve_device(args.device)
    description = describe_device(device)
    logger.info("device: %s", description)
    return {"device": description, "type": device.type, "cuda_devices": torch.cuda.device_count()}
