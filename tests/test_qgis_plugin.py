"""The plugin shell inside QGIS (pytest-qgis): loading, GUI, environment check, unloading without a trace."""

from __future__ import annotations

import ast
import gc
import importlib.util
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from qgis.core import Qgis, QgsApplication
from qgis.gui import QgsProcessingAlgorithmDialogBase
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QSettings
from qgis.PyQt.QtWidgets import QAction, QInputDialog, QPushButton, QToolBar

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "swimdiff_plugin_under_test"  # not the folder's name: the plugin must load under any name
HEAVY_MODULES = {"torch", "torchvision", "rasterio", "timm", "diffusers", "safetensors"}


def load_plugin_package() -> ModuleType:
    """Import the repository root as a package, the way QGIS imports a plugin folder."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(
        PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def process_deferred_deletes() -> None:
    """Deliver pending ``deleteLater()`` calls, as the QGIS event loop would."""
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


def collect_garbage() -> None:
    """Run Python's cycle collector and let the event loop turn, as happens in QGIS before a user clicks."""
    gc.collect()
    QgsApplication.processEvents()


@pytest.fixture
def private_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """QgsSettings in this test's own folder: empty, and invisible to the other test runs on this machine."""
    folder = tmp_path_factory.mktemp("settings")
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(folder))
    yield folder
    shared = Path(os.environ["QGIS_CUSTOM_CONFIG_PATH"]) / "profiles" / "default"  # where pytest-qgis put them
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(shared))


class CppMessageBarDialog(QgsProcessingAlgorithmDialogBase):
    """A dialog whose message bar C++ creates, like QGIS's main window: no Python object keeps its wrapper.

    pytest-qgis's message bar is a Python object that the mock interface keeps; with it, a slot that lives
    only in a reference cycle through the bar survives the collector, and a crash in QGIS passes unseen.
    """


@pytest.fixture
def plugin(qgis_iface) -> Iterator:
    """A fresh plugin from ``classFactory``, unloaded after the test."""
    for name in ("addPluginToRasterMenu", "removePluginRasterMenu"):
        getattr(qgis_iface, name).reset_mock()  # pytest-qgis's iface mocks these, once per session
    qgis_iface.messageBar().clear_messages()
    qgis_iface.messageBar().clearWidgets()
    plugin = load_plugin_package().classFactory(qgis_iface)
    yield plugin
    plugin.unload()
    process_deferred_deletes()


def environment_action(plugin) -> QAction:
    (action,) = [a for a in plugin.actions if a.objectName() == "SwiMDiffEnvironmentAction"]
    return action


def swimdiff_toolbars(qgis_iface) -> list[QToolBar]:
    return qgis_iface.mainWindow().findChildren(QToolBar, "SwiMDiffToolbar")


def bar_messages(qgis_iface, level: Qgis.MessageLevel) -> list[str]:
    """``title:text`` of the messages of ``level``: pushed texts (the mock records them) and pushed widgets."""
    bar = qgis_iface.messageBar()
    return bar.get_messages(level) + [f"{item.title()}:{item.text()}" for item in bar.items() if item.level() == level]


def setup_buttons(qgis_iface) -> list[QPushButton]:
    """The "Set up environment" buttons of the message bar's items."""
    return [button for item in qgis_iface.messageBar().items()
            for button in item.findChildren(QPushButton, "SwiMDiffSetupButton")]


def wait_for_messages(qgis_iface, level: Qgis.MessageLevel, timeout: float = 30, count: int = 1) -> list[str]:
    """Process events until the message bar holds ``count`` messages of ``level`` (checks run in QgsTasks)."""
    deadline = time.monotonic() + timeout
    while len(bar_messages(qgis_iface, level)) < count and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    return bar_messages(qgis_iface, level)


def wait_for_check(plugin, timeout: float = 30) -> None:
    """Process events until the environment check has reported."""
    deadline = time.monotonic() + timeout
    while plugin._check_task is not None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert plugin._check_task is None, "the environment check did not end in time"


def test_class_factory_loads_the_plugin_under_any_package_name(plugin, qgis_iface) -> None:
    assert type(plugin).__name__ == "SwimDiffPlugin"
    assert type(plugin).__module__ == f"{PACKAGE}.swimdiff_qgis.plugin"
    assert plugin.iface is qgis_iface
    assert plugin.plugin_dir == ROOT
    assert plugin.toolbar is None and plugin.actions == []  # no GUI before initGui


def test_init_gui_creates_the_toolbar_and_the_raster_menu_entry(plugin, qgis_iface) -> None:
    plugin.initGui()

    assert swimdiff_toolbars(qgis_iface) == [plugin.toolbar]
    assert plugin.toolbar.windowTitle() == "SwiMDiff"
    panel, environment, setup = plugin.actions
    assert plugin.toolbar.actions() == [panel, environment, setup]
    assert [panel.text(), environment.text(), setup.text()] == [
        "SwiMDiff panel", "SwiMDiff environment…", "Set up SwiMDiff environment…"]
    assert not panel.icon().isNull() and not environment.icon().isNull() and not setup.icon().isNull()
    assert [c.args for c in qgis_iface.addPluginToRasterMenu.call_args_list] == [
        ("&SwiMDiff", panel), ("&SwiMDiff", environment), ("&SwiMDiff", setup)]
    assert plugin.dock is None  # created when first shown
    assert qgis_iface.messageBar().items() == []  # the plugin folder has its .venv: nothing to offer


def test_unload_leaves_nothing_behind(plugin, qgis_iface) -> None:
    plugin.initGui()
    toolbar = plugin.toolbar
    panel, environment, setup = plugin.actions
    panel.trigger()  # shows the dock
    dock = plugin.dock
    assert dock is not None and not dock.isHidden() and panel.isChecked()
    package_logger = sys.modules[f"{PACKAGE}.swimdiff_qgis.plugin"].package_logger
    assert len(package_logger.handlers) == 1

    plugin.unload()
    assert [c.args for c in qgis_iface.removePluginRasterMenu.call_args_list] == [
        ("&SwiMDiff", panel), ("&SwiMDiff", environment), ("&SwiMDiff", setup)]
    assert plugin.toolbar is None and plugin.actions == [] and plugin.dock is None and plugin.runner is None
    assert package_logger.handlers == []
    process_deferred_deletes()
    assert sip.isdeleted(toolbar)
    assert sip.isdeleted(panel) and sip.isdeleted(environment) and sip.isdeleted(setup) and sip.isdeleted(dock)
    assert swimdiff_toolbars(qgis_iface) == []
    for name in ("SwiMDiffEnvironmentAction", "SwiMDiffPanelAction", "SwiMDiffSetupAction"):
        assert qgis_iface.mainWindow().findChildren(QAction, name) == []

    plugin.initGui()  # a reloaded plugin starts from a clean window
    assert swimdiff_toolbars(qgis_iface) == [plugin.toolbar]


def test_the_processing_provider_is_registered_once_and_removed_on_unload(plugin) -> None:
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("swimdiff") is None

    plugin.initProcessing()  # what qgis_process calls; QGIS calls it, then initGui calls it again
    plugin.initGui()

    assert registry.providerById("swimdiff") is plugin.provider
    assert [p.id() for p in registry.providers()].count("swimdiff") == 1
    assert sorted(a.id() for a in plugin.provider.algorithms()) == [
        "swimdiff:adapt", "swimdiff:buildstack", "swimdiff:classify", "swimdiff:detectchange",
        "swimdiff:evaluatechange", "swimdiff:finetunechange", "swimdiff:finetuneclassify", "swimdiff:pretrain",
        "swimdiff:thresholdchange"]
    plugin.unload()
    assert plugin.provider is None and registry.providerById("swimdiff") is None
    plugin.initProcessing()  # reload
    assert registry.providerById("swimdiff") is plugin.provider


def test_environment_action_reports_a_working_worker(plugin, qgis_iface, tmp_path: Path) -> None:
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "swimdiff 0.1.0"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    plugin.plugin_dir = tmp_path
    plugin.initGui()

    environment_action(plugin).trigger()

    assert wait_for_messages(qgis_iface, Qgis.Success) == [
        f"SwiMDiff:Worker Python {python} works: swimdiff 0.1.0"
    ]
    assert qgis_iface.messageBar().get_messages(Qgis.Warning) == []


def test_without_a_worker_the_plugin_offers_the_setup_at_start_and_after_a_check(
    plugin, qgis_iface, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_settings: Path
) -> None:
    monkeypatch.delenv("SWIMDIFF_PYTHON", raising=False)
    plugin.plugin_dir = tmp_path
    plugin.initGui()
    assert bar_messages(qgis_iface, Qgis.Warning) == [
        "SwiMDiff:its worker environment (PyTorch, in the plugin folder) needs a one-time set-up."]
    assert [button.text() for button in setup_buttons(qgis_iface)] == ["Set up environment"]
    assert [item.toolTip() for item in qgis_iface.messageBar().items()] == [f"{tmp_path}/.venv is missing"]

    environment_action(plugin).trigger()
    wait_for_check(plugin)
    process_deferred_deletes()

    assert bar_messages(qgis_iface, Qgis.Warning) == [  # the new offer replaced the one from the start
        f"SwiMDiff:No worker Python environment: {tmp_path}/.venv/bin/python is missing; click Set up SwiMDiff "
        f"environment… on the SwiMDiff toolbar or in Raster › SwiMDiff (in a terminal: `make setup` in {tmp_path})"
    ]
    assert len(setup_buttons(qgis_iface)) == 1

    plugin.unload()  # an offer left behind would call an unloaded plugin
    process_deferred_deletes()
    assert setup_buttons(qgis_iface) == [] and bar_messages(qgis_iface, Qgis.Warning) == []


@pytest.mark.skipif(sys.platform == "win32", reason="the fake interpreter is a shell script")
def test_a_check_that_finds_a_working_worker_withdraws_the_offer(
    plugin, qgis_iface, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_settings: Path
) -> None:
    monkeypatch.delenv("SWIMDIFF_PYTHON", raising=False)
    plugin.plugin_dir = tmp_path
    plugin.initGui()
    assert len(setup_buttons(qgis_iface)) == 1
    python = tmp_path / ".venv" / "bin" / "python"  # meanwhile created in a terminal (`make setup`)
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "swimdiff 0.1.0"\n')
    python.chmod(0o755)

    environment_action(plugin).trigger()
    wait_for_check(plugin)
    process_deferred_deletes()

    assert setup_buttons(qgis_iface) == [] and bar_messages(qgis_iface, Qgis.Warning) == []
    assert bar_messages(qgis_iface, Qgis.Success) == [f"SwiMDiff:Worker Python {python} works: swimdiff 0.1.0"]


def test_the_setup_button_survives_garbage_collection_before_the_click(
    plugin, qgis_iface, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_settings: Path
) -> None:
    """In QGIS the slot of a closure died in the collector, and the click killed QGIS with signal 11."""
    dialog = CppMessageBarDialog()
    monkeypatch.setattr(qgis_iface, "messageBar", dialog.messageBar)  # a new wrapper at each call, as in QGIS
    monkeypatch.delenv("SWIMDIFF_PYTHON", raising=False)
    module = sys.modules[f"{PACKAGE}.swimdiff_qgis.plugin"]
    monkeypatch.setattr(module, "find_base_python", lambda: (Path("/usr/bin/python3"), ""))
    asked: list[tuple] = []
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *args: asked.append(args) or ("", False)))
    plugin.plugin_dir = tmp_path
    plugin.initGui()  # offers the setup: the folder has no .venv

    collect_garbage()
    (button,) = dialog.findChildren(QPushButton, "SwiMDiffSetupButton")
    button.click()

    assert [args[1] for args in asked] == ["Set up the SwiMDiff environment"]  # the click reached the plugin
    process_deferred_deletes()
    assert len(dialog.findChildren(QPushButton, "SwiMDiffSetupButton")) == 1  # cancelled: still offered

    collect_garbage()
    (button,) = dialog.findChildren(QPushButton, "SwiMDiffSetupButton")
    button.click()  # a second click, after another collection
    assert len(asked) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="the fake interpreters are shell scripts")
def test_the_environment_check_uses_the_interpreter_set_in_the_settings(
    plugin, qgis_iface, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_settings: Path
) -> None:
    settings = sys.modules[f"{PACKAGE}.swimdiff_qgis.settings"]
    monkeypatch.delenv("SWIMDIFF_PYTHON", raising=False)
    python = tmp_path / "configured" / "python"  # the plugin folder has no .venv: only the setting can answer
    python.parent.mkdir()
    python.write_text('#!/bin/sh\necho "swimdiff 0.1.0"\n')
    python.chmod(0o755)
    settings.set_configured_python(python)
    assert (private_settings / "QGIS" / "QGIS3.ini").read_text().count(str(python)) == 1  # the real settings
    plugin.plugin_dir = tmp_path
    plugin.initGui()
    assert setup_buttons(qgis_iface) == []  # nothing to set up: runs use the configured interpreter

    environment_action(plugin).trigger()
    assert wait_for_messages(qgis_iface, Qgis.Success) == [
        f"SwiMDiff:Worker Python {python} (from the SwiMDiff/workerPython setting) works: swimdiff 0.1.0"]

    python.write_text('#!/bin/sh\necho "No module named torch" >&2\nexit 1\n')
    environment_action(plugin).trigger()
    assert wait_for_messages(qgis_iface, Qgis.Warning) == [
        f"SwiMDiff:Worker Python {python} (from the SwiMDiff/workerPython setting) does not work: {python} -m "
        f"core.cli --version failed with exit code 1; correct the SwiMDiff/workerPython setting, or clear it to use "
        f"{tmp_path}/.venv"]
    assert setup_buttons(qgis_iface) == []  # a new .venv would not help while the setting points elsewhere


def test_environment_action_shows_the_worker_error_in_the_message_bar(
    plugin, qgis_iface, tmp_path: Path
) -> None:
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "No module named core.cli" >&2\nexit 1\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    plugin.plugin_dir = tmp_path
    plugin.initGui()

    environment_action(plugin).trigger()

    assert wait_for_messages(qgis_iface, Qgis.Warning) == [
        f"SwiMDiff:Worker Python {python} does not work: {python} -m core.cli --version failed with "
        f"exit code 1; click Set up SwiMDiff environment… on the SwiMDiff toolbar or in Raster › SwiMDiff (in a "
        f"terminal: `make setup` in {tmp_path})"
    ]
    (item,) = qgis_iface.messageBar().items()
    assert item.toolTip() == "No module named core.cli"  # the worker's own words
    assert len(setup_buttons(qgis_iface)) == 1


# --- "Set up environment": a QgsTask that creates the venv with a fake interpreter (no pip, no network) ------


@pytest.fixture
def setup_case(plugin, qgis_iface, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_settings: Path):
    """A plugin folder without .venv, a fake base interpreter, a recorded input dialog and a recorded log."""
    from test_qgis_setup_env import FAKE_PYTHON

    base = tmp_path / "base" / "python3"
    base.parent.mkdir()
    base.write_text(FAKE_PYTHON)
    base.chmod(0o755)
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.delenv("SWIMDIFF_PYTHON", raising=False)
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "requirements.txt").write_text("torch==2.14.1\n")
    module = sys.modules[f"{PACKAGE}.swimdiff_qgis.plugin"]
    remembered: list[str] = []
    for name, value in (("setup_python", lambda: ""),  # the private settings are empty anyway
                        ("set_setup_python", lambda python: remembered.append(str(python))),
                        ("find_base_python", lambda: (base, ""))):
        monkeypatch.setattr(module, name, value)
    asked: list[tuple] = []

    def get_text(*args):
        asked.append(args)
        return str(base), True

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(get_text))
    logged: list[str] = []

    def record(message: str, tag: str, level) -> None:
        if tag == "SwiMDiff":
            logged.append(message)

    QgsApplication.messageLog().messageReceived.connect(record)
    plugin.plugin_dir = folder
    plugin.initGui()
    yield base, folder, asked, logged, remembered
    QgsApplication.messageLog().messageReceived.disconnect(record)


def wait_for_setup(plugin, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while plugin._setup_task is not None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert plugin._setup_task is None, "the setup did not end in time"


def test_the_setup_button_creates_the_environment_and_names_the_new_worker(plugin, qgis_iface, setup_case) -> None:
    base, folder, asked, logged, remembered = setup_case
    venv_python = folder / ".venv" / "bin" / "python"
    collect_garbage()  # in QGIS the click comes long after initGui
    (button,) = setup_buttons(qgis_iface)  # offered at start: the folder has no .venv

    button.click()
    task = plugin._setup_task
    assert task is not None and task.base_python == base
    wait_for_setup(plugin)

    assert asked[0][4] == str(base)  # the found interpreter is proposed, the user may change it
    assert f"create\n{folder / '.venv'}\nwith this Python" in asked[0][2]
    assert setup_buttons(qgis_iface) == []  # the offer went away when it was taken
    assert bar_messages(qgis_iface, Qgis.Success) == [
        f"SwiMDiff:SwiMDiff worker environment ready: {venv_python} runs swimdiff 0.1.0 (created with {base})"]
    assert venv_python.is_file() and remembered == [str(base)]
    pip_lines = [line for line in logged if "torch" in line]  # pip's output, line by line, in the log panel
    assert pip_lines == ["Collecting torch==2.14.1", "Successfully installed torch-2.14.1"] * 2
    assert logged.index(f"created {folder / '.venv'}") < logged.index("Collecting torch==2.14.1")
    assert task.description() == "SwiMDiff environment: ready"  # not the last command: QGIS shows it when done
    assert task.status() == task.Complete and task.progress() == 100


def test_a_setup_from_the_toolbar_withdraws_the_stale_offer_when_it_succeeds(
    plugin, qgis_iface, setup_case
) -> None:
    base, folder, _, _, _ = setup_case
    assert len(setup_buttons(qgis_iface)) == 1  # "...is missing", offered at start

    plugin.actions[2].trigger()  # the toolbar / menu action, not the offer's button
    assert len(setup_buttons(qgis_iface)) == 1  # still offered while pip runs: the set-up may fail
    wait_for_setup(plugin)
    process_deferred_deletes()

    assert setup_buttons(qgis_iface) == [] and bar_messages(qgis_iface, Qgis.Warning) == []
    assert bar_messages(qgis_iface, Qgis.Success) == [
        f"SwiMDiff:SwiMDiff worker environment ready: {folder}/.venv/bin/python runs swimdiff 0.1.0 (created with "
        f"{base})"]


def test_a_failed_setup_shows_pips_last_line(plugin, qgis_iface, setup_case, monkeypatch) -> None:
    base, folder, _, logged, _ = setup_case
    monkeypatch.setenv("FAKE_PIP_FAIL", "1")

    plugin.actions[2].trigger()  # the toolbar / menu action
    wait_for_setup(plugin)

    error = "ERROR: Could not find a version that satisfies the requirement torch==2.14.1"
    assert bar_messages(qgis_iface, Qgis.Critical) == [
        f"SwiMDiff:Setting up the worker environment failed: `{folder}/.venv/bin/python -m pip install "
        f"--progress-bar off -r {folder}/requirements.txt` failed with exit code 1: {error}"]
    assert bar_messages(qgis_iface, Qgis.Success) == []
    assert error in logged


def test_cancelling_the_setup_kills_pip(plugin, qgis_iface, setup_case, monkeypatch, tmp_path: Path) -> None:
    import os

    monkeypatch.setenv("FAKE_PIP_HANG", "1")  # pip prints one line, then loops and ignores SIGTERM
    monkeypatch.setenv("FAKE_PIP_PID", str(tmp_path / "pip.pid"))
    base, folder, _, logged, _ = setup_case
    task = plugin.setup_environment(base)
    assert plugin.setup_environment(base) is None  # one setup at a time
    deadline = time.monotonic() + 30
    while "Collecting torch==2.14.1" not in logged and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)

    task.cancel()
    wait_for_setup(plugin)

    assert bar_messages(qgis_iface, Qgis.Info)[-1] == (
        f"SwiMDiff:Setting up the worker environment was cancelled; {folder}/.venv may be incomplete: run Set up "
        "SwiMDiff environment again")
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "pip.pid").read_text()), 0)


def test_plugin_code_never_imports_the_heavy_worker_libraries() -> None:
    for path in sorted((ROOT / "swimdiff_qgis").rglob("*.py")) + [ROOT / "__init__.py"]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            heavy = {name.split(".")[0] for name in names} & HEAVY_MODULES
            assert not heavy, f"{path.relative_to(ROOT)}:{node.lineno} imports {sorted(heavy)}"


# --- runs from the dock: QgsTasks that drive the real worker (CVA on small generated rasters) ---------------


def wait_until_idle(plugin, timeout: float = 180) -> None:
    """Process events until the dock's run has finished and reported."""
    deadline = time.monotonic() + timeout
    while plugin.runner.busy() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert not plugin.runner.busy(), "the run did not finish in time"
    QgsApplication.processEvents()


def make_pair(folder: Path, t2_bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")) -> tuple[Path, Path]:
    """Generated 4-band t1/t2 GeoTIFFs (64 x 64, EPSG:32631) where rows 10:30, columns 20:44 changed."""
    import numpy as np

    from conftest import smooth_field, write_geotiff

    t1 = smooth_field(np.random.default_rng(0), 4, 64)
    t2 = t1.copy()
    t2[:, 10:30, 20:44] += 900
    return (write_geotiff(folder / "t1.tif", t1, descriptions=("B02", "B03", "B04", "B08")),
            write_geotiff(folder / "t2.tif", t2, descriptions=t2_bands))


@pytest.fixture
def dock(plugin, qgis_iface, qgis_new_project):
    plugin.initGui()
    plugin.show_dock()
    return plugin.dock


def pixel_alpha(layer, row: int, column: int) -> int:
    """The alpha of one rendered pixel of a raster layer (its renderer's output at full resolution)."""
    block = layer.renderer().block(1, layer.extent(), layer.width(), layer.height())
    return block.color(row, column) >> 24 & 0xFF


def test_choosing_an_encoder_shows_its_bands_and_patch_size_or_why_it_is_unusable(
    plugin, dock, qgis_iface, tmp_path: Path
) -> None:
    from test_qgis_model_info import write_encoder

    label = dock.encoder_label
    assert label.text() == "Random initialisation: the bands both dates share."
    encoder = write_encoder(tmp_path / "encoder")

    dock.finetune_encoder.setFilePath(str(encoder))
    assert label.text() == ("resnet18 encoder; 4 bands: B02, B03, B04, B08; pre-trained on 64 px patches. "
                            "Fine-tuning uses these bands.")
    assert "b00020" not in label.styleSheet()

    dock.finetune_encoder.setFilePath(str(tmp_path))  # a folder without config.json
    assert label.text().startswith(f"'{tmp_path}' holds no config.json; choose a folder written by 'swimdiff "
                                   "pretrain'")
    assert "b00020" in label.styleSheet()  # in red
    dock.finetune_data.setFilePath(str(tmp_path))
    dock.finetune_out.setFilePath(str(tmp_path / "out"))
    dock.tabs.widget(2).findChildren(QPushButton, "")[-1].click()  # "Fine-tune": refused before any worker starts
    assert not plugin.runner.busy() and dock.status.text() == label.text()
    assert bar_messages(qgis_iface, Qgis.Warning) == [f"SwiMDiff:{label.text()}"]

    dock.finetune_encoder.setFilePath("")
    assert label.text() == "Random initialisation: the bands both dates share."


def test_a_detect_run_from_the_dock_adds_styled_layers_on_the_inputs_grid(
    plugin, dock, qgis_iface, tmp_path: Path
) -> None:
    from qgis.core import QgsProject, QgsRasterLayer

    t1_path, t2_path = make_pair(tmp_path)
    t1, t2 = QgsRasterLayer(str(t1_path), "t1"), QgsRasterLayer(str(t2_path), "t2")
    QgsProject.instance().addMapLayers([t1, t2])
    dock.t1_combo.setLayer(t1)
    dock.t2_combo.setLayer(t2)
    dock.method_combo.setCurrentText("cva")
    dock.output_widget.setFilePath(str(tmp_path / "change.tif"))

    dock.detect_button.click()
    assert plugin.runner.busy() and not dock.detect_button.isEnabled()  # one run at a time
    wait_until_idle(plugin)
    assert dock.detect_button.isEnabled() and dock.progress.value() == 100 and dock.status.text() == "done"

    assert qgis_iface.messageBar().get_messages(Qgis.Warning) == []
    (success,) = qgis_iface.messageBar().get_messages(Qgis.Success)
    assert success.startswith("SwiMDiff:Changes detected: ")
    layers = plugin.runner.last_layers
    group = QgsProject.instance().layerTreeRoot().children()[0]
    assert group is layers.group and group.name().startswith("SwiMDiff change ")
    assert [node.layer() for node in group.findLayers()] == [layers.mask, layers.probability]
    for layer in (layers.mask, layers.probability):
        assert layer.crs() == t1.crs() and layer.extent() == t1.extent()
        assert (layer.width(), layer.height()) == (64, 64)
        assert "method: cva" in layer.metadata().abstract() and f"t1: {t1_path}" in layer.metadata().abstract()
    assert layers.mask.source() == str(tmp_path / "change.tif")
    assert layers.probability.source() == str(tmp_path / "change_probability.tif")
    # mask: paletted, only "change" coloured; no change is transparent
    assert layers.mask.renderer().type() == "paletted"
    assert [(c.value, c.label) for c in layers.mask.renderer().classes()] == [(1, "change")]
    assert pixel_alpha(layers.mask, 20, 30) == 255 and pixel_alpha(layers.mask, 50, 5) == 0
    # probability (CVA magnitude): pseudo-colour from the threshold up, transparent below it
    renderer = layers.probability.renderer()
    threshold = renderer.classificationMin()
    assert renderer.type() == "singlebandpseudocolor" and threshold == pytest.approx(
        float(layers.mask.metadata().abstract().split("threshold: ")[1].split()[0]))
    ramp = renderer.shader().rasterShaderFunction()
    assert ramp.shade(threshold * 0.99)[0] is False and ramp.shade(threshold * 1.01)[0] is True
    assert pixel_alpha(layers.probability, 20, 30) == 255 and pixel_alpha(layers.probability, 50, 5) == 0


def test_a_worker_error_reaches_the_message_bar_in_plain_words(plugin, dock, qgis_iface, tmp_path: Path) -> None:
    from qgis.core import QgsProject, QgsRasterLayer

    t1_path, t2_path = make_pair(tmp_path, t2_bands=("B05", "B06", "B07", "B11"))
    t1, t2 = QgsRasterLayer(str(t1_path), "t1"), QgsRasterLayer(str(t2_path), "t2")
    QgsProject.instance().addMapLayers([t1, t2])

    plugin.runner.detect(t1, t2, str(tmp_path / "change.tif"), method="cva")
    wait_until_idle(plugin)

    assert qgis_iface.messageBar().get_messages(Qgis.Warning) == [
        f"SwiMDiff:the dates share no band name ('{t1_path}' has ['B02', 'B03', 'B04', 'B08']); give rasters "
        "with the same bands, or name unnamed bands with --assume-band-names"]
    assert not (tmp_path / "change.tif").exists()
    assert QgsProject.instance().layerTreeRoot().findGroups() == []


def test_cancelling_a_run_ends_the_worker_and_says_so(
    plugin, dock, qgis_iface, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake worker that reports progress, then waits; SIGTERM makes it report "Cancelled" and exit."""
    from qgis.core import QgsProject, QgsRasterLayer

    pid_file = tmp_path / "pid"
    python = tmp_path / "python"
    python.write_text("\n".join([
        "#!/bin/sh", f"echo $$ > {pid_file}",
        """on_term() { echo '{"event": "error", "kind": "Cancelled", "message": "stopped"}'; exit 2; }""",
        "trap on_term TERM",
        """echo '{"event": "progress", "fraction": 0.1, "message": "tile 1 of 10"}'""",
        "while :; do sleep 0.05; done", ""]))
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SWIMDIFF_PYTHON", str(python))
    t1_path, t2_path = make_pair(tmp_path)
    t1, t2 = QgsRasterLayer(str(t1_path), "t1"), QgsRasterLayer(str(t2_path), "t2")
    QgsProject.instance().addMapLayers([t1, t2])

    task = plugin.runner.detect(t1, t2, str(tmp_path / "change.tif"), method="cva")
    deadline = time.monotonic() + 30
    while dock.status.text() != "tile 1 of 10" and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert task.description() == "SwiMDiff: detect changes: tile 1 of 10"
    assert dock.cancel_button.isEnabled()
    dock.cancel_button.click()
    wait_until_idle(plugin, timeout=30)

    assert qgis_iface.messageBar().get_messages(Qgis.Info) == [
        "SwiMDiff:swimdiff detect was cancelled; nothing was written"]
    assert dock.status.text() == "cancelled: nothing was written" and not dock.cancel_button.isEnabled()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(int(pid_file.read_text()), 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pid", "python", "t1.tif", "t2.tif"]
