"""Small widget factories the dock's tabs share."""

from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QLabel, QSpinBox

#: Style of an info label that says why a chosen folder is unusable.
ERROR_STYLE = "color: #b00020"


def folder_widget(placeholder: str) -> QgsFileWidget:
    """A folder chooser with a placeholder text."""
    widget = QgsFileWidget()
    widget.setStorageMode(QgsFileWidget.GetDirectory)
    widget.lineEdit().setPlaceholderText(placeholder)
    return widget


def geotiff_widget(placeholder: str) -> QgsFileWidget:
    """A chooser of a GeoTIFF file to write."""
    widget = QgsFileWidget()
    widget.setStorageMode(QgsFileWidget.SaveFile)
    widget.setFilter("GeoTIFF (*.tif)")
    widget.lineEdit().setPlaceholderText(placeholder)
    return widget


def spin(minimum: int, maximum: int, value: int) -> QSpinBox:
    """An integer spin box."""
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setValue(value)
    return box


def info_label(name: str = "") -> QLabel:
    """A read-only, wrapped, selectable label for what a chosen folder holds."""
    label = QLabel("")
    if name:
        label.setObjectName(name)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return label


def show_info(label: QLabel, text: str, state: str = "") -> None:
    """Set an info label's text; ``state`` is ``""`` (normal), ``"hint"`` (grey) or ``"error"`` (red)."""
    label.setStyleSheet({"hint": "color: gray", "error": ERROR_STYLE}.get(state, ""))
    label.setText(text)
