"""The dock's live plot of the training loss: one polyline with a step axis and a loss axis."""

from __future__ import annotations

from qgis.PyQt.QtCore import QPointF, QRect, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPen, QPolygonF
from qgis.PyQt.QtWidgets import QWidget

AXIS_COLOR = QColor(80, 80, 80)
LINE_COLOR = QColor(31, 119, 180)
#: Margins of the plot area in pixels: left (loss ticks), top (title), right, bottom (step ticks).
MARGINS = (44, 26, 10, 28)


def number(value: float) -> str:
    """A short tick label: ``0.53``, ``1.2e-05``, ``1200``."""
    return f"{value:.3g}"


class LossPlot(QWidget):
    """A small live plot of the training loss, auto-scaled, with its axes.

    Attributes:
        points: ``(step, loss)`` in the order they came.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[tuple[int, float]] = []
        self.setMinimumHeight(120)
        self.setMinimumWidth(120)

    def clear(self) -> None:
        """Forget the points."""
        self.points = []
        self.update()

    def add(self, step: int, values: dict[str, float]) -> None:
        """Add the ``loss`` of a metric event (other metrics are ignored)."""
        if "loss" in values:
            self.points.append((step, values["loss"]))
            self.update()

    def ranges(self) -> tuple[float, float, float, float]:
        """``(first step, last step, lowest loss, highest loss)`` of the points (a flat range is widened)."""
        steps, losses = [p[0] for p in self.points], [p[1] for p in self.points]
        x0, x1, y0, y1 = min(steps), max(steps), min(losses), max(losses)
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5 * abs(y0 or 1), y1 + 0.5 * abs(y1 or 1)
        return x0, max(x1, x0 + 1), y0, y1

    def ticks(self) -> tuple[list[str], list[str]]:
        """The step axis's and the loss axis's tick labels (first, last; lowest, middle, highest)."""
        if len(self.points) < 2:
            return [], []
        x0, x1, y0, y1 = self.ranges()
        return [str(int(x0)), str(int(x1))], [number(y0), number((y0 + y1) / 2), number(y1)]

    def area(self) -> QRect:
        """The plot area inside the axes, in widget pixels (the left margin widens for long loss ticks)."""
        left, top, right, bottom = MARGINS
        widest = max((self.fontMetrics().horizontalAdvance(text) for text in self.ticks()[1]), default=0)
        left = max(left, widest + 8)
        return QRect(left, top, max(self.width() - left - right, 1), max(self.height() - top - bottom, 1))

    def paintEvent(self, event: object) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(255, 255, 255))
        painter.setPen(AXIS_COLOR)
        painter.drawText(4, 13, f"loss {number(self.points[-1][1])} at step {self.points[-1][0]}" if self.points
                         else "loss (shown while training)")
        area = self.area()
        painter.drawLine(area.bottomLeft(), area.topLeft())  # the loss axis
        painter.drawLine(area.bottomLeft(), area.bottomRight())  # the step axis
        step_ticks, loss_ticks = self.ticks()
        if not step_ticks:
            return
        metrics = painter.fontMetrics()
        for index, text in enumerate(loss_ticks):  # lowest at the bottom, highest at the top
            y = area.bottom() - index * area.height() // 2
            painter.drawLine(area.left() - 3, y, area.left(), y)
            painter.drawText(QRect(0, y - 8, area.left() - 5, 16), int(Qt.AlignRight | Qt.AlignVCenter), text)
        baseline = area.bottom() + 3 + metrics.ascent()
        painter.drawText(area.left(), baseline, step_ticks[0])
        painter.drawText(area.right() - metrics.horizontalAdvance(step_ticks[1]), baseline, step_ticks[1])
        label = "step"
        painter.drawText(area.center().x() - metrics.horizontalAdvance(label) // 2, baseline, label)
        x0, x1, y0, y1 = self.ranges()
        polygon = QPolygonF([QPointF(area.left() + area.width() * (s - x0) / (x1 - x0),
                                     area.bottom() - area.height() * (v - y0) / (y1 - y0)) for s, v in self.points])
        painter.setPen(QPen(LINE_COLOR, 1.5))
        painter.drawPolyline(polygon)
