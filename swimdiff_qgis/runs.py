"""Start detection, adapting, classification, pre-training and fine-tuning as QgsTasks.

:class:`Runner` is the dock's engine, kept free of widgets so tests drive it directly: it copies layer
sources (and a labels layer's polygons) on the main thread, starts one :class:`~.tasks.WorkerTask` at a time and
says how it ended; what a finished run adds and says (styled layers never over an earlier result's file, new
models handed on, errors and the worker's warnings in the message bar) is its base class,
:class:`~.outcomes.Outcomes`.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from pathlib import Path

from qgis.core import QgsApplication, QgsMapLayer, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgisInterface
from qgis.PyQt.QtCore import pyqtSignal

from .labelling import CHANGE_FIELD, check_labels, export_labels, writable_folder
from .outcomes import CANCELLED, DONE, FAILED, STOPPED, Outcomes, classifier_score, stopped_at
from .panel.outputs import change_group_name, date_or_name, landcover_group_name, layer_file, unused_output
from .qgis_log import log
from .settings import resolve_worker_python
from .tasks import WorkerTask

logger = logging.getLogger(__name__)

#: The detection methods: the worker's id and what the panel shows.
METHOD_NAMES = {"model": "Change model (fine-tuned)", "features": "Feature distance (no labels)",
                "cva": "Change vector analysis"}
METHODS = tuple(METHOD_NAMES)
#: The copy of the drawn polygons an adapt run reads, kept in its model folder.
LABELS_COPY = "training-labels.gpkg"

__all__ = ["CANCELLED", "DONE", "FAILED", "METHODS", "METHOD_NAMES", "STOPPED", "Runner", "adapted_model_folder",
           "classifier_score", "layer_file", "stopped_at"]


def pair_files(t1: QgsRasterLayer | None, t2: QgsRasterLayer | None) -> tuple[str, str]:
    """The files of two dates.

    Raises:
        ValueError: A date is missing or not a file raster, or both are the same file.
    """
    sources = layer_file(t1, "earlier (t1)"), layer_file(t2, "later (t2)")
    if Path(sources[0]).resolve() == Path(sources[1]).resolve():
        raise ValueError(f"the earlier (t1) and later (t2) layers are the same file '{sources[0]}'; choose the "
                         "two dates to compare")
    return sources


def adapted_model_folder(labels: QgsMapLayer | None, t1: QgsRasterLayer, t2: QgsRasterLayer,
                         project: QgsProject | None = None) -> Path:
    """A new folder for an adapted model: ``adapted_<t1 date>_<t2 date>`` beside the labels' file, else beside
    the project, else beside the earlier date, else in the home folder; ``..._2``, ``..._3`` when taken."""
    project = project or QgsProject.instance()
    candidates = []
    if isinstance(labels, QgsVectorLayer) and labels.providerType() == "ogr":
        candidates.append(Path(labels.source().split("|")[0]).parent)
    candidates += [Path(project.homePath())] if project.fileName() else []
    candidates.append(Path(t1.source().split("|")[0]).parent)
    base = next((f for f in candidates if f.is_dir() and writable_folder(f)), Path.home())
    name = "_".join(re.sub(r"[^\w.-]+", "-", date_or_name(layer)).strip("-") or "date" for layer in (t1, t2))
    folder, number = base / f"adapted_{name}", 2
    while folder.exists():
        folder, number = base / f"adapted_{name}_{number}", number + 1
    return folder


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


class Runner(Outcomes):
    """Runs one worker task at a time for the dock and reports the outcome (see :class:`~.outcomes.Outcomes`
    for the ``ended`` and ``model_ready`` signals and the attributes it adds).

    Signals:
        started: ``(WorkerTask)`` when a task is about to be handed to the task manager.

    Attributes:
        task: The running task (kept referenced until it finishes), or None.
    """

    started = pyqtSignal("PyQt_PyObject")

    def __init__(self, iface: QgisInterface, project: QgsProject | None = None) -> None:
        super().__init__(iface, project)
        self.task: WorkerTask | None = None

    def busy(self) -> bool:
        """True while a task runs."""
        return self.task is not None

    def detect(self, t1: QgsRasterLayer | None, t2: QgsRasterLayer | None, out: str = "", model: str = "",
               method: str = "model", threshold: float | None = None, probability: bool = True,
               band_names: str = "", mask_clouds: bool = False, keep_vegetation: bool = False,
               keep_water: bool = False) -> WorkerTask:
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
            mask_clouds: ``--mask-clouds``: leave the pixels that are cloudy on either date (Sentinel-2 L1C
                bands) out of the change map.
            keep_vegetation: ``--keep-vegetation`` (method ``model``): score pixels green at both dates too, instead
                of the model's stable-vegetation rule giving them probability 0.
            keep_water: ``--keep-water`` (method ``model``): score pixels that are open water at both dates too,
                instead of the model's stable-water rule giving them probability 0.

        Returns:
            The started task.

        Raises:
            ValueError: A parameter is missing or wrong; the message says which and how to fix it.
            WorkerError: No worker interpreter (``WorkerMissing``).
        """
        if method not in METHODS:
            raise ValueError(f"method '{method}' is unknown; use one of {', '.join(METHODS)}")
        sources = pair_files(t1, t2)
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
        args += ["--mask-clouds"] if mask_clouds else []
        keep_vegetation, keep_water = keep_vegetation and method == "model", keep_water and method == "model"
        args += (["--keep-vegetation"] if keep_vegetation else []) + (["--keep-water"] if keep_water else [])
        parameters = {"t1": sources[0], "t2": sources[1], "method": method,
                      "model": "" if method == "cva" else model or "default",
                      "threshold_asked": "auto" if threshold is None else threshold}
        options = (("assume_band_names", band_names), ("mask_clouds", mask_clouds),
                   ("keep_vegetation", keep_vegetation), ("keep_water", keep_water))
        parameters |= {name: value for name, value in options if value}  # recorded only when asked for
        dates = (date_or_name(t1), date_or_name(t2)) if t1 is not None and t2 is not None else ("t1", "t2")
        outputs = [str(out_path)] + ([str(prob_path)] if prob_path else [])
        task = WorkerTask("SwiMDiff: detect changes", "detect", args, resolve_worker_python(), parameters, outputs)
        task.succeeded.connect(lambda result: self._add_layers(
            result, parameters, change_group_name(*dates, parameters, time.strftime("%H:%M:%S")), renamed))
        self._renamed(renamed)
        return self._start(task)

    def adapt(self, t1: QgsRasterLayer | None, t2: QgsRasterLayer | None, labels: QgsMapLayer | None,
              out: str = "", model: str = "", label_field: str = CHANGE_FIELD, steps: int = 120,
              batch_size: int = 8, band_names: str = "", keep_vegetation: bool = False,
              keep_water: bool = False) -> WorkerTask:
        """Start ``swimdiff adapt``: fine-tune a change model on the polygons of ``labels`` drawn over two dates.

        The worker reads a copy of the polygons as they are drawn (unsaved edits and memory layers included; the
        layer and its edit session are left as they are), written to ``<out>/training-labels.gpkg`` so the model
        folder keeps what it learnt from. A run that fails or is cancelled removes that copy (and the folder when
        the run created it). When it succeeds, ``model_ready`` says ``("adapt", folder)``.

        Args:
            t1: The earlier raster layer; t2: the later one.
            labels: A polygon layer whose ``label_field`` is 1 (change) or 0 (no change).
            out: The new model folder (must hold no model); empty for :func:`adapted_model_folder`.
            model: The change model to start from; empty for the shipped one.
            label_field: The class field.
            steps: Optimisation steps; batch_size: patch pairs per step.
            band_names: ``--assume-band-names`` for unnamed bands; empty for none.
            keep_vegetation: ``--keep-vegetation``: the adapted model drops the starting model's stable-vegetation
                rule.
            keep_water: ``--keep-water``: the adapted model drops the starting model's stable-water rule.

        Raises:
            ValueError: A parameter is missing or wrong; the message says which and how to fix it.
            WorkerError: No worker interpreter (``WorkerMissing``).
        """
        if self.task is not None:
            raise ValueError("a SwiMDiff run is already going on; wait for it or cancel it")
        sources = pair_files(t1, t2)
        labels = check_labels(labels, label_field)
        python = resolve_worker_python()
        folder = Path(out) if out else adapted_model_folder(labels, t1, t2, self.project)  # type: ignore[arg-type]
        if (folder / "config.json").exists():
            raise ValueError(f"the output folder '{folder}' already holds a model; choose another folder, or leave "
                             "it empty for a new one")
        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"the output folder '{folder}' cannot be made ({error.strerror}); choose another "
                             "folder") from error
        copy = unused_output(folder / LABELS_COPY)
        try:
            polygons = export_labels(labels, label_field, copy)
        except ValueError:
            remove_labels_copy(copy, folder if created else None)
            raise
        args = ["--t1", sources[0], "--t2", sources[1], "--labels", str(copy), "--label-field", label_field,
                "--out", str(folder), "--steps", str(steps), "--batch-size", str(batch_size)]
        args += (["--model", model] if model else []) + (["--assume-band-names", band_names] if band_names else [])
        args += (["--keep-vegetation"] if keep_vegetation else []) + (["--keep-water"] if keep_water else [])
        parameters = {"t1": sources[0], "t2": sources[1], "labels": labels.name(), "polygons": polygons,
                      "model": model or "default", "steps": steps}
        parameters |= {name: True for name, kept in (("keep_vegetation", keep_vegetation), ("keep_water", keep_water))
                       if kept}
        task = WorkerTask("SwiMDiff: adapt to this area", "adapt", args, python, parameters)
        task.succeeded.connect(lambda result: self._adapted(result, str(folder)))
        task.failed.connect(lambda _error: remove_labels_copy(copy, folder if created else None))
        log(f"adapting on {polygons} polygon(s) of '{labels.name()}' as drawn, copied to {copy}")
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


def remove_labels_copy(copy: Path, folder: Path | None) -> None:
    """Remove the labels copy of a failed or cancelled adapt run, and ``folder`` (the run made it) when empty."""
    copy.unlink(missing_ok=True)
    if folder is not None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
