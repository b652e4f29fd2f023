"""What the panel's runs leave behind when they end: result layers added and styled, new models handed on,
and one plain sentence in the message bar (details in the "SwiMDiff" log).

:class:`Outcomes` is the half of :class:`~.runs.Runner` that reacts to a finished worker task; the other half
(``runs.py``) builds the worker's arguments and starts the tasks. Nothing here starts a run.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from qgis.core import Qgis, QgsProject
from qgis.gui import QgisInterface
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .landcover import add_classification_layers
from .layers import add_detection_layers, zoom_if_outside
from .model_info import pretrained_steps
from .panel.threshold import add_threshold_mask
from .qgis_log import LOG_TAG, log
from .worker import WorkerError

logger = logging.getLogger(__name__)

#: How a run ended, as :attr:`Outcomes.ended` says it.
DONE, FAILED, CANCELLED, STOPPED = "done", "failed", "cancelled", "stopped"

__all__ = ["CANCELLED", "DONE", "FAILED", "STOPPED", "Outcomes", "adapt_sentence", "classifier_score",
           "cloud_sentence", "stopped_at"]


def classifier_score(outputs: dict[str, Any]) -> str:
    """The validation score a ``finetune-classify`` run reports, e.g. ``accuracy 0.912 on validation patches``."""
    for metric in ("accuracy", "micro_map"):
        if isinstance(outputs.get(metric), float | int):
            return f"{metric.replace('_', ' ')} {outputs[metric]:.3f} on {outputs.get('evaluated_on', '?')} patches"
    return "no score"


def stopped_at(outputs: dict[str, Any], parameters: dict[str, Any]) -> str:
    """``N of M`` for a pre-training that stopped early (M: the worker's total, else the steps asked)."""
    total = outputs.get("total_steps", parameters.get("steps", "?"))
    return f"{int(outputs.get('steps_done', 0))} of {total}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, float | int) and math.isfinite(value) else None


def cloud_sentence(outputs: dict[str, Any]) -> str:
    """What cloud masking left out of a detection, e.g. ``clouds masked: 12.4 % of the pixels (t1 10.0 %, t2
    3.1 %)``; "" when the run masked no clouds (its result has no ``cloudy_fraction``)."""
    share = _number(outputs.get("cloudy_fraction"))
    if share is None:
        return ""
    dates = [(name, _number(outputs.get(f"cloudy_fraction_{name}"))) for name in ("t1", "t2")]
    each = ", ".join(f"{name} {100 * value:.1f} %" for name, value in dates if value is not None)
    return f"clouds masked: {100 * share:.1f} % of the pixels" + (f" ({each})" if each else "")


def adapt_sentence(outputs: dict[str, Any], folder: str) -> str:
    """The message of a finished ``swimdiff adapt``: the adapted model's held-out F1 beside the starting model's,
    first (a long folder path may not fit the message bar).

    E.g. ``Adapted change model: held-out F1 0.61 (starting model 0.45), threshold 0.35, in /m``.
    """
    f1, before = _number(outputs.get("val_f1")), _number(outputs.get("zero_shot_val_f1"))
    text = "Adapted change model: held-out F1 " + (f"{f1:.2f}" if f1 is not None else "not measured")
    text += f" (starting model {before:.2f})" if before is not None else ""
    threshold = _number(outputs.get("threshold"))
    text += f", threshold {threshold:.2f}" if threshold is not None else ""
    kept = bool(outputs.get("threshold_kept"))  # a new threshold gained too little on the held-out polygons
    if outputs.get("best_step") == 0:
        text += (" (training did not beat the starting weights on the held-out polygons: " + (
            "the starting model is kept as it is)" if kept else "they are kept, with the threshold re-chosen there)"))
    elif kept:
        text += " (the starting model's threshold: a new one gained too little on the held-out polygons)"
    return f"{text}, in {folder}"


class Outcomes(QObject):
    """Turns finished worker tasks into layers, handed-on models and messages (the base of ``Runner``).

    Signals:
        ended: ``(state, text)`` when a run ended: state ``done``, ``failed``, ``cancelled`` or ``stopped`` (a
            pre-training that stopped early), text what the panel's status line says.
        model_ready: ``(command, folder)`` when a pre-training, fine-tuning or adapting wrote a usable model.

    Attributes:
        iface: The QGIS interface (message bar, map canvas).
        project: Where result layers go.
        last_layers: The layers of the last detection or classification, for the caller and tests.
        last_result: The outputs of the last run that succeeded.
    """

    ended = pyqtSignal(str, str)
    model_ready = pyqtSignal(str, str)

    def __init__(self, iface: QgisInterface, project: QgsProject | None = None) -> None:
        super().__init__()
        self.iface = iface
        self.project = project
        self.last_layers: Any = None
        self.last_result: dict[str, Any] = {}

    def _renamed(self, note: str) -> None:
        if note:
            log(note, Qgis.Info)

    def _add_layers(self, outputs: dict[str, Any], parameters: dict[str, Any], name: str, renamed: str) -> None:
        self.last_result = outputs
        try:
            self.last_layers = add_detection_layers(outputs, parameters, name, self.project)
        except ValueError as error:
            self._report(str(error), Qgis.Critical)
            return
        zoom_if_outside(self.iface.mapCanvas(), self.last_layers.mask)
        notes = [note for note in (cloud_sentence(outputs), renamed) if note]
        self._done(f"Changes detected: {100 * float(outputs.get('changed_fraction', 0)):.2f} % of the pixels "
                   f"changed (threshold {float(outputs.get('threshold', 0)):.3g})"
                   + "".join(f"; {note}" for note in notes))

    def _add_threshold_mask(self, outputs: dict[str, Any], parameters: dict[str, Any], layer_id: str,
                            renamed: str) -> None:
        self.last_result = outputs
        try:
            self.last_layers = add_threshold_mask(outputs, parameters, layer_id, self.project)
        except ValueError as error:
            return self._report(str(error), Qgis.Critical)
        self._done(f"Change mask saved at threshold {float(outputs['threshold']):.2f}: "
                   f"{100 * float(outputs.get('changed_fraction', 0)):.2f} % of the pixels changed, in "
                   f"{outputs['change']}" + (f"; {renamed}" if renamed else ""))

    def _add_classification(self, outputs: dict[str, Any], parameters: dict[str, Any], name: str,
                            renamed: str) -> None:
        self.last_result = outputs
        try:
            self.last_layers = add_classification_layers(outputs, parameters, name, self.project)
        except ValueError as error:
            self._report(str(error), Qgis.Critical)
            return
        zoom_if_outside(self.iface.mapCanvas(), self.last_layers.landcover)
        fractions = outputs.get("class_fractions") or {}
        main = sorted(fractions.items(), key=lambda item: -float(item[1]))[:3]
        self._done(f"Land cover classified into {len(outputs.get('classes', []))} classes"
                   + (": " + ", ".join(f"{name} {100 * float(share):.1f} %" for name, share in main) if main else "")
                   + (f"; {renamed}" if renamed else ""))

    def _pretrained(self, outputs: dict[str, Any], out: str, steps: int) -> None:
        self.last_result = outputs
        folder = str(outputs.get("model_dir", out))
        if not outputs.get("stopped"):
            self._done(f"Pre-trained model in {folder}")
            self.model_ready.emit("pretrain", folder)
            return
        done = int(outputs.get("steps_done", 0))
        text = f"Pre-training stopped at step {stopped_at(outputs, {'steps': steps})}"
        if pretrained_steps(folder) == done:  # the worker saved a usable model at the stop
            text += f"; the model of step {done} is in {folder}"
            self.model_ready.emit("pretrain", folder)
        else:
            text += f"; no model yet in {folder}"
        self._report(text + ": continue with Resume on the Pre-train page", Qgis.Info, 15)

    def _finetuned(self, outputs: dict[str, Any], out: str) -> None:
        self.last_result = outputs
        folder = str(outputs.get("model_dir", out))
        self._done(f"Change model in {folder} (validation F1 {outputs.get('val_f1', float('nan')):.3f})")
        self.model_ready.emit("finetune-change", folder)

    def _adapted(self, outputs: dict[str, Any], out: str) -> None:
        self.last_result = outputs
        folder = str(outputs.get("model_dir", out))
        self._done(adapt_sentence(outputs, folder))
        self.model_ready.emit("adapt", folder)

    def _done(self, message: str) -> None:
        log(message, Qgis.Success)
        self.iface.messageBar().pushMessage(LOG_TAG, message, Qgis.Success, 10)

    def _warn(self, message: str) -> None:
        """A worker warning (already in the log): shown in the message bar too."""
        self.iface.messageBar().pushMessage(LOG_TAG, message, Qgis.Warning, 15)

    def _failed(self, error: WorkerError) -> None:
        if error.details and not error.user_error:
            log(f"{error.kind}: {error.message}\n{error.details}", Qgis.Info if error.cancelled else Qgis.Critical)
        if error.cancelled:
            self._report(error.message, Qgis.Info, 5)
        elif error.user_error:
            self._report(error.message, Qgis.Warning)
        else:
            self._report(f"{error.message} (details in the SwiMDiff log)", Qgis.Critical)

    def _report(self, message: str, level: Qgis.MessageLevel, duration: int = 0) -> None:
        log(message, level)
        self.iface.messageBar().pushMessage(LOG_TAG, message, level, duration)
