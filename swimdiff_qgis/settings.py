"""The plugin's settings (QgsSettings, shared by the GUI, Processing and ``qgis_process``)."""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import QgsSettings

from .environment import PLUGIN_DIR
from .worker import PYTHON_VARIABLE, worker_python

#: The interpreter that runs the worker; empty for the ``.venv`` that ``make setup`` creates.
WORKER_PYTHON_KEY = "SwiMDiff/workerPython"


def configured_python() -> str:
    """The worker interpreter set in the plugin settings, or an empty string for the default.

    Returns:
        The path as the user entered it, stripped.
    """
    return str(QgsSettings().value(WORKER_PYTHON_KEY, "", type=str) or "").strip()


def set_configured_python(python: str | Path | None) -> None:
    """Store the worker interpreter in the plugin settings; None or empty restores the default.

    Args:
        python: The interpreter to use from now on.
    """
    QgsSettings().setValue(WORKER_PYTHON_KEY, str(python or ""))


def chosen_worker_python() -> tuple[Path | None, str]:
    """The worker interpreter the user chose, and where: ``$SWIMDIFF_PYTHON``, else the setting.

    The same order as :func:`resolve_worker_python` (which runs use), without the ``.venv`` fallback.

    Returns:
        ``(python, "the SWIMDIFF_PYTHON variable")`` or ``(python, "the SwiMDiff/workerPython setting")``,
        or ``(None, "")`` when neither is set and runs use the plugin's ``.venv``.
    """
    variable = os.environ.get(PYTHON_VARIABLE, "").strip()
    if variable:
        return Path(variable), f"the {PYTHON_VARIABLE} variable"
    configured = configured_python()
    if configured:
        return Path(configured), f"the {WORKER_PYTHON_KEY} setting"
    return None, ""


def resolve_worker_python(plugin_dir: Path = PLUGIN_DIR) -> Path:
    """The interpreter a run uses: ``$SWIMDIFF_PYTHON``, else the setting, else the plugin's ``.venv``.

    Args:
        plugin_dir: The plugin folder.

    Returns:
        The interpreter path.

    Raises:
        WorkerError: ``WorkerMissing`` when none is set and the plugin has no ``.venv``.
    """
    return worker_python(configured_python(), plugin_dir)


#: The interpreter last chosen to create the worker environment ("Set up environment").
SETUP_PYTHON_KEY = "SwiMDiff/setupPython"


def setup_python() -> str:
    """The interpreter last used to create the worker environment, or an empty string.

    Returns:
        The path as the user entered it, stripped.
    """
    return str(QgsSettings().value(SETUP_PYTHON_KEY, "", type=str) or "").strip()


def set_setup_python(python: str | Path) -> None:
    """Remember the interpreter that created the worker environment, as the next default.

    Args:
        python: The interpreter.
    """
    QgsSettings().setValue(SETUP_PYTHON_KEY, str(python))
