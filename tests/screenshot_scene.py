"""Runs inside the QGIS desktop (``qgis --code screenshot_scene.py``) for tests/test_screenshot.py.

It reads the scene from the JSON file named by ``$SWIMDIFF_SCENE`` (two RGB rasters, the outputs of a
``swimdiff detect`` run), shows them with the plugin's own styling (``layers.add_detection_layers``), opens
the SwiMDiff panel, zooms to the change map, waits for the map and the panel's device check, then writes
the ``ready`` file the test waits for before it grabs the screen. Problems go to the ``error`` file.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface, plugins

SCENE = json.loads(Path(os.environ["SWIMDIFF_SCENE"]).read_text())
TIMEOUT = 90  # seconds to wait for the device check and the map


def build() -> None:
    """Add the layers, open the panel, zoom; then wait for the rendering."""
    window = iface.mainWindow()
    window.setGeometry(0, 0, *SCENE["size"])
    browser, layer_panel = (window.findChild(QDockWidget, name) for name in ("Browser", "Layers"))
    if browser is not None:
        browser.hide()  # the Layers panel gets the whole height: every legend entry readable
    plugin = plugins[SCENE["plugin"]]
    package = type(plugin).__module__.rsplit(".", 1)[0]
    layers = sys.modules[f"{package}.layers"]

    project = QgsProject.instance()
    rasters = {}
    for key, name in (("t1", SCENE["t1_name"]), ("t2", SCENE["t2_name"])):
        rasters[key] = QgsRasterLayer(SCENE[key], name, "gdal")
        project.addMapLayer(rasters[key])
    added = layers.add_detection_layers(SCENE["outputs"], SCENE["parameters"], SCENE["group"], project)
    root = project.layerTreeRoot()
    root.findLayer(rasters["t1"].id()).setItemVisibilityChecked(False)  # the later image under the change map
    for raster in rasters.values():
        root.findLayer(raster.id()).setExpanded(False)
    if added.probability is not None:
        root.findLayer(added.probability.id()).setItemVisibilityChecked(False)  # its legend stays readable
    iface.setActiveLayer(added.mask)

    plugin.show_dock(True)
    dock = plugin.dock
    dock.t1_combo.setLayer(rasters["t1"])
    dock.t2_combo.setLayer(rasters["t2"])
    dock.progress.setValue(100)  # the panel as a detection run leaves it
    dock.status.setText("done")
    if layer_panel is not None:
        window.resizeDocks([layer_panel, dock], [340, 380], Qt.Horizontal)

    canvas = iface.mapCanvas()
    canvas.setExtent(canvas.mapSettings().layerExtentToOutputExtent(added.mask, added.mask.extent()))
    canvas.refresh()
    started = time.monotonic()

    def wait() -> None:
        checking = dock.device_label.text().endswith("checking…")
        if (checking or canvas.isDrawing()) and time.monotonic() - started < TIMEOUT:
            QTimer.singleShot(500, wait)
            return
        bar = iface.messageBar()
        for item in bar.items():  # QGIS announces long tasks when its window is inactive, as it is without a
            if item.title() == "Task complete":  # window manager: the device check (torch loads for seconds)
                bar.popWidget(item)
        bar.pushMessage("SwiMDiff", SCENE["message"], 3, 0)  # Qgis.Success, as after a run
        report = {"device": dock.device_label.text(),
                  "messages": [[int(item.level()), f"{item.title()}: {item.text()}"] for item in bar.items()]}
        QTimer.singleShot(1500, lambda: Path(SCENE["ready"]).write_text(json.dumps(report)))

    QTimer.singleShot(1000, wait)


def guarded() -> None:
    try:
        build()
    except Exception:
        Path(SCENE["error"]).write_text(traceback.format_exc())
        QgsApplication.exit(1)


QTimer.singleShot(500, guarded)
