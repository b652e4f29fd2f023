"""The band-names choice of the Detect and Pre-train pages: what to call the bands of rasters that do not name
them, passed to the worker as ``--assume-band-names``."""

from __future__ import annotations

import re

from qgis.PyQt.QtWidgets import QLineEdit, QVBoxLayout, QWidget

from .widgets import ChoiceBox

#: (what the user reads, what the worker gets); "custom" takes the typed list.
CHOICES = (("from the file", ""), ("Sentinel-2 L1C: 13 bands, B01…B12 with B8A", "l1c"),
           ("Sentinel-2 L2A: 12 bands, no B10", "l2a"), ("my list…", "custom"))
BAND_NAME = re.compile(r"^[\w.\- ]+$")


def parse_custom(text: str) -> str:
    """Check a typed list of band names and return it as the worker's ``--assume-band-names`` value.

    Args:
        text: Names separated by commas (spaces are ignored), e.g. ``B02, B03, B04, B08``.

    Returns:
        The names joined by commas, e.g. ``B02,B03,B04,B08``.

    Raises:
        ValueError: The list is empty, a name is empty or odd, or a name repeats; the message says how to fix it.
    """
    names = [name.strip() for name in text.split(",")]
    fix = "type the names of the raster's bands in order, separated by commas, e.g. B02,B03,B04,B08"
    if not any(names):
        raise ValueError(f"band names: the list is empty; {fix}, or choose 'from the file'")
    bad = [name for name in names if not BAND_NAME.match(name)]
    if bad:
        raise ValueError(f"band names: '{text}' holds the name{'s' if len(bad) > 1 else ''} "
                         f"{', '.join(repr(b) for b in bad)}; {fix}")
    repeated = sorted({name for name in names if [n.upper() for n in names].count(name.upper()) > 1})
    if repeated:
        raise ValueError(f"band names: '{text}' lists {', '.join(repeated)} more than once; give each band once")
    return ",".join(names)


class BandNamesChoice(QWidget):
    """A choice of names for unnamed bands: from the file, a Sentinel-2 preset, or a typed list.

    Attributes:
        combo: The choice (ids ``""``, ``l1c``, ``l2a``, ``custom``).
        custom: The typed list, shown only for "my list…".
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = ChoiceBox(CHOICES)
        self.combo.setToolTip("Names for the bands of rasters whose bands have no names (no band descriptions): "
                              "SwiMDiff matches bands by name. 'from the file' takes unnamed bands in order and "
                              "warns.")
        self.custom = QLineEdit()
        self.custom.setPlaceholderText("band names in file order, e.g. B02,B03,B04,B08")
        layout = QVBoxLayout(self)  # the typed list goes under the choice: room for a dozen names
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.custom)
        self.combo.currentIndexChanged.connect(self._changed)
        self._changed()

    def _changed(self) -> None:
        self.custom.setVisible(self.combo.currentData() == "custom")

    def value(self) -> str:
        """The ``--assume-band-names`` value; empty for "from the file".

        Raises:
            ValueError: "my list…" with an empty or odd list (see :func:`parse_custom`).
        """
        chosen = str(self.combo.currentData())
        return parse_custom(self.custom.text()) if chosen == "custom" else chosen

    def args(self) -> list[str]:
        """``["--assume-band-names", value]``, or nothing for "from the file"."""
        value = self.value()
        return ["--assume-band-names", value] if value else []
