"""Start detection, classification, pre-training and fine-tuning as QgsTasks and report their outcome in the
QGIS window.

:class:`Runner` is the dock's engine, kept free of widgets so tests drive it directly: it copies layer
sources on the main thread, starts one :class:`~.tasks.WorkerTask` at a time, turns a finished detection
or classification into styled layers and shows errors in the message bar in plain words (details in the
"SwiMDiff" log).
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
from .layers import add_detection_layers
from .qgis_log import LOG_TAG, log
from .settings import resolve_worker_python
from .tasks import WorkerTask
from .worker import WorkerError

logger = logging.getLogger(__name__)

METHODS = ("model", "features", "cva")


def layer_file(layer: QgsRasterLayer | None, role: str) -> str:
    """The file behind a raster layer, for the worker.

    Raises:
        ValueError: No layer, or one that is not a GDAL file (the message names the role and the fix).
    """
    if layer is None or not layer.isValid():
        raise ValueError(f"choose the {role} raster layer")
    if layer.providerType() != "gdal":
        raise ValueError(f"the {role} layer '{layer.name()}' is not a file raster ({layer.providerType()}); "
                         "export it to GeoTIFF first")
    return layer.source().split("|")[0]


def classifier_score(outputs: dict[str, Any]) -> str:
    """The validation score a ``finetune-classify`` run reports, e.g. ``accuracy 0.912 on validation patches``."""
    for metric in ("accuracy", "micro_map"):
        if isinstance(outputs.get(metric), float | int):
            return f"{metric.replace('_', ' ')} {outputs[metric]:.3f} on {outputs.get('evaluated_on', '?')} patches"
    return "no score"


class Runner(QObject):
    """Runs one worker task at a time for the dock and reports the outcome.

    Signals:
        started: ``(WorkerTask)`` when a task was handed to the task manager.
        ended: ``(ok)`` when it finished, failed or was cancelled.

    Attributes:
        iface: The QGIS interface (message bar).
        project: Where result layers go.
        task: The running task (kept referenced until it finishes), or None.
        last_layers: The layers of the last detection or classification, for the caller and tests.
    """

    started = pyqtSignal("PyQt_PyObject")
    ended = pyqtSignal(bool)

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
               method: str = "model", threshold: float | None = None, probability: bool = True) -> WorkerTask:
        """Start ``swimdiff detect`` on two layers; the results become a styled layer group.

        Args:
            t1: The earlier raster layer (its grid is the output grid).
            t2: The later raster layer.
            out: The change mask GeoTIFF; empty for a new file in a temporary folder.
            model: A model folder; empty for the shipped default model.
            method: ``model``, ``features`` or ``cva``.
            threshold: The threshold; None for the model's validated one (or Otsu's).
            probability: Also write (and show) the probability beside the mask.

        Returns:
            The started task.

        Raises:
            ValueError: A parameter is missing or wrong; the message says which and how to fix it.
            WorkerError: No worker interpreter (``WorkerMissing``).
        """
        if method not in METHODS:
            raise ValueError(f"method '{method}' is unknown; use one of {', '.join(METHODS)}")
        sources = layer_file(t1, "earlier (t1)"), layer_file(t2, "later (t2)")
        out_path = Path(out) if out else Path(tempfile.mkdtemp(prefix="swimdiff-")) / "change.tif"
        if out_path.suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"output '{out_path}' is not a GeoTIFF name; use a name ending with .tif")
        prob_path = out_path.with_name(f"{out_path.stem}_probability.tif") if probability else None
        args = ["--t1", sources[0], "--t2", sources[1], "--out", str(out_path), "--method", method]
        if model:
            args += ["--model", model]
        if threshold is not None:
            args += ["--threshold", repr(float(threshold))]
        if prob_path is not None:
            args += ["--probability", str(prob_path)]
        parameters = {"t1": sources[0], "t2": sources[1], "method": method, "model": model or "default",
                      "threshold_asked": "auto" if threshold is None else threshold}
        outputs = [str(out_path)] + ([str(prob_path)] if prob_path else [])
        task = WorkerTask("SwiMDiff: detect changes", "detect", args, resolve_worker_python(), parameters, outputs)
        task.succeeded.connect(lambda result: self._add_layers(result, parameters))
        return self._start(task)

    def classify(self, raster: QgsRasterLayer | None, model: str, out: str = "",
                 probabilities: bool = False) -> WorkerTask:
        """Start ``swimdiff classify`` on a layer; the land-cover map becomes a paletted layer in a group.

        Args:
            raster: The raster layer to classify (its grid is the output grid).
            model: A ``swimdiff finetune-classify`` model folder.
            out: The land-cover GeoTIFF; empty for a new file in a temporary folder.
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
        out_path = Path(out) if out else Path(tempfile.mkdtemp(prefix="swimdiff-")) / "landcover.tif"
        if out_path.suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"output '{out_path}' is not a GeoTIFF name; use a name ending with .tif")
        prob_path = out_path.with_name(f"{out_path.stem}_probabilities.tif") if probabilities else None
        args = ["--raster", source, "--model", model, "--out", str(out_path)]
        if prob_path is not None:
            args += ["--probabilities", str(prob_path)]
        parameters = {"raster": source, "model": model}
        outputs = [str(out_path)] + ([str(prob_path)] if prob_path else [])
        task = WorkerTask("SwiMDiff: classify land cover", "classify", args, resolve_worker_python(), parameters,
                          outputs)
        task.succeeded.connect(lambda result: self._add_classification(result, parameters))
        return self._start(task)

    def pretrain(self, data: list[str], out: str, steps: int = 1000, batch_size: int = 64) -> WorkerTask:
        """Start ``swimdiff pretrain`` on raster files or folders (unlabelled scenes).

        Raises:
            ValueError: No data or no output folder.
        """
        if not data:
            raise ValueError("choose at least one raster layer or folder of unlabelled scenes")
        if not out:
            raise ValueError("choose an output folder for the pre-trained model")
        args = ["--data", *data, "--out", out, "--steps", str(steps), "--batch-size", str(batch_size)]
        task = WorkerTask("SwiMDiff: pre-train", "pretrain", args, resolve_worker_python(),
                          {"data": data, "steps": steps, "batch_size": batch_size})
        task.succeeded.connect(lambda result: self._done(f"Pre-trained model in {result.get('model_dir', out)}"))
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
        task.succeeded.connect(lambda result: self._done(
            f"Change model in {result.get('model_dir', out)} (validation F1 {result.get('val_f1', float('nan')):.3f})"))
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
            for signal in (task.succeeded, task.failed, task.taskCompleted, task.taskTerminated):
                signal.disconnect()
            task.cancel()

    def _start(self, task: WorkerTask) -> WorkerTask:
        if self.task is not None:
            raise ValueError("a SwiMDiff run is already going on; wait for it or cancel it")
        self.task = task
        task.failed.connect(self._failed)
        task.taskCompleted.connect(lambda: self._release(True))
        task.taskTerminated.connect(lambda: self._release(False))
        QgsApplication.taskManager().addTask(task)
        log(f"started: {task.python} -m core.cli {task.command} {' '.join(task.args)}")
        self.started.emit(task)
        return task

    def _release(self, ok: bool) -> None:  # noqa: FBT001 (signal argument)
        self.task = None
        self.ended.emit(ok)

    def _add_layers(self, outputs: dict[str, Any], parameters: dict[str, Any]) -> None:
        try:
            self.last_layers = add_detection_layers(outputs, parameters, f"SwiMDiff change {time.strftime('%H:%M:%S')}",
                                                    self.project)
        except ValueError as error:
            self._report(str(error), Qgis.Critical)
            return
        self._done(f"Changes detected: {100 * float(outputs.get('changed_fraction', 0)):.2f} % of the pixels "
                   f"changed (threshold {float(outputs.get('threshold', 0)):.3g})")

    def _add_classification(self, outputs: dict[str, Any], parameters: dict[str, Any]) -> None:
        try:
            self.last_layers = add_classification_layers(
                outputs, parameters, f"SwiMDiff land cover {time.strftime('%H:%M:%S')}", self.project)
        except ValueError as error:
            self._report(str(error), Qgis.Critical)
            return
        fractions = outputs.get("class_fractions") or {}
        main = sorted(fractions.items(), key=lambda item: -float(item[1]))[:3]
        self._done(f"Land cover classified into {len(outputs.get('classes', []))} classes"
                   + (": " + ", ".join(f"{name} {100 * float(share):.1f} %" for name, share in main) if main else ""))

    def _done(self, message: str) -> None:
        log(message, Qgis.Success)
        self.iface.messageBar().pushMessage(LOG_TAG, message, Qgis.Success, 10)

    def _failed(self, error: WorkerError) -> None:
        if error.details:
            log(f"{error.kind}: {error.message}\n{error.details}", Qgis.Critical if not error.user_error else Qgis.Info)
        if error.cancelled:
            self._report(error.message, Qgis.Info, 5)
        elif error.user_error:
            self._report(error.message, Qgis.Warning)
        else:
            self._report(f"{error.message} (details in the SwiMDiff log)", Qgis.Critical)

    def _report(self, message: str, level: Qgis.MessageLevel, duration: int = 0) -> None:
        log(message, level)
        self.iface.messageBar().pushMessage(LOG_TAG, message, level, duration)
