"""SwiMDiff for QGIS: QGIS loads this folder as a plugin and calls :func:`classFactory`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qgis.gui import QgisInterface

    from .swimdiff_qgis.plugin import SwimDiffPlugin


def classFactory(iface: QgisInterface) -> SwimDiffPlugin:  # noqa: N802 (name fixed by QGIS)
    """Create the plugin instance; QGIS calls this when it loads the plugin.

    The import stays inside the function, so importing this package (pytest does, for the
    repository root) loads nothing from QGIS, and it is relative, so the plugin loads whatever its
    folder is called.

    Args:
        iface: The interface of the running QGIS.

    Returns:
        The plugin object.
    """
    from .swimdiff_qgis.plugin import SwimDiffPlugin

    return SwimDiffPlugin(iface)
