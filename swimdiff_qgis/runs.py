"""Start detection, classification, pre-training and fine-tuning as QgsTasks and report their outcome in the
QGIS window.

:class:`Runner` is the dock's engine, kept free of widgets so tests drive it directly: it copies layer
sources on the main thread, starts one :class:`~.tasks.WorkerTask` at a time, turns a finished detection
or classification into styled layers (never over an earlier result's file) and shows errors and the worker's
warnings in the message bar in plain words (details in the "SwiMDiff" log).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.gui import QgisInterface
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .landcover import add_classification_layers
from .layers import add_detection_layers, zoom_if_outside
from .model_info import pretrained_steps
from .panel.outputs import change_group_name, date_or_name, landcover_group_name, layer_file, unused_output
from .panel.threshold import add_threshold_mask
from .qgis_log import LOG_TAG, log
from .settings import resolve_worker_python
from .tasks import WorkerTask
from .worker import WorkerError

logger = logging.getLogger(__name__)

#: The detection methods: the worker's id and what the panel shows.
METHOD_NAMES = {"model": "Change model (fine-tuned)", "features": "Feature distance (no labels)",
                "cva": "Change vector analysis"}
METHODS = tuple(METHOD_NAMES)
#: How a run ended, as :attr:`Runner.ended` says it.
DONE, FAILED, CANCELLED, STOPPED = "done", "failed", "cancelled", "stopped"

__all__ = ["METHODS", "METHOD_NAMES", "Runner", "classifier_score", "layer_file"]


def classifier_score(outputs: dict[str, Any]) -> str:
    """The validation score a ``finetune-classify`` run reports, e.g. ``accuracy 0.912 on validation patches``."""
    for metric in ("accuracy", "micro_map"):
        if isinstance(outputs.get(metric), float | int):
            return f"{metric.replace('_', ' ')} {outputs[metric]:.3f} on {outputs.get('evaluated_on', '?')} patches"
    return "no score"


def geotiff_output(out: str, name: str, siblings: list[str], inputs: list[str]) -> tuple[Path, str]:
    """The GeoTIFF a run writes: ``out``, or a free name beside it when taken; a temporary file when empty.

    Returns:
        The path and, when the chosen name was taken, a sentence saying so (else "").

    Raises:
        ValueError: ``out`` does not end with .tif or .tiff.
    """
    chosen = Path(out) if out else Path(tempfile.mkdtemp(prefix="swimdiff-")) / name
    if chosen.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"output '{chosen}' is not a GeoTIFF name; use a name ending with .tif")
    path = unused_output(chosen, siblings, inputs)
    if path == chosen:
        return path, ""
    return path, (f"'{chosen.name}' is taken (an earlier result or an input in {chosen.parent}): writing "
                  f"'{path.name}' instead")


class Runner(QObject):
    """Runs one worker task at a time for the dock and reports the outcome.

    Signals:
        started: ``(WorkerTask)`` when a task was handed to the task manager.
        ended: ``(state, text)`` when it ended: state ``done``, ``failed``, ``cancelled`` or ``stopped`` (a
            pre-training that stopped early), text what the panel's status line says.
        model_ready: ``(command, folder)`` when a pre-training or fine-tuning wrote a usable model.

    Attributes:
        iface: The QGIS interface (message bar, map canvas).
        project: Where result layers go.
        task: The running task (kept referenced until it finishes), or None.
        last_layers: The layers of the last detection or classification, for the caller and tests.
    """

    started = pyqtSignal("PyQt_PyObject")
    ended = pyqtSignal(str, str)
    model_ready = pyqtSignal(str, str)

    def __init__(self, iface: QgisInterface, project: QgsProject | None = None) -> None:
        super().__init__()
        self.iface = iface
        self.project = project
        self.task: WorkerTask | None = None
        self.last_layers: Any = None

    def busy(self) -> bool:
        """True while a task runs."""
        return self.task is not None

    def detect(self, t1: QgsRasterLayer | None, t2: QgsRasterLayer | None, out: str = "", model: str = "",
               method: str = "model", threshold: float | None = None, probability: bool = True,
               band_names: str = "") -> WorkerTask:
        """Start ``swimdiff detect`` on two layers; the results become a styled layer group.

        Args:
            t1: The earlier raster layer (its grid is the output grid).
            t2: The later raster layer.
            out: The change mask GeoTIFF; empty for a new file in a temporary folder. When it (or its
                probability sibling) exists, ``<stem>-2.tif``... is written instead, and the log says so.
            model: A model folder; empty for the shipped default model (unused by ``cva``).
            method: ``model``, ``features`` or ``cva``.
            threshold: The threshold; None for the model's validated one (or Otsu's).
            probability: Also write (and show) the probability beside the mask.
            band_names: ``--assume-band-names`` for unnamed bands (``l1c``, ``l2a`` or a list); empty for none.

        Returns:
            The started task.

        Raises:
            ValueError: A parameter is missing or wrong; the message says which and how to fix it.
            WorkerError: No worker interpreter (``WorkerMissing``).
        """
        if method not in METHODS:
            raise ValueError(f"method '{method}' is unknown; use one of {', '.join(METHODS)}")
        sources = layer_file(t1, "earlier (t1)"), layer_file(t2, "later (t2)")
        if Path(sources[0]).resolve() == Path(sources[1]).resolve():
            raise ValueError(f"the earlier (t1) and later (t2) layers are the same file '{sources[0]}'; choose the "
                             "two dates to compare")
        model = "" if method == "cva" else model
        out_path, renamed = geotiff_output(out, "change.tif", ["_probability"] if probability else [], list(sources))
        prob_path = out_path.with_name(f"{out_path.stem}_probability.tif") if probability else None
        args = ["--t1", sources[0], "--t2", sources[1], "--out", str(out_path), "--method", method]
        if model:
            args += ["--model", model]
        if threshold is not None:
            args += ["--threshold", repr(float(threshold))]
        if prob_path is not None:
            args += ["--probability", str(prob_path)]
        args += ["--assume-band-names", band_names] if band_names else []
        parameters = {"t1": sources[0], "t2": sources[1], "method": method,
                      "model": "" if method == "cva" else model or "default",
                      "threshold_asked": "auto" if threshold is None else threshold}
        if band_names:
            parameters["assume_band_names"] = band_names
        dates = (date_or_name(t1), date_or_name(t2)) if t1 is not None and t2 is not None else ("t1", "t2")
        outputs = [str(out_path)] + ([str(prob_path)] if prob_path else [])
        task = WorkerTask("SwiMDiff: detect changes", "detect", args, resolve_worker_python(), parameters, outputs)
        task.succeeded.connect(lambda result: self._add_layers(
            result, parameters, change_group_name(*dates, parameters, time.strftime("%H:%M:%S")), renamed))
        self._renamed(renamed)
        return self._start(task)

    def threshold(self, probability: QgsRasterLayer | None, threshold: float, out: str = "") -> WorkerTask:
        """Start ``swimdiff threshold``: the mask of a change probability layer at ``threshold`` (0 to 1) goes to
        ``out`` (empty: ``<probability stem>_mask_<threshold>.tif`` beside it; a taken name becomes ``...-2.tif``)
        and into the probability's layer group, styled, with the threshold in its metadata.

        Raises:
            ValueError: No probability layer, or a threshold outside 0 to 1. WorkerError: no worker interpreter.
        """
        source = layer_file(probability, "change probability")
        if not 0.0 <= threshold <= 1.0:  # also NaN
            raise ValueError(f"threshold {threshold} is not a change probability; choose 0 to 1")
        out = out or str(Path(source).with_name(f"{Path(source).stem}_mask_{threshold:.2f}.tif"))
        out_path, renamed = geotiff_output(out, "change.tif", [], [source])
        args = ["--probability", source, "--threshold", repr(float(threshold)), "--out", str(out_path)]
        parameters = {"probability": source, "method": "threshold", "threshold_asked": threshold}
        layer_id = probability.id() if probability is not None else ""
        task = WorkerTask("SwiMDiff: save the change mask", "threshold", args, resolve_worker_python(), parameters,
                          [str(out_path)])
        task.succeeded.connect(lambda result: self._add_threshold_mask(result, parameters, layer_id, renamed))
        self._renamed(renamed)
        return self._start(task)

    def classify(self, raster: QgsRasterLayer | None, model: str, out: str = "",
                 probabilities: bool = False) -> WorkerTask:
        """Start ``swimdiff classify`` on a layer; the land-cover map becomes a paletted layer in a group.

        Args:
            raster: The raster layer to classify (its grid is the output grid).
            model: A ``swimdiff finetune-classify`` model folder.
            out: The land-cover GeoTIFF; empty for a new file in a temporary folder; a taken name becomes
                ``<stem>-2.tif``... (the log says so).
            probabilities: Also write (and show) the class probabilities beside the map.

        Returns:
            The started task.

        Raises:
            ValueError: A parameter is missing or wrong; the message says which and how to fix it.
            WorkerError: No worker interpreter (``WorkerMissing``).
        """
        source = layer_file(raster, "input")
        if not model:
            raise ValueError("choose a land-cover classifier folder (written by 'swimdiff finetune-classify')")
        out_path, renamed = geotiff_output(out, "landcover.tif", ["_probabilities"] if probabilities else [],
                                           [source])
        prob_path = out_path.with_name(f"{out_path.stem}_probabilities.tif") if probabilities else None
        args = ["--raster", source, "--model", model, "--out", str(out_path)]
        if prob_path is not None:
            args += ["--probabilities", str(prob_path)]
        parameters = {"raster": source, "model": model}
        label = date_or_name(raster) if raster is not None else "raster"
        outputs = [str(out_path)] + ([str(prob_path)] if prob_path else [])
        task = WorkerTask("SwiMDiff: classify land cover", "classify", args, resolve_worker_python(), parameters,
                          outputs)
        task.succeeded.connect(lambda result: self._add_classification(
            result, parameters, landcover_group_name(label, model, time.strftime("%H:%M:%S")), renamed))
        self._renamed(renamed)
        return self._start(task)

    def pretrain(self, data: list[str], out: str, steps: int = 1000, batch_size: int = 64, resume: bool = False,
                 overwrite: bool = False, band_names: str = "") -> WorkerTask:
        """Start ``swimdiff pretrain`` on raster files or folders (unlabelled scenes).

        Args:
            data: Raster files or folders.
            out: The model folder.
            steps: The run's total steps (also when resuming).
            batch_size: Patches per step.
            resume: Continue the run in ``out`` from its training state.
            overwrite: Replace the model in ``out``.
            band_names: ``--assume-band-names`` for unnamed bands; empty for none.

        Raises:
            ValueError: No data, no output folder, or both resume and overwrite.
        """
        if not data:
            raise ValueError("choose at least one raster layer or folder of unlabelled scenes")
        if not out:
            raise ValueError("choose an output folder for the pre-trained model")
        if resume and overwrite:
            raise ValueError("choose either Resume (continue the model in the output folder) or Overwrite "
                             "(replace it), not both")
        args = ["--data", *data, "--out", out, "--steps", str(steps), "--batch-size", str(batch_size)]
        args += (["--resume"] if resume else []) + (["--overwrite"] if overwrite else [])
        args += ["--assume-band-names", band_names] if band_names else []
        task = WorkerTask("SwiMDiff: pre-train", "pretrain", args, resolve_worker_python(),
                          {"data": data, "steps": steps, "batch_size": batch_size, "resume": resume})
        task.succeeded.connect(lambda result: self._pretrained(result, out, steps))
        return self._start(task)

    def finetune(self, data: str, out: str, encoder: str = "", steps: int = 600) -> WorkerTask:
        """Start ``swimdiff finetune-change`` on an OSCD-layout folder.

        Raises:
            ValueError: No data or no output folder.
        """
        if not data or not out:
            raise ValueError("choose the labelled data folder (OSCD layout) and an output folder")
        args = ["--data", data, "--out", out, "--steps", str(steps)] + (["--encoder", encoder] if encoder else [])
        task = WorkerTask("SwiMDiff: fine-tune change detection", "finetune-change", args, resolve_worker_python(),
                          {"data": data, "encoder": encoder or "random init", "steps": steps})
        task.succeeded.connect(lambda result: self._finetuned(result, out))
        return self._start(task)

    def finetune_classify(self, data: str, out: str, encoder: str = "", epochs: int = 10,
                          linear_probe: bool = False) -> WorkerTask:
        """Start ``swimdiff finetune-classify`` on a folder of labelled patches (EuroSAT or BigEarthNet layout).

        Raises:
            ValueError: No data or no output folder.
        """
        if not data or not out:
            raise ValueError("choose the labelled patches folder (one sub-folder per class) and an output folder")
        args = ["--data", data, "--out", out, "--epochs", str(epochs)]
        args += (["--encoder", encoder] if encoder else []) + (["--linear-probe"] if linear_probe else [])
        task = WorkerTask("SwiMDiff: train a land-cover classifier", "finetune-classify", args,
                          resolve_worker_python(), {"data": data, "encoder": encoder or "random init",
                                                    "epochs": epochs, "linear_probe": linear_probe})
        task.succeeded.connect(lambda result: self._done(f"Land-cover classifier in {result.get('model_dir', out)} "
                                                         f"({classifier_score(result)})"))
        return self._start(task)

    def cancel(self) -> None:
        """Cancel the running task; its worker process is ended and leaves no half-written file."""
        if self.task is not None:
            self.task.cancel()

    def shutdown(self) -> None:
        """Cancel the running task and drop its reports (the plugin is unloading: nothing may appear later)."""
        task, self.task = self.task, None
        if task is not None:
            for signal in (task.succeeded, task.failed, task.warning, task.taskCompleted, task.taskTerminated):
                signal.disconnect()
            task.cancel()

    def _start(self, task: WorkerTask) -> WorkerTask:
        if self.task is not None:
            raise ValueError("a SwiMDiff run is already going on; wait for it or cancel it")
        self.task = task
        task.failed.connect(self._failed)
        task.warning.connect(self._warn)
        task.taskCompleted.connect(lambda: self._release(task))
        task.taskTerminated.connect(lambda: self._release(task))
        self.started.emit(task)  # before the task may run: the panel connects to its first messages
        QgsApplication.taskManager().addTask(task)
        log(f"started: {task.python} -m core.cli {task.command} {' '.join(task.args)}")
        return task

    def _release(self, task: WorkerTask) -> None:
        self.task = None
        if task.error is not None:
            cancelled = task.error.cancelled
            self.ended.emit(CANCELLED if cancelled else FAILED,
                            "cancelled: nothing was written" if cancelled else f"failed: {task.error.message}")
        elif task.stopped:
            outputs = task.result.outputs if task.result is not None else {}
            self.ended.emit(STOPPED, f"stopped at step {stopped_at(outputs, task.parameters)}")
        else:
            self.ended.emit(DONE, "done")

    def _renamed(self, note: str) -> None:
        if note:
            log(note, Qgis.Info)

    def _add_layers(self, outputs: dict[str, Any], parameters: dict[str, Any], name: str, renamed: str) -> None:
        try:
            self.last_layers = add_detection_layers(outputs, parameters, name, self.project)
        except ValueError as error:
            self._report(str(error), Qgis.Critical)
            return
        zoom_if_outside(self.iface.mapCanvas(), self.last_layers.mask)
        self._done(f"Changes detected: {100 * float(outputs.get('changed_fraction', 0)):.2f} % of the pixels "
                   f"changed (threshold {float(outputs.get('threshold', 0)):.3g})"
                   + (f"; {renamed}" if renamed else ""))

    def _add_threshold_mask(self, outputs: dict[str, Any], parameters: dict[str, Any], layer_id: str,
                            renamed: str) -> None:
        try:
            self.last_layers = add_threshold_mask(outputs, parameters, layer_id, self.project)
        except ValueError as error:
            return self._report(str(error), Qgis.Critical)
        self._done(f"Change mask saved at threshold {float(outputs['threshold']):.2f}: "
                   f"{100 * float(outputs.get('changed_fraction', 0)):.2f} % of the pixels changed, in "
                   f"{outputs['change']}" + (f"; {renamed}" if renamed else ""))

    def _add_classification(self, outputs: dict[str, Any], parameters: dict[str, Any], name: str,
                            renamed: str) -> None:
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
        folder = str(outputs.get("model_dir", out))
        self._done(f"Change model in {folder} (validation F1 {outputs.get('val_f1', float('nan')):.3f})")
        self.model_ready.emit("finetune-change", folder)

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


def stopped_at(outputs: dict[str, Any], parameters: dict[str, Any]) -> str:
    """``N of M`` for a pre-training that stopped early (M: the worker's total, else the steps asked)."""
    total = outputs.get("total_steps", parameters.get("steps", "?"))
    return f"{int(outputs.get('steps_done', 0))} of {total}"
