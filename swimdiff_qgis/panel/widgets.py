"""Small widget factories the dock's pages share, and the task chooser that holds the pages.

Every label here wraps and asks for no width of its own, and every combo box is content with a few
characters: the dock's width is the user's choice, never the length of a path or a layer name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QResizeEvent
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QMessageBox,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

#: Style of an info label that says why a chosen folder is unusable.
ERROR_STYLE = "color: #b00020"
#: The dock's way of starting a run: it calls the function and reports a ValueError or WorkerError.
Starter = Callable[[Callable[[], object]], None]
#: How a page asks a question: ``(parent, title, text, [(button text, id), ...])`` -> the chosen id or None.
Asker = Callable[[QWidget | None, str, str, Sequence[tuple[str, str]]], str | None]
#: Characters a combo box asks room for, whatever its longest item (a layer name can be 100 characters).
COMBO_CHARACTERS = 12


def narrow(combo: QComboBox, icons: bool = True) -> QComboBox:
    """Let a combo box be as narrow as :data:`COMBO_CHARACTERS` characters (long items are elided).

    Args:
        combo: The combo box.
        icons: Whether its items have icons (layer combo boxes), which need room too.
    """
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon if icons
                              else QComboBox.AdjustToMinimumContentsLength)
    combo.setMinimumContentsLength(COMBO_CHARACTERS)
    return combo


def form_layout(page: QWidget) -> QFormLayout:
    """The form layout of a page: a field goes under its label when the dock is too narrow for both."""
    layout = QFormLayout(page)
    layout.setRowWrapPolicy(QFormLayout.WrapLongRows)
    return layout


class WrappedLabel(QLabel):
    """A word-wrapped label that asks for little width: its text wraps (long words break) to the width it gets.

    Its height hint is the height of its text at its current width, renewed on each resize, so a narrow
    label gets all its lines and a wide one leaves no gap (not every layout on the way asks
    ``heightForWidth``).
    """

    #: The widths in pixels the label asks for at most (preferred, minimum).
    PREFERRED_WIDTH, MINIMUM_WIDTH = 160, 40

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        hint = super().sizeHint()
        width = self.width() if self.width() > self.MINIMUM_WIDTH else self.PREFERRED_WIDTH
        return QSize(min(hint.width(), self.PREFERRED_WIDTH), self.heightForWidth(width))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        return QSize(min(super().minimumSizeHint().width(), self.MINIMUM_WIDTH), self.sizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        if event.oldSize().width() != event.size().width():
            self.updateGeometry()  # the height for the new width


def wrapped_label(text: str = "", name: str = "") -> QLabel:
    """A :class:`WrappedLabel` with ``text`` and object name ``name``."""
    label = WrappedLabel(text)
    if name:
        label.setObjectName(name)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Maximum)  # spare height goes below the form
    return label


class ChoiceBox(QComboBox):
    """A combo box that shows words and keeps an id behind each (``currentData()``).

    ``setCurrentText`` also accepts an id, so code may choose an item by what it means.
    """

    def __init__(self, items: Sequence[tuple[str, Any]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        for text, value in items:
            self.addItem(text, value)
        narrow(self, icons=False)

    def select(self, value: Any) -> None:
        """Choose the item whose id is ``value``.

        Raises:
            ValueError: No item has that id.
        """
        index = self.findData(value)
        if index < 0:
            raise ValueError(f"no choice '{value}'; use one of {[self.itemData(i) for i in range(self.count())]}")
        self.setCurrentIndex(index)

    def setCurrentText(self, text: str) -> None:  # noqa: N802 (Qt name)
        """Choose the item shown as ``text``, or the one whose id is ``text``."""
        index = self.findText(text)
        self.setCurrentIndex(index if index >= 0 else self.findData(text))


def ask(parent: QWidget | None, title: str, text: str, choices: Sequence[tuple[str, str]]) -> str | None:
    """Ask a question with one button per choice (and Cancel); the chosen choice's id, None for Cancel.

    Args:
        parent: The dialog's parent.
        title: The window title.
        text: The question, with what each answer does.
        choices: ``(button text, id)`` pairs, the first one the default.
    """
    box = QMessageBox(QMessageBox.Question, title, text, QMessageBox.Cancel, parent)
    buttons = {box.addButton(label, QMessageBox.AcceptRole): value for label, value in choices}
    if buttons:
        box.setDefaultButton(next(iter(buttons)))
    box.exec_()
    return buttons.get(box.clickedButton())


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
    label = wrapped_label("", name)
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
        self.chooser = narrow(QComboBox(), icons=False)
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
