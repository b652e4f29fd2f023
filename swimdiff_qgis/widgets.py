"""Small widget factories the dock's pages share, and the task chooser that holds the pages."""

from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QComboBox, QLabel, QSpinBox, QStackedWidget, QVBoxLayout, QWidget

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


class TaskPages(QWidget):
    """One page per task, chosen from a drop-down list: unlike tabs, any number of tasks fits a narrow dock.

    Mirrors the part of ``QTabWidget``'s interface the panel uses (``addTab``, ``widget``, ``indexOf``,
    ``tabText``, ``currentIndex``...).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.chooser = QComboBox()
        self.chooser.setObjectName("SwiMDiffTask")
        self.pages = QStackedWidget()
        self.chooser.currentIndexChanged.connect(self.pages.setCurrentIndex)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.chooser)
        layout.addWidget(self.pages)

    def addTab(self, page: QWidget, label: str) -> int:  # noqa: N802 (QTabWidget's name)
        """Append a task page named ``label``; returns its index."""
        self.pages.addWidget(page)
        self.chooser.addItem(label)
        return self.pages.count() - 1

    def count(self) -> int:
        return self.pages.count()

    def widget(self, index: int) -> QWidget:
        return self.pages.widget(index)

    def indexOf(self, page: QWidget) -> int:  # noqa: N802 (QTabWidget's name)
        return self.pages.indexOf(page)

    def tabText(self, index: int) -> str:  # noqa: N802 (QTabWidget's name)
        return self.chooser.itemText(index)

    def currentIndex(self) -> int:  # noqa: N802 (QTabWidget's name)
        return self.pages.currentIndex()

    def currentWidget(self) -> QWidget:  # noqa: N802 (QTabWidget's name)
        return self.pages.currentWidget()

    def setCurrentIndex(self, index: int) -> None:  # noqa: N802 (QTabWidget's name)
        self.chooser.setCurrentIndex(index)

    def setCurrentWidget(self, page: QWidget) -> None:  # noqa: N802 (QTabWidget's name)
        self.setCurrentIndex(self.pages.indexOf(page))
