"""Send the plugin's messages to the QGIS message log under the "SwiMDiff" tag."""

from __future__ import annotations

import logging

from qgis.core import Qgis, QgsMessageLog

LOG_TAG = "SwiMDiff"


def log(message: str, level: Qgis.MessageLevel = Qgis.Info) -> None:
    """Write one message to the QGIS message log panel, tab "SwiMDiff".

    Args:
        message: The text to log.
        level: The QGIS message level (``Qgis.Info``, ``Qgis.Warning``, ``Qgis.Critical``).
    """
    QgsMessageLog.logMessage(message, LOG_TAG, level)


class MessageLogHandler(logging.Handler):
    """A ``logging`` handler that forwards records to :func:`log` (so modules just use ``logging``)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Forward one record, mapping its level onto the QGIS message levels.

        Args:
            record: The record to forward.
        """
        if record.levelno >= logging.ERROR:
            level = Qgis.Critical
        elif record.levelno >= logging.WARNING:
            level = Qgis.Warning
        else:
            level = Qgis.Info
        try:
            log(self.format(record), level)
        except Exception:  # a broken log call must never break the caller
            self.handleError(record)
