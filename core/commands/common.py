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
    the writers still remove their partial files (:mod:`core.data.writer`; a later run removes those of
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
