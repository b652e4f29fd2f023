"""How a long-running command reports: JSON lines for the plugin, a progress bar for people.

With ``--events jsonl`` every line on stdout is one JSON object (DESIGN.md, worker protocol):
``progress``, ``metric``, ``log``, ``result`` and ``error`` events. Otherwise progress goes to a
tqdm bar on stderr and metrics to the log.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

logger = logging.getLogger(__name__)


class Reporter:
    """Base reporter: logs metrics, ignores progress."""

    def progress(self, fraction: float, message: str) -> None:
        pass

    def metric(self, step: int, values: dict[str, float]) -> None:
        logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "step"))

    def result(self, outputs: dict[str, Any]) -> None:
        pass

    def error(self, kind: str, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class JsonLinesReporter(Reporter):
    """One JSON object per stdout line, flushed at once."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def emit(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()

    def progress(self, fraction: float, message: str) -> None:
        self.emit("progress", fraction=round(float(fraction), 4), message=message)

    def metric(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            if name != "step":
                self.emit("metric", step=step, name=name, value=float(value))

    def result(self, outputs: dict[str, Any]) -> None:
        self.emit("result", outputs=outputs)

    def error(self, kind: str, message: str) -> None:
        self.emit("error", kind=kind, message=message)


class JsonLogHandler(logging.Handler):
    """Forwards log records as ``{"event": "log", "level": ..., "message": ...}`` lines."""

    def __init__(self, reporter: JsonLinesReporter) -> None:
        super().__init__(logging.INFO)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        self.reporter.emit("log", level=record.levelname.lower(), message=record.getMessage())


class BarReporter(Reporter):
    """A tqdm progress bar on stderr with the latest message as its postfix."""

    def __init__(self) -> None:
        import shutil

        from tqdm import tqdm

        columns = shutil.get_terminal_size((100, 20)).columns or 100  # 0 inside some pseudo-terminals
        self.bar = tqdm(total=1000, file=sys.stderr, ncols=max(60, columns),
                        bar_format="{percentage:3.0f}%|{bar}| {elapsed}<{remaining}  {desc}")

    def progress(self, fraction: float, message: str) -> None:
        self.bar.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        self.bar.set_description_str(message, refresh=True)

    def metric(self, step: int, values: dict[str, float]) -> None:
        self.bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "step"),
                       file=sys.stderr)

    def log_handler(self) -> logging.Handler:
        """A handler that prints log records above the bar instead of through it."""
        bar = self.bar

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                bar.write(self.format(record), file=sys.stderr)

        handler = _Handler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        return handler

    def close(self) -> None:
        self.bar.close()
