"""Find and check the Python interpreter that runs the SwiMDiff worker.

Standard library only: this module must not import ``qgis`` or ``PyQt5`` (the worker launcher and tests
use it without QGIS), and it never imports torch; it only starts another interpreter and reads its
answer.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

#: The plugin folder (the repository root): the worker runs ``-m core.cli`` from here.
PLUGIN_DIR = Path(__file__).resolve().parent.parent

#: Variables that QGIS sets for its own Python, GDAL and PROJ; inherited by the worker they break its
#: interpreter or make rasterio's bundled GDAL/PROJ read QGIS's data files.
LEAKING_VARIABLES = frozenset({"PYTHONHOME", "PYTHONPATH", "GDAL_DATA", "PROJ_LIB", "PROJ_DATA"})
LEAKING_PREFIX = "QGIS_"

#: Where ``make setup`` puts the worker's interpreter, relative to the plugin folder (POSIX, Windows).
VENV_PYTHONS = (Path(".venv", "bin", "python"), Path(".venv", "Scripts", "python.exe"))

#: How to create the default worker environment: the plugin's own action first (a ZIP install has no terminal
#: habit to rely on), then the developer's command.
SETUP_HINT = ("click Set up SwiMDiff environment… on the SwiMDiff toolbar or in Raster › SwiMDiff "
              "(in a terminal: `make setup` in {plugin_dir})")


def clean_environment(env: Mapping[str, str]) -> dict[str, str]:
    """Copy an environment without the variables that must not leak from QGIS into the worker.

    Args:
        env: The environment to clean, usually ``os.environ``.

    Returns:
        A new dict without ``PYTHONHOME``, ``PYTHONPATH``, ``GDAL_DATA``, ``PROJ_LIB``, ``PROJ_DATA`` and
        any ``QGIS_*`` variable; every other variable is kept unchanged.
    """
    return {
        name: value
        for name, value in env.items()
        if name.upper() not in LEAKING_VARIABLES and not name.upper().startswith(LEAKING_PREFIX)
    }


def find_worker_python(plugin_dir: Path) -> Path | None:
    """Find the interpreter of the worker environment that ``make setup`` creates.

    Args:
        plugin_dir: The plugin folder (the repository root).

    Returns:
        ``<plugin_dir>/.venv/bin/python`` (``.venv/Scripts/python.exe`` on Windows) when it exists and
        is executable, else None. The path is not resolved: a venv's ``python`` is a symlink, and
        following it would lose the venv's packages.
    """
    for relative in VENV_PYTHONS:
        python = Path(plugin_dir) / relative
        if python.is_file() and os.access(python, os.X_OK):
            return python
    return None


def check_worker(python: Path, timeout: float = 60, cwd: Path = PLUGIN_DIR, hint: str | None = None
                 ) -> tuple[bool, str]:
    """Check that an interpreter can run the worker: ``<python> -m core.cli --version``.

    The command runs in a clean environment (see :func:`clean_environment`), with ``cwd`` as working
    directory so that ``core`` is importable from the plugin folder, and with no stdin.

    Args:
        python: The interpreter to check.
        timeout: Seconds to wait for the answer (the first import of torch can be slow).
        cwd: Working directory of the command; the plugin folder by default.
        hint: What fixes a missing or failing interpreter; :data:`SETUP_HINT` for ``cwd`` when None.

    Returns:
        ``(True, version text)`` when the command succeeds, else ``(False, message)`` where the message
        names the interpreter, what went wrong and the command that fixes it.
    """
    command = [str(python), "-m", "core.cli", "--version"]
    hint = SETUP_HINT.format(plugin_dir=cwd) if hint is None else hint
    try:
        completed = subprocess.run(
            command,
            cwd=cwd,
            env=clean_environment(os.environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # no console window on Windows
        )
    except FileNotFoundError:
        return False, f"worker interpreter {python} does not exist; {hint}"
    except subprocess.TimeoutExpired:
        return False, f"{python} -m core.cli --version did not answer within {timeout:g} s"
    except OSError as exc:
        return False, f"cannot start worker interpreter {python}: {exc}; {hint}"

    if completed.returncode != 0:
        last_lines = "\n".join(completed.stderr.strip().splitlines()[-5:])
        logger.debug("worker check failed: %s\n%s", command, completed.stderr)
        message = f"{python} -m core.cli --version failed with exit code {completed.returncode}; {hint}"
        return False, f"{message}\n{last_lines}".rstrip()
    return True, completed.stdout.strip() or completed.stderr.strip()


def worker_status(plugin_dir: Path = PLUGIN_DIR, timeout: float = 60, *, python: Path | None = None,
                  source: str = "") -> tuple[bool, str]:
    """Describe the worker environment in one message for the user.

    Args:
        plugin_dir: The plugin folder (the repository root).
        timeout: Seconds to wait for the worker's answer.
        python: The interpreter the user configured (it wins over the ``.venv``, as in runs); None to check
            the plugin's ``.venv``.
        source: Where ``python`` was configured, e.g. "the SwiMDiff/workerPython setting"; named in the message.

    Returns:
        ``(ok, message)``: the message names the interpreter and, when it works, the worker's version,
        else what is wrong and what fixes it.
    """
    if python is not None:
        where = f" (from {source})" if source else ""
        fix = (f"correct {source or 'the configured interpreter'}, or clear it to use "
               f"{Path(plugin_dir) / '.venv'}")
        ok, text = check_worker(python, timeout=timeout, cwd=plugin_dir, hint=fix)
        if ok:
            return True, f"Worker Python {python}{where} works: {text}"
        return False, f"Worker Python {python}{where} does not work: {text}"
    python = find_worker_python(plugin_dir)
    if python is None:
        expected = Path(plugin_dir) / VENV_PYTHONS[0]
        return False, f"No worker Python environment: {expected} is missing; " + SETUP_HINT.format(
            plugin_dir=plugin_dir
        )
    ok, text = check_worker(python, timeout=timeout, cwd=plugin_dir)
    if ok:
        return True, f"Worker Python {python} works: {text}"
    return False, f"Worker Python {python} does not work: {text}"
