"""Runs inside the QGIS desktop (``qgis --code screenshot_scene.py``) for tests/test_qgis_screenshot.py.

It reads the scene from the JSON file named by ``$SWIMDIFF_SCENE`` and shows it with the plugin's own
styling: for ``"kind": "change"`` two RGB rasters and the outputs of a ``swimdiff detect`` run
(``layers.add_detection_layers``, the panel's Detect tab; ``"detect-panel"`` also chooses the run's method on
the Detect page and measures the panel, also with the long device line of ``"long_device"``); for
``"kind": "landcover"`` an RGB raster under the outputs of a ``swimdiff classify`` run
(``landcover.add_classification_layers``, the panel's Land cover tab); for ``"kind": "adapt"`` the dates, an
analyst's labelling polygons (``labelling.set_up_labelling``, in edit mode with the add-polygon tool) and the
change map of the model adapted to them, with the Adapt page filled in. It zooms to the result, waits for the
map and the panel's device check, then writes the ``ready`` file (a report of the message bar, the legend and
the panel) the test waits for before it grabs the screen. Problems go to the ``error`` file.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsContrastEnhancement,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QPoint, Qt, QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface, plugins

SCENE = json.loads(Path(os.environ["SWIMDIFF_SCENE"]).read_text())
TIMEOUT = 90  # seconds to wait for the device check and the map


def add_raster(key: str, name: str, project: QgsProject) -> QgsRasterLayer:
    """Add the scene's raster ``key`` with its legend folded (the result's legend gets the room)."""
    raster = QgsRasterLayer(SCENE[key], name, "gdal")
    if not raster.isValid():
        raise ValueError(f"'{SCENE[key]}' cannot be opened as a raster layer")
    project.addMapLayer(raster)
    project.layerTreeRoot().findLayer(raster.id()).setExpanded(False)
    return raster


def show_change(plugin: Any, package: ModuleType, project: QgsProject) -> QgsMapLayer:
    """Two RGB dates and a detection's layers; the Detect tab with the dates chosen. Returns the change map."""
    rasters = {key: add_raster(key, SCENE[f"{key}_name"], project) for key in ("t1", "t2")}
    added = package.layers.add_detection_layers(SCENE["outputs"], SCENE["parameters"], SCENE["group"], project)
    root = project.layerTreeRoot()
    root.findLayer(rasters["t1"].id()).setItemVisibilityChecked(False)  # the later image under the change map
    if added.probability is not None:
        root.findLayer(added.probability.id()).setItemVisibilityChecked(False)  # its legend stays readable
    dock = plugin.dock
    dock.tabs.setCurrentIndex(0)
    dock.t1_combo.setLayer(rasters["t1"])
    dock.t2_combo.setLayer(rasters["t2"])
    return added.mask


def show_landcover(plugin: Any, package: ModuleType, project: QgsProject) -> QgsMapLayer:
    """An RGB raster under a classification's land cover; the Land cover page filled in. Returns the map."""
    raster = add_raster("raster", SCENE["raster_name"], project)
    raster.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut)
    added = package.landcover.add_classification_layers(SCENE["outputs"], SCENE["parameters"], SCENE["group"],
                                                        project)
    added.landcover.renderer().setOpacity(SCENE["opacity"])  # the scene shows through the classes
    tab = plugin.dock.classify_tab
    plugin.dock.tabs.setCurrentWidget(tab)
    tab.raster_combo.setLayer(raster)
    tab.set_model(SCENE["model"])
    tab.output_widget.setFilePath(SCENE["outputs"]["landcover"])
    return added.landcover


def show_detect_panel(plugin: Any, package: ModuleType, project: QgsProject) -> QgsMapLayer:
    """A CVA detection's layers and the Detect page as the run left it (CVA chosen). Returns the change map."""
    mask = show_change(plugin, package, project)
    page = plugin.dock.detect_page
    page.method_combo.select(SCENE["parameters"]["method"])
    page.output_widget.setFilePath(SCENE["outputs"]["change"])
    return mask


def show_live_threshold(plugin: Any, package: ModuleType, project: QgsProject) -> QgsMapLayer:
    """A model detection's layers with its probability drawn at ``"threshold"`` by the Detect page's live threshold
    slider. Returns the probability layer."""
    show_change(plugin, package, project)
    widget = plugin.dock.detect_page.threshold_widget
    probability = project.mapLayersByName("change probability")[0]
    widget.layer_combo.setLayer(probability)
    widget.slider.setValue(round(SCENE["threshold"] * 100))
    return probability


def show_adapt(plugin: Any, package: ModuleType, project: QgsProject) -> QgsMapLayer:
    """The adapted model's change map over the later date, the analyst's polygons above it in edit mode, and the
    Adapt page as the run left it. Returns the labels layer (the map zooms to the polygons)."""
    show_change(plugin, package, project)
    labels = QgsVectorLayer(SCENE["labels"], SCENE["labels_name"], "ogr")
    if not labels.isValid():
        raise ValueError(f"'{SCENE['labels']}' cannot be opened as a vector layer")
    package.labelling.set_up_labelling(labels)
    package.labelling.add_labelling_layer(labels, iface, project)
    dock = plugin.dock
    page = dock.adapt_page
    dock.tabs.setCurrentWidget(page)
    for combo, key in ((page.t1_combo, "t1_name"), (page.t2_combo, "t2_name")):
        combo.setLayer(project.mapLayersByName(SCENE[key])[0])
    page.labels_combo.setLayer(labels)
    page.steps_spin.setValue(SCENE["steps"])
    page.output_widget.setFilePath(SCENE["model"])
    importlib.import_module(f"{package.__name__}.outcomes")
    page.result_label.setText(package.outcomes.adapt_sentence(SCENE["adapted"], Path(SCENE["model"]).name))
    history = (Path(SCENE["model"]) / "history.csv").read_text().splitlines()
    for line in history[1:]:  # the run's loss, as the panel plotted it while adapting
        step, loss = line.split(",")[:2]
        dock.plot.add(int(float(step)), {"loss": float(loss)})
    return labels


SCENES = {"change": show_change, "landcover": show_landcover, "detect-panel": show_detect_panel,
          "live-threshold": show_live_threshold, "adapt": show_adapt}


def panel_geometry(dock: Any) -> dict[str, Any]:
    """Where the panel and its Detect button are in the window, and how the Detect page reads."""
    window = iface.mainWindow()
    page = dock.detect_page
    button = page.detect_button
    return {"window_width": window.width(), "dock_left": dock.mapTo(window, QPoint(0, 0)).x(),
            "dock_width": dock.width(), "button_right": button.mapTo(window, QPoint(button.width(), 0)).x(),
            "method": page.method_combo.currentText(), "threshold": page.threshold_spin.text(),
            "model_row_shown": page.model_widget.isVisible(), "note_height": page.model_label.height(),
            "note_needed": page.model_label.heightForWidth(page.model_label.width()),
            "line": page.model_label.fontMetrics().lineSpacing(), "device_lines": dock.device_label.height()
            // max(dock.device_label.fontMetrics().lineSpacing(), 1)}


def long_device_line_geometry(dock: Any) -> dict[str, Any]:
    """The panel's geometry while the device line is the long one a fresh install shows before its set-up."""
    shown = dock.device_label.text()
    dock.show_device(SCENE["long_device"])
    for _ in range(5):
        QgsApplication.processEvents()
    geometry = panel_geometry(dock)
    dock.device_label.setText(shown)
    dock.device_label.setToolTip(shown)
    return geometry


def report(dock: Any, result: QgsMapLayer) -> dict[str, Any]:
    """What the screenshot shows, for the test: device, message bar, the result's legend, the panel."""
    tree = QgsProject.instance().layerTreeRoot().findLayer(result.id())
    model = iface.layerTreeView().layerTreeModel()
    tab = dock.classify_tab
    page = dock.adapt_page
    adapt = {"counts": page.counts_label.text(), "editable": getattr(result, "isEditable", bool)(),
             "add_feature": iface.actionAddFeature().isChecked(), "top": QgsProject.instance().layerTreeRoot()
             .children()[0].name()}
    return {"device": dock.device_label.text(), "adapt": adapt,
            "messages": [[int(item.level()), f"{item.title()}: {item.text()}"] for item in iface.messageBar().items()],
            "legend": [node.data(Qt.DisplayRole) for node in model.layerLegendNodes(tree)],
            "tab": dock.tabs.tabText(dock.tabs.currentIndex()),
            "classify": {"raster": tab.raster_combo.currentLayer().name() if tab.raster_combo.currentLayer() else "",
                         "model": tab.model_widget.filePath()}}


def build() -> None:
    """Add the scene's layers, open the panel, zoom; then wait for the rendering."""
    window = iface.mainWindow()
    window.setGeometry(0, 0, *SCENE["size"])
    browser, layer_panel = (window.findChild(QDockWidget, name) for name in ("Browser", "Layers"))
    if browser is not None:
        browser.hide()  # the Layers panel gets the whole height: every legend entry readable
    plugin = plugins[SCENE["plugin"]]
    package = importlib.import_module(type(plugin).__module__.rsplit(".", 1)[0])
    for module in ("layers", "landcover", "labelling"):
        importlib.import_module(f"{package.__name__}.{module}")
    plugin.show_dock(True)
    dock = plugin.dock
    result = SCENES[SCENE["kind"]](plugin, package, QgsProject.instance())
    iface.setActiveLayer(result)
    dock.progress.setValue(100)  # the panel as a run leaves it
    dock.status.setText("done")
    if layer_panel is not None:
        window.resizeDocks([layer_panel, dock], [340, 380], Qt.Horizontal)

    canvas = iface.mapCanvas()
    started, zoomed = time.monotonic(), []

    def zoom() -> None:
        """Zoom to the result (with the scene's ``margin``); again once QGIS has settled, since the canvas zooms to
        the full extent of the first layers on its own a moment after they are added."""
        extent = canvas.mapSettings().layerExtentToOutputExtent(result, result.extent())
        canvas.setExtent(extent.buffered(SCENE.get("margin", 0.0) * max(extent.width(), extent.height())))
        canvas.refresh()

    zoom()

    def wait() -> None:
        checking = dock.device_label.text().endswith("checking…")
        if not checking and not zoomed:  # QGIS has settled: zoom again, then wait for that drawing
            zoomed.append(True)
            zoom()
            QTimer.singleShot(500, wait)
            return
        if (checking or canvas.isDrawing()) and time.monotonic() - started < TIMEOUT:
            QTimer.singleShot(500, wait)
            return
        bar = iface.messageBar()
        for item in bar.items():  # QGIS announces long tasks when its window is inactive, as it is without a
            if item.title() == "Task complete":  # window manager: the device check (torch loads for seconds)
                bar.popWidget(item)
        bar.pushMessage("SwiMDiff", SCENE["message"], 3, 0)  # Qgis.Success, as after a run
        shown = report(dock, result)
        if "long_device" in SCENE:
            shown["long_device"] = long_device_line_geometry(dock)
            QgsApplication.processEvents()
            shown["panel"] = panel_geometry(dock)
        QTimer.singleShot(1500, lambda: Path(SCENE["ready"]).write_text(json.dumps(shown)))

    QTimer.singleShot(1000, wait)


def guarded() -> None:
    try:
        build()
    except Exception:
        Path(SCENE["error"]).write_text(traceback.format_exc())
        QgsApplication.exit(1)


QTimer.singleShot(500, guarded)
