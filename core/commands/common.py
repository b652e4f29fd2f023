"""Pieces every command shares: the help formatter and the stop-on-signal switch."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

logger = logging.getLogger("core.cli")


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every default and keeps hand-made line breaks in descriptions."""


class StopOnSignal:
    """SIGTERM or a first Ctrl-C asks the running job to stop cleanly at its next step (pre-training
    saves a resumable checkpoint; other jobs leave no output); a second Ctrl-C interrupts at once, and
    the writers still remove their partial files (:mod:`core.io.writer`; a later run removes those of
    a killed one)."""

    def __init__(self, note: str = "stopping at the end of this step; nothing half-written is kept") -> None:
        self.note = note
        self.requested = False
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            logger.warning("interrupted: removing partial files")
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stop requested: %s", self.note)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


VALUE_SCALE_CHOICES = ("sentinel2_dn", "reflectance", "uint8")  # core.io.normalization.VALUE_SCALES (no numpy here)


def add_reading_options(p: argparse.ArgumentParser) -> None:
    """``--assume-band-names`` and ``--value-scale``: how a model's input rasters are named and scaled."""
    p.add_argument("--assume-band-names", default="", metavar="NAMES",
                   help="names for the bands of an input raster that does not name them (no band descriptions), "
                        "in file order: 'l2a' for B01..B12 without B10, 'l1c' for all 13, or a comma-separated list "
                        "(default: band descriptions or *_Bxx.tif file names; else by order, with a warning)")
    p.add_argument("--value-scale", choices=("auto", *VALUE_SCALE_CHOICES), default="auto",
                   help="the scale of the input values (model and features methods). auto reads it from a "
                        "sample: reflectance (0-1) into a model trained on Sentinel-2 digital numbers (0-10000) is "
                        "multiplied by 10000 (and the reverse divided), with a warning; 8-bit values (0-255) into "
                        "such a model, or reflectance into a model trained on 8-bit JPG/PNG, stop with an error. "
                        "Say the scale when auto is wrong")


def kept_covers(args: argparse.Namespace) -> list[str]:
    """The covers whose stable-cover rule ``--keep-vegetation`` / ``--keep-water`` switch off (see
    :mod:`core.change.stable_cover`; its names, spelled here so that the CLI parses without numpy)."""
    return [name for name in ("vegetation", "water") if getattr(args, f"keep_{name}")]
