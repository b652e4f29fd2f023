"""The plugin shell inside QGIS (pytest-qgis): loading, GUI, environment check, unloading without a trace."""

from __future__ import annotations

import ast
import importlib.util
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from qgis.core import Qgis, QgsApplication
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QAction, QToolBar

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


@pytest.fixture
def plugin(qgis_iface) -> Iterator:
    """A fresh plugin from ``classFactory``, unloaded after the test."""
    for name in ("addPluginToRasterMenu", "removePluginRasterMenu"):
        getattr(qgis_iface, name).reset_mock()  # pytest-qgis's iface mocks these, once per session
    qgis_iface.messageBar().clear_messages()
    plugin = load_plugin_package().classFactory(qgis_iface)
    yield plugin
    plugin.unload()
    process_deferred_deletes()


def swimdiff_toolbars(qgis_iface) -> list[QToolBar]:
    return qgis_iface.mainWindow().findChildren(QToolBar, "SwiMDiffToolbar")


def wait_for_messages(qgis_iface, level: Qgis.MessageLevel, timeout: float = 30) -> list[str]:
    """Process events until the message bar holds a message of ``level`` (the check runs in a QgsTask)."""
    deadline = time.monotonic() + timeout
    while not qgis_iface.messageBar().get_messages(level) and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    return qgis_iface.messageBar().get_messages(level)


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
    (action,) = plugin.actions
    assert plugin.toolbar.actions() == [action]
    assert action.text() == "SwiMDiff environment…"
    assert not action.icon().isNull()
    qgis_iface.addPluginToRasterMenu.assert_called_once_with("&SwiMDiff", action)


def test_unload_leaves_nothing_behind(plugin, qgis_iface) -> None:
    plugin.initGui()
    toolbar = plugin.toolbar
    (action,) = plugin.actions
    package_logger = sys.modules[f"{PACKAGE}.swimdiff_qgis.plugin"].package_logger
    assert len(package_logger.handlers) == 1

    plugin.unload()
    qgis_iface.removePluginRasterMenu.assert_called_once_with("&SwiMDiff", action)
    assert plugin.toolbar is None and plugin.actions == []
    assert package_logger.handlers == []
    process_deferred_deletes()
    assert sip.isdeleted(toolbar)
    assert sip.isdeleted(action)
    assert swimdiff_toolbars(qgis_iface) == []
    assert qgis_iface.mainWindow().findChildren(QAction, "SwiMDiffEnvironmentAction") == []

    plugin.initGui()  # a reloaded plugin starts from a clean window
    assert swimdiff_toolbars(qgis_iface) == [plugin.toolbar]


def test_environment_action_reports_a_working_worker(plugin, qgis_iface, tmp_path: Path) -> None:
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "swimdiff 0.1.0"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    plugin.plugin_dir = tmp_path
    plugin.initGui()

    plugin.actions[0].trigger()

    assert wait_for_messages(qgis_iface, Qgis.Success) == [
        f"SwiMDiff:Worker Python {python} works: swimdiff 0.1.0"
    ]
    assert qgis_iface.messageBar().get_messages(Qgis.Warning) == []


def test_environment_action_names_the_fix_when_there_is_no_worker(plugin, qgis_iface, tmp_path: Path) -> None:
    plugin.plugin_dir = tmp_path
    plugin.initGui()

    plugin.actions[0].trigger()

    assert wait_for_messages(qgis_iface, Qgis.Warning) == [
        f"SwiMDiff:No worker Python environment: {tmp_path}/.venv/bin/python is missing; "
        f"run `make setup` in {tmp_path}"
    ]


def test_environment_action_shows_the_worker_error_in_the_message_bar(
    plugin, qgis_iface, tmp_path: Path
) -> None:
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "No module named core.cli" >&2\nexit 1\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    plugin.plugin_dir = tmp_path
    plugin.initGui()

    plugin.actions[0].trigger()

    assert wait_for_messages(qgis_iface, Qgis.Warning) == [
        f"SwiMDiff:Worker Python {python} does not work: {python} -m core.cli --version failed with "
        f"exit code 1; run `make setup` in {tmp_path}"
    ]


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
