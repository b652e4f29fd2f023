"""Output paths, checked before any work: a location that can be written, and never one of the inputs.

Both checks run at the start of a job, so a bad ``--out`` costs the user nothing: no model is loaded, no
tile is computed and no input can be overwritten.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from ..errors import OutputError
from .raster import DateRaster


def check_writable(path: str | Path, argument: str, *, folder: bool = False) -> Path:
    """Refuse an output file (or folder, ``folder=True``) named by ``argument`` that cannot be written.

    Catches a folder where a file is needed (or the reverse), a device or pipe as an output file (as root,
    renaming a temporary onto ``/dev/null`` would replace the device), a missing folder for a file, a path
    under a file (``/dev/null/x``) and a folder that refuses new files (no permission, a read-only or pseudo
    file system such as ``/proc``): a probe file is made and removed in the nearest existing folder, since
    ``os.access`` says yes to root everywhere.

    Raises:
        OutputError: the location cannot be used; the message names it, the reason and the fix.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{argument} '{path}' is a file, not a folder; give a folder path")
    if not folder and path.is_dir():
        raise OutputError(f"{argument} '{path}' is a folder; give a file name such as change.tif")
    if not folder and path.exists() and not path.is_file():
        raise OutputError(f"{argument} '{path}' is not a regular file (a device or pipe); give a file path")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{argument} '{path}' lies under '{existing}', which is a file, not a folder; "
                          "choose another location")
    if not folder and existing != path.parent:
        raise OutputError(f"{argument} '{path}': folder '{path.parent}' does not exist; create it or choose another")
    try:
        handle, probe = tempfile.mkstemp(prefix=".swimdiff-probe-", suffix=".tmp", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"{argument} '{path}' cannot be written: folder '{existing}' refuses new files "
                          f"({error.strerror}); choose another location") from error
    return path


def _same_file(a: Path, b: Path) -> bool:
    with suppress(OSError):  # resolved paths (symlinks), then the file itself (hard links, case-insensitive disks)
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    return False


def refuse_inputs_as_outputs(outputs: Mapping[str, str | Path | None],
                             inputs: Mapping[str, Iterable[str | Path]]) -> None:
    """Refuse, before any work, an output that is an input file or another output (symlinks and hard links too).

    Args:
        outputs: output paths by argument name (``{"--out": ..., "--probability": None}``; None is skipped).
        inputs: the files each input argument reads (every band file of a folder, a VRT's sources, ...).

    Raises:
        OutputError: naming the option, the path and the fix.
    """
    given = [(name, Path(path)) for name, path in outputs.items() if path is not None]
    for i, (name, path) in enumerate(given):
        for other_name, other in given[:i]:
            if _same_file(path, other):
                raise OutputError(f"{name} '{path}' is the same file as {other_name} '{other}'; give each output "
                                  "its own file name")
        for input_name, files in inputs.items():
            for file in files:
                if _same_file(path, Path(file)):
                    shown = "" if Path(file) == path else f" ('{file}' under another name)"
                    raise OutputError(f"{name} '{path}' is an input file of {input_name}{shown}; writing it would "
                                      "destroy the input: choose another output file name")


def date_files(date: DateRaster) -> list[Path]:
    """Every file a date reads: its source, its band files and the files VRTs among them read."""
    return dataset_files([date.source, *(b.path for b in date.bands)])


def dataset_files(paths: Iterable[str | Path]) -> list[Path]:
    """``paths`` and the files the VRTs among them read."""
    files = [Path(p) for p in paths]
    for path in [f for f in dict.fromkeys(files) if f.suffix.lower() == ".vrt"]:
        with suppress(RasterioError, OSError), rasterio.open(path) as ds:
            files += [Path(f) for f in ds.files]
    return files
