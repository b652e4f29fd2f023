"""The SwiMDiff panel inside QGIS (pytest-qgis, offscreen): its width, its pages and how runs end.

Most runs use a fake worker (a shell script that prints the worker's JSON-lines events) so that the panel's
side is tested in seconds; the output naming test drives the real worker (CVA on small generated rasters).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from qgis.core import Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtGui import QColor

from conftest import smooth_field, write_geotiff
from core.change.default_model import DEFAULT_CHANGE_MODEL
from swimdiff_qgis.layers import PARAMETERS_PROPERTY
from swimdiff_qgis.panel.bands import parse_custom
from swimdiff_qgis.panel.outputs import change_group_name, unused_output
from swimdiff_qgis.panel.plot import AXIS_COLOR, LossPlot
from swimdiff_qgis.qgis_log import MessageLogHandler

SHIPPED_AUTO = f"auto ({json.loads((DEFAULT_CHANGE_MODEL / 'config.json').read_text())['threshold']:.2f})"

pytestmark = pytest.mark.qgis

#: The device line before the worker environment is set up (336 characters in the issue's QGIS).
DEVICE_BEFORE_SETUP = (
    "unknown (No worker Python environment: /home/someone/.local/share/QGIS/QGIS3/profiles/default/python/plugins/"
    "swimdiff/.venv/bin/python is missing; run `make setup` in /home/someone/.local/share/QGIS/QGIS3/profiles/"
    "default/python/plugins/swimdiff, or point the SWIMDIFF_PYTHON variable or the SwiMDiff settings to an "
    "interpreter with the requirements installed)")


@pytest.fixture
def logged() -> Iterator[list[tuple[str, int]]]:
    """``(message, level)`` of each "SwiMDiff" log entry, with the plugin's logging forwarded as initGui does."""
    entries: list[tuple[str, int]] = []

    def record(message: str, tag: str, level) -> None:
        if tag == "SwiMDiff":
            entries.append((message, int(level)))

    package = logging.getLogger("swimdiff_qgis")
    handler, level = MessageLogHandler(), package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    QgsApplication.messageLog().messageReceived.connect(record)
    yield entries
    QgsApplication.messageLog().messageReceived.disconnect(record)
    package.removeHandler(handler)
    package.setLevel(level)


@pytest.fixture
def fake_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a fake worker interpreter (``sh`` lines; ``$*`` goes to ``args.txt``) and make the panel use it."""

    def make(*lines: str) -> Path:
        python = tmp_path / "python"
        python.write_text("\n".join(["#!/bin/sh", f'echo "$*" > {tmp_path / "args.txt"}', *lines, ""]))
        python.chmod(python.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("SWIMDIFF_PYTHON", str(python))
        return tmp_path / "args.txt"

    return make


def event(**fields: object) -> str:
    """A shell line that prints one JSON event."""
    return f"echo {shlex.quote(json.dumps(fields))}"


def wait_for(condition: Callable[[], bool], timeout: float = 30, state: Callable[[], object] = lambda: "") -> None:
    """Turn the event loop until ``condition`` holds; on a timeout the assertion shows ``state()``."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert condition(), f"timed out; {state()}"


def wait_until_idle(dock, timeout: float = 240) -> None:
    """Process events until the panel's run has finished and reported."""
    wait_for(lambda: not dock.runner.busy(), timeout)
    QgsApplication.processEvents()


def bar(qgis_iface, level: Qgis.MessageLevel) -> list[str]:
    return qgis_iface.messageBar().get_messages(level)


# --- the panel fits a screen -----------------------------------------------------------------------------


def test_the_dock_stays_narrow_with_a_long_device_line_and_long_layer_names(dock, tmp_path: Path) -> None:
    long_name = "Sentinel-2 L2A, tile 31TCJ, relative orbit 51, processing baseline 05.09, 2021-06-26 (RGB)"
    paths = make_pair(tmp_path)
    QgsProject.instance().addMapLayers([QgsRasterLayer(str(p), f"{long_name} {i}") for i, p in enumerate(paths)])
    dock.show_device(DEVICE_BEFORE_SETUP)

    assert dock.device_label.text() == f"Device: {DEVICE_BEFORE_SETUP}"
    assert dock.device_label.toolTip() == dock.device_label.text()
    character = dock.fontMetrics().averageCharWidth()
    assert dock.minimumSizeHint().width() <= 36 * character  # the old panel asked for 2210 px (330 characters)
    assert dock.sizeHint().width() <= 50 * character  # and opened about 960 px wide
    width = 36 * character
    dock.resize(width, 1000)
    dock.show()
    QgsApplication.processEvents()
    assert dock.device_label.width() <= width
    line = dock.device_label.fontMetrics().height()
    assert dock.device_label.height() >= 4 * line  # wrapped onto several lines, none cut off
    dock.hide()


# --- the Detect page -------------------------------------------------------------------------------------


def test_the_method_box_shows_words_and_the_threshold_line_follows_the_method(dock) -> None:
    page = dock.detect_page
    combo = page.method_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "Change model (fine-tuned)", "Feature distance (no labels)", "Change vector analysis"]
    assert [combo.itemData(i) for i in range(combo.count())] == ["model", "features", "cva"]
    assert page.method() == "model"
    assert page.threshold_spin.specialValueText() == SHIPPED_AUTO  # the shipped model's threshold
    assert page.model_label.text().startswith("swimdiff-change: bands B01")
    assert "; green at both dates (NDVI > 0.15) is not change" in page.model_label.text()

    combo.setCurrentText("cva")  # an id chooses its words
    assert combo.currentText() == "Change vector analysis" and page.method() == "cva"
    assert page.threshold_spin.specialValueText() == "auto (Otsu's)"
    assert page.model_widget.isHidden() and page.form.labelForField(page.model_widget).isHidden()
    assert page.model_label.text() == ("Change vector analysis compares the bands of the two dates directly: no "
                                       "model is used.")

    combo.select("features")
    assert not page.model_widget.isHidden() and page.threshold_spin.specialValueText() == "auto (Otsu's)"
    combo.select("model")
    assert page.threshold_spin.specialValueText() == SHIPPED_AUTO


@pytest.mark.parametrize(("rules", "said"), [
    ({"stable_vegetation_ndvi": 0.15, "stable_water_mndwi": 0.2},
     "; green at both dates (NDVI > 0.15) is not change; open water at both dates (MNDWI > 0.2) is not change"),
    ({"stable_water_mndwi": 0.05}, "; open water at both dates (MNDWI > 0.05) is not change"),
    ({"stable_vegetation_ndvi": 0.3}, "; green at both dates (NDVI > 0.3) is not change"),
    ({}, ""),
])
def test_the_model_line_names_the_models_stable_cover_rules(dock, tmp_path: Path, rules: dict, said: str) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"kind": "swimdiff-change", "bands": ["B03", "B11"],
                                                   "threshold": 0.25, **rules}))
    page = dock.detect_page
    page.method_combo.select("model")
    page.model_widget.setFilePath(str(model))
    assert page.model_label.text() == "swimdiff-change: bands B03, B11; threshold 0.25" + said


def test_the_two_dates_default_to_different_layers_and_never_to_a_result(dock, tmp_path: Path) -> None:
    t1_path, t2_path = make_pair(tmp_path)
    result = QgsRasterLayer(str(t1_path), "a SwiMDiff result")
    result.setCustomProperty(PARAMETERS_PROPERTY, json.dumps({"method": "cva"}))
    QgsProject.instance().addMapLayers([result])
    t1, t2 = QgsRasterLayer(str(t1_path), "b t1"), QgsRasterLayer(str(t2_path), "c t2")
    QgsProject.instance().addMapLayers([t1, t2])

    page = dock.detect_page
    assert page.t1_combo.currentLayer() is result  # the first in the list: the user's choice to make
    assert page.t2_combo.currentLayer() is t1  # another layer, and not a SwiMDiff result
    page.t1_combo.setLayer(t1)
    page.t2_combo.setLayer(t1)
    page.detect_button.click()  # the same file twice is refused before any worker starts
    assert not dock.runner.busy()
    assert dock.status.text() == (f"the earlier (t1) and later (t2) layers are the same file '{t1_path}'; choose "
                                  "the two dates to compare")


def test_the_pretrain_list_hides_results_and_keeps_checked_layers(dock, tmp_path: Path) -> None:
    from qgis.PyQt.QtCore import Qt

    t1_path, t2_path = make_pair(tmp_path)
    t1 = QgsRasterLayer(str(t1_path), "t1")
    result = QgsRasterLayer(str(t2_path), "change mask")
    result.setCustomProperty(PARAMETERS_PROPERTY, json.dumps({"method": "cva"}))
    QgsProject.instance().addMapLayers([t1, result])
    scenes = dock.pretrain_page.scene_list
    assert [scenes.item(i).text() for i in range(scenes.count())] == ["t1"]  # the list follows the project
    scenes.item(0).setCheckState(Qt.Checked)

    QgsProject.instance().addMapLayer(QgsRasterLayer(str(t2_path), "t2"))

    assert sorted((scenes.item(i).text(), scenes.item(i).checkState()) for i in range(scenes.count())) == [
        ("t1", Qt.Checked), ("t2", Qt.Unchecked)]


def test_the_loss_plot_has_a_step_axis_and_a_loss_axis() -> None:
    plot = LossPlot()
    plot.resize(300, 140)
    assert plot.ticks() == ([], [])
    for step, loss in ((10, 1.0), (20, 0.7), (30, 0.5)):
        plot.add(step, {"loss": loss, "lr": 0.001})

    assert plot.ticks() == (["10", "30"], ["0.5", "0.75", "1"])
    image = plot.grab().toImage()
    area = plot.area()
    assert QColor(image.pixel(area.left(), area.center().y())) == AXIS_COLOR  # the loss axis
    assert QColor(image.pixel(area.center().x(), area.bottom())) == AXIS_COLOR  # the step axis


# --- how runs end ----------------------------------------------------------------------------------------


def test_an_input_error_is_logged_once_and_the_status_says_failed(dock, qgis_iface, logged, fake_worker,
                                                                  tmp_path: Path) -> None:
    message = f"--data '{tmp_path}/scenes' holds no raster; give GeoTIFF files or folders of them"
    fake_worker(event(event="log", level="error", message=message),
                event(event="error", kind="DatasetError", message=message), "exit 2")
    page = dock.pretrain_page
    page.scene_folder.setFilePath(str(tmp_path / "scenes"))
    page.pretrain_out.setFilePath(str(tmp_path / "model"))

    page.run_buttons[0].click()
    wait_until_idle(dock)

    assert [entry for entry in logged if message in entry[0]] == [(message, int(Qgis.Warning))]
    assert bar(qgis_iface, Qgis.Warning) == [f"SwiMDiff:{message}"]
    assert dock.status.text() == f"failed: {message}"
    assert dock.progress.value() != 100


@pytest.mark.parametrize("how", ["cancel button", "closing QGIS"])
@pytest.mark.parametrize("saves_model", [False, True], ids=["no model yet", "model at the stop"])
def test_a_stopped_pretraining_says_stopped_at_step_n_of_m_not_done(
    dock, qgis_iface, fake_worker, tmp_path: Path, how: str, saves_model: bool
) -> None:
    """The worker stops at the end of a step on SIGTERM and exits 0 with ``stopped: true``."""
    out = tmp_path / "model"
    stopped = {"model_dir": str(out), "stopped": True, "steps_done": 120, "device": "CPU"}
    saving = (f"{event(event='log', level='warning', message='stop requested: saving a checkpoint')}; "
              + (f"mkdir -p {out}; echo saved > {out}/model.safetensors; "
                 f"echo {shlex.quote(json.dumps(encoder_config(120)))} > {out}/config.json; " if saves_model else "")
              + f"{event(event='result', outputs=stopped)}; exit 0")
    fake_worker(f"on_term() {{ {saving}; }}", "trap on_term TERM",
                event(event="progress", fraction=0.12, message="step 120/1000, loss 5.1"),
                event(event="metric", step=120, values={"loss": 5.1}),
                "while :; do sleep 0.05; done")
    page = dock.pretrain_page
    page.scene_folder.setFilePath(str(tmp_path))
    page.pretrain_out.setFilePath(str(out))
    page.run_buttons[0].click()
    wait_for(lambda: dock.status.text() == "step 120/1000, loss 5.1",
             state=lambda: (dock.status.text(), dock.runner.busy(), bar(qgis_iface, Qgis.Warning),
                            QgsApplication.taskManager().countActiveTasks()))

    if how == "cancel button":
        dock.cancel_button.click()
        assert dock.status.text().startswith("cancelling…") and not dock.cancel_button.isEnabled()
    else:  # QGIS cancels every task when it closes
        QgsApplication.taskManager().cancelAll()
    wait_until_idle(dock)

    assert dock.status.text() == "stopped at step 120 of 1000"
    assert dock.progress.value() < 100 and dock.plot.points == [(120, 5.1)]
    assert bar(qgis_iface, Qgis.Success) == [] and bar(qgis_iface, Qgis.Warning) == []
    saved = f"the model of step 120 is in {out}" if saves_model else f"no model yet in {out}"
    assert bar(qgis_iface, Qgis.Info) == [
        f"SwiMDiff:Pre-training stopped at step 120 of 1000; {saved}: continue with Resume on the Pre-train page"]
    assert dock.finetune_page.finetune_encoder.filePath() == (str(out) if saves_model else "")


def encoder_config(steps: int) -> dict:
    return {"format_version": 1, "kind": "swimdiff-pretrain", "architecture": {"arch": "resnet18", "in_chans": 4},
            "bands": ["B02", "B03", "B04", "B08"], "patch_size": 64, "provenance": {"steps_done": steps}}


def test_a_cancelled_detection_says_cancelled_at_once_and_at_the_end(dock, qgis_iface, fake_worker,
                                                                      tmp_path: Path) -> None:
    fake_worker("on_term() { sleep 0.5; " + event(event="log", level="warning", message="stop requested")
                + "; " + event(event="error", kind="Cancelled", message="stopped") + "; exit 130; }",
                "trap on_term TERM", event(event="progress", fraction=0.1, message="tile 1 of 10"),
                "while :; do sleep 0.05; done")
    t1, t2 = (QgsRasterLayer(str(p), p.stem) for p in make_pair(tmp_path))
    QgsProject.instance().addMapLayers([t1, t2])
    page = dock.detect_page
    page.method_combo.select("cva")
    page.t1_combo.setLayer(t1)
    page.t2_combo.setLayer(t2)
    page.detect_button.click()
    wait_for(lambda: dock.status.text() == "tile 1 of 10")

    dock.cancel_button.click()
    assert dock.status.text() == "cancelling… (the worker stops at the end of its current step)"
    wait_until_idle(dock)

    assert dock.status.text() == "cancelled: nothing was written"
    assert bar(qgis_iface, Qgis.Info) == ["SwiMDiff:swimdiff detect was cancelled; nothing was written"]
    assert bar(qgis_iface, Qgis.Warning) == []  # "stop requested" is no news to the user who asked


def test_worker_warnings_reach_the_message_bar(dock, qgis_iface, logged, fake_worker, tmp_path: Path) -> None:
    warning = (f"'{tmp_path}/a.tif' does not name its bands: taking them in order as B02, B03, B04, B08. If that is "
               "not their order, name them with --assume-band-names")
    fake_worker(event(event="log", level="warning", message=warning),
                event(event="result", outputs={"model_dir": str(tmp_path / "model"), "stopped": False}))
    page = dock.pretrain_page
    page.scene_folder.setFilePath(str(tmp_path))
    page.pretrain_out.setFilePath(str(tmp_path / "model"))

    page.run_buttons[0].click()
    wait_until_idle(dock)

    assert bar(qgis_iface, Qgis.Warning) == [f"SwiMDiff:{warning}"]
    assert (warning, int(Qgis.Warning)) in logged
    assert dock.status.text() == "done" and dock.progress.value() == 100


# --- Resume, Overwrite and band names on the Pre-train page ----------------------------------------------


RESULT = event(event="result", outputs={"model_dir": "model", "stopped": False})


def stopped_run(folder: Path, model: bool = False) -> Path:
    """A folder a stopped pre-training left: its training state (and, if asked, a model)."""
    folder.mkdir()
    (folder / "train_state.safetensors").write_bytes(b"state")
    if model:
        (folder / "config.json").write_text(json.dumps(encoder_config(100)))
    return folder


@pytest.mark.parametrize(("checked", "answer", "flags", "offered"), [
    ("", "resume", ["--resume"], ["resume", "overwrite"]),
    ("", "overwrite", ["--overwrite"], ["resume", "overwrite"]),
    ("", None, None, ["resume", "overwrite"]),
    ("overwrite", "overwrite", ["--overwrite"], ["overwrite"]),
    ("overwrite", None, None, ["overwrite"]),
    ("resume", "never asked", ["--resume"], None),
], ids=["ask-resume", "ask-overwrite", "ask-cancel", "overwrite-confirmed", "overwrite-refused", "resume"])
def test_a_folder_that_holds_a_model_is_resumed_or_replaced_only_when_asked(
    dock, fake_worker, tmp_path: Path, checked: str, answer, flags, offered
) -> None:
    args_file = fake_worker(RESULT)
    out = stopped_run(tmp_path / "model", model=True)
    page = dock.pretrain_page
    asked: list[tuple[str, list[str]]] = []
    page.ask = lambda parent, title, text, choices: asked.append((text, [c[1] for c in choices])) or answer
    page.scene_folder.setFilePath(str(tmp_path))
    page.pretrain_out.setFilePath(str(out))
    if checked:
        getattr(page, f"{checked}_check").setChecked(True)

    page.run_buttons[0].click()
    wait_until_idle(dock)

    assert [choices for _, choices in asked] == ([offered] if offered else [])
    if offered:
        assert asked[0][0].startswith(f"'{out}' already holds a pre-trained model.")
    if flags is None:
        assert not args_file.exists()  # nothing started, nothing replaced
        assert (out / "train_state.safetensors").read_bytes() == b"state"
        return
    args = args_file.read_text().split()
    assert args[:12] == ["-m", "core.cli", "pretrain", "--data", str(tmp_path), "--out", str(out), "--steps", "1000",
                         "--batch-size", "64", *flags]
    assert page.resume_check.isChecked() == (flags == ["--resume"])


def test_resume_without_a_training_state_is_refused_before_the_worker(dock, qgis_iface, fake_worker,
                                                                     tmp_path: Path) -> None:
    args_file = fake_worker(RESULT)
    page = dock.pretrain_page
    page.scene_folder.setFilePath(str(tmp_path))
    page.pretrain_out.setFilePath(str(tmp_path / "new"))
    page.resume_check.setChecked(True)
    page.overwrite_check.setChecked(True)  # the two exclude each other
    assert not page.resume_check.isChecked()
    page.resume_check.setChecked(True)

    page.run_buttons[0].click()

    message = (f"Resume: '{tmp_path}/new' holds no training state to continue; choose the folder of a stopped "
               "pre-training, or uncheck Resume")
    assert not dock.runner.busy() and not args_file.exists()
    assert dock.status.text() == message and bar(qgis_iface, Qgis.Warning) == [f"SwiMDiff:{message}"]


@pytest.mark.parametrize(("choice", "typed", "passed"), [
    ("", "", []),
    ("l1c", "", ["--assume-band-names", "l1c"]),
    ("l2a", "", ["--assume-band-names", "l2a"]),
    ("custom", " B04, B03 ,B02 ", ["--assume-band-names", "B04,B03,B02"]),
], ids=["from-the-file", "l1c", "l2a", "custom"])
def test_the_band_names_choice_reaches_the_worker(dock, fake_worker, tmp_path: Path, choice, typed, passed) -> None:
    args_file = fake_worker(RESULT)
    page = dock.pretrain_page
    page.scene_folder.setFilePath(str(tmp_path))
    page.pretrain_out.setFilePath(str(tmp_path / "model"))
    page.band_names.combo.select(choice)
    page.band_names.custom.setText(typed)
    assert page.band_names.custom.isHidden() == (choice != "custom")

    page.run_buttons[0].click()
    wait_until_idle(dock)

    assert args_file.read_text().split()[11:-2] == passed


def test_the_detect_page_passes_its_band_names_and_words_become_ids(dock, fake_worker, tmp_path: Path) -> None:
    args_file = fake_worker(event(event="error", kind="BandMismatchError", message="no"), "exit 2")
    t1, t2 = (QgsRasterLayer(str(p), p.stem) for p in make_pair(tmp_path))
    QgsProject.instance().addMapLayers([t1, t2])
    page = dock.detect_page
    page.t1_combo.setLayer(t1)
    page.t2_combo.setLayer(t2)
    page.method_combo.select("cva")
    page.model_widget.setFilePath(str(tmp_path / "ignored-by-cva"))
    page.band_names.combo.select("l2a")
    page.output_widget.setFilePath(str(tmp_path / "out.tif"))

    page.detect_button.click()
    wait_until_idle(dock)

    assert args_file.read_text().split() == [
        "-m", "core.cli", "detect", "--t1", str(t1.source()), "--t2", str(t2.source()), "--out",
        str(tmp_path / "out.tif"), "--method", "cva", "--probability", str(tmp_path / "out_probability.tif"),
        "--assume-band-names", "l2a", "--events", "jsonl"]


@pytest.mark.parametrize(("typed", "message"), [
    ("", "band names: the list is empty; type the names of the raster's bands in order, separated by commas, e.g. "
         "B02,B03,B04,B08, or choose 'from the file'"),
    (" , ", "band names: the list is empty; type the names of the raster's bands in order, separated by commas, "
            "e.g. B02,B03,B04,B08, or choose 'from the file'"),
    ("B02,,B04", "band names: 'B02,,B04' holds the name ''; type the names of the raster's bands in order, "
                 "separated by commas, e.g. B02,B03,B04,B08"),
    ("B02;B03", "band names: 'B02;B03' holds the name 'B02;B03'; type the names of the raster's bands in order, "
                "separated by commas, e.g. B02,B03,B04,B08"),
    ("B02,b02,B03", "band names: 'B02,b02,B03' lists B02, b02 more than once; give each band once"),
], ids=["empty", "only-commas", "empty-name", "semicolons", "repeated"])
def test_a_bad_custom_band_list_says_how_to_write_it(typed: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_custom(typed)
    assert str(caught.value) == message


# --- new models go to the next page ----------------------------------------------------------------------


def test_new_models_are_handed_to_the_next_page(dock, qgis_iface, fake_worker, tmp_path: Path) -> None:
    from test_qgis_model_info import write_encoder

    encoder = write_encoder(tmp_path / "encoder")
    fake_worker(event(event="result", outputs={"model_dir": str(encoder), "stopped": False, "steps_done": 1000}))
    dock.pretrain_page.scene_folder.setFilePath(str(tmp_path))
    dock.pretrain_page.pretrain_out.setFilePath(str(encoder.parent / "fresh"))
    dock.pretrain_page.run_buttons[0].click()
    wait_until_idle(dock)
    assert dock.finetune_page.finetune_encoder.filePath() == str(encoder)
    assert dock.finetune_page.encoder_label.text().startswith("resnet18 encoder; 4 bands")

    change = tmp_path / "change-model"
    change.mkdir()
    (change / "config.json").write_text(json.dumps({"kind": "swimdiff-change", "bands": ["B02"], "threshold": 0.42}))
    fake_worker(event(event="result", outputs={"model_dir": str(change), "val_f1": 0.5}))
    dock.detect_page.method_combo.select("cva")
    dock.finetune_page.finetune_data.setFilePath(str(tmp_path))
    dock.finetune_page.finetune_out.setFilePath(str(change))
    dock.finetune_page.run_buttons[0].click()
    wait_until_idle(dock)

    assert dock.detect_page.model_widget.filePath() == str(change) and dock.detect_page.method() == "model"
    assert dock.detect_page.threshold_spin.specialValueText() == "auto (0.42)"
    assert bar(qgis_iface, Qgis.Success) == [f"SwiMDiff:Pre-trained model in {encoder}",
                                             f"SwiMDiff:Change model in {change} (validation F1 0.500)"]


# --- results: never over an earlier one's file, named by dates and method, in view ------------------------


def make_pair(folder: Path) -> tuple[Path, Path]:
    """Generated 4-band dates (64 x 64, EPSG:32631, dated file names) where rows 10:30, columns 20:44 changed."""
    t1 = smooth_field(np.random.default_rng(0), 4, 64)
    t2 = t1.copy()
    t2[:, 10:30, 20:44] += 900
    names = ("B02", "B03", "B04", "B08")
    return (write_geotiff(folder / "S2_20150821.tif", t1, descriptions=names),
            write_geotiff(folder / "S2_2017-10-14.tif", t2, descriptions=names))


def test_a_taken_output_name_becomes_the_next_free_one(tmp_path: Path) -> None:
    chosen = tmp_path / "change.tif"
    assert unused_output(chosen) == chosen
    chosen.write_text("earlier result")
    assert unused_output(chosen, ["_probability"]) == tmp_path / "change-2.tif"
    (tmp_path / "change-2_probability.tif").write_text("earlier result")
    assert unused_output(chosen, ["_probability"]) == tmp_path / "change-3.tif"
    assert unused_output(chosen, []) == tmp_path / "change-2.tif"  # no probability this time: change-2 is free
    assert unused_output(tmp_path / "t1.tif", [], [str(tmp_path / "t1.tif")]) == tmp_path / "t1-2.tif"  # an input
    assert change_group_name("2015-08-21", "2017-10-14", {"method": "features", "model": "/m/enc"}, "14:02:11") == (
        "SwiMDiff change 2015-08-21 → 2017-10-14, features of enc, 14:02:11")


def test_a_second_detection_into_the_same_file_keeps_the_first_and_is_named_and_shown(
    dock, qgis_iface, logged, tmp_path: Path
) -> None:
    t1_path, t2_path = make_pair(tmp_path)
    t1, t2 = QgsRasterLayer(str(t1_path), "Nantes t1"), QgsRasterLayer(str(t2_path), "Nantes t2")
    QgsProject.instance().addMapLayers([t1, t2])
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32631"))
    far_away = QgsRectangle(100000, 1000000, 101000, 1001000)
    page = dock.detect_page
    page.t1_combo.setLayer(t1)
    page.t2_combo.setLayer(t2)
    page.method_combo.select("cva")
    page.output_widget.setFilePath(str(tmp_path / "change.tif"))
    groups = []
    for _ in range(2):
        canvas.setExtent(far_away)
        page.detect_button.click()
        wait_until_idle(dock)
        assert dock.status.text() == "done", bar(qgis_iface, Qgis.Warning) + bar(qgis_iface, Qgis.Critical)
        groups.append(dock.runner.last_layers)
        assert canvas.extent().contains(t1.extent())  # the map went to the result

    first, second = groups
    assert first.mask.source() == str(tmp_path / "change.tif")
    assert second.mask.source() == str(tmp_path / "change-2.tif")
    assert second.probability.source() == str(tmp_path / "change-2_probability.tif")
    assert first.mask.isValid() and "method: cva" in first.mask.metadata().abstract()
    note = f"'change.tif' is taken (an earlier result or an input in {tmp_path}): writing 'change-2.tif' instead"
    assert (note, int(Qgis.Info)) in logged
    successes = bar(qgis_iface, Qgis.Success)
    assert successes[1].endswith(f"; {note}") and not successes[0].endswith(note)
    for layers in groups:
        name = layers.group.name()
        assert re.fullmatch(r"SwiMDiff change 2015-08-21 → 2017-10-14, CVA, \d\d:\d\d:\d\d", name), name


def test_unnamed_bands_warn_in_the_message_bar_until_the_page_names_them(dock, qgis_iface, tmp_path: Path) -> None:
    """The real worker and the shipped model (12 bands): unnamed bands are taken in order with a warning."""
    data = smooth_field(np.random.default_rng(0), 12, 64)
    changed = data.copy()
    changed[:, 10:30, 20:44] += 900
    t1_path, t2_path = (write_geotiff(tmp_path / name, array) for name, array in (("a.tif", data), ("b.tif", changed)))
    t1, t2 = QgsRasterLayer(str(t1_path), "a"), QgsRasterLayer(str(t2_path), "b")
    QgsProject.instance().addMapLayers([t1, t2])
    page = dock.detect_page
    page.t1_combo.setLayer(t1)
    page.t2_combo.setLayer(t2)

    page.detect_button.click()
    wait_until_idle(dock)
    warnings = bar(qgis_iface, Qgis.Warning)
    assert dock.status.text() == "done" and len(warnings) == 2, warnings  # one per date
    assert all("does not name its bands: taking them in order as B01, B02" in text for text in warnings)
    assert {text.split()[0].removeprefix("SwiMDiff:") for text in warnings} == {f"'{t1_path}'", f"'{t2_path}'"}

    page.band_names.combo.select("l2a")
    page.detect_button.click()
    wait_until_idle(dock)
    assert dock.status.text() == "done" and bar(qgis_iface, Qgis.Warning) == warnings  # no new warning
    assert "assume_band_names: l2a" in dock.runner.last_layers.mask.metadata().abstract()


def test_a_run_that_reports_after_the_panel_is_gone_touches_nothing(qgis_iface, qgis_new_project, fake_worker,
                                                                    tmp_path: Path, monkeypatch) -> None:
    """Unloading the plugin during a run: the worker still reports while it stops, after the panel was deleted.
    A slot that touched a deleted widget would raise, and PyQt aborts QGIS on an exception in a slot (here the
    hook records it instead)."""
    import sys

    from qgis.PyQt import sip
    from qgis.PyQt.QtCore import QCoreApplication, QEvent

    from conftest import wait_for_no_tasks
    from swimdiff_qgis.panel.dock import SwimDiffDock
    from swimdiff_qgis.runs import Runner

    raised: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, error, tb: raised.append(error))
    still = event(event="progress", fraction=0.5, message="still stopping")
    fake_worker(f"on_term() {{ for i in 1 2 3 4 5 6; do {still}; sleep 0.05; done; exit 130; }}", "trap on_term TERM",
                event(event="progress", fraction=0.1, message="step 1/10"), "while :; do sleep 0.05; done")
    runner = Runner(qgis_iface)
    dock = SwimDiffDock(qgis_iface, runner)
    dock.pretrain_page.scene_folder.setFilePath(str(tmp_path))
    dock.pretrain_page.pretrain_out.setFilePath(str(tmp_path / "model"))
    dock.pretrain_page.run_buttons[0].click()
    wait_for(lambda: dock.status.text() == "step 1/10")

    runner.shutdown()  # what the plugin's unload does
    dock.shutdown()
    dock.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert sip.isdeleted(dock)
    wait_for_no_tasks()

    assert raised == []


def test_the_first_message_of_a_quick_worker_reaches_the_panel(dock, qgis_iface, fake_worker, tmp_path: Path,
                                                               monkeypatch) -> None:
    """The panel listens to a run before the task manager may start it: a worker that reports at once while the
    main thread is still busy (here: logging slowly) does not lose its first message."""
    import swimdiff_qgis.runs as runs

    monkeypatch.setattr(runs, "log", lambda *args, **kwargs: time.sleep(1.0))
    fake_worker(event(event="progress", fraction=0.1, message="step 1/10 at once"), "while :; do sleep 0.05; done")
    dock.pretrain_page.scene_folder.setFilePath(str(tmp_path))
    dock.pretrain_page.pretrain_out.setFilePath(str(tmp_path / "model"))
    dock.pretrain_page.run_buttons[0].click()

    wait_for(lambda: dock.status.text() == "step 1/10 at once", timeout=10, state=lambda: dock.status.text())
    dock.cancel_button.click()
    wait_until_idle(dock)
