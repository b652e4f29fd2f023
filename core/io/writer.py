"""Writing outputs safely: atomically, verified, never over an input, GeoTIFFs window by window.

:class:`AtomicGeoTiff` writes to a hidden ``.<name>.<pid>.<hex>.tmp`` beside the output and renames
it into place only once it was closed without a GDAL error (GDAL reports write errors through its
handler, not always as exceptions), synced and re-read whole: a crash, a cancel or a full disk keeps
the previous file. :class:`OutputGroup` makes several files appear together or not at all; the pid in
the name lets a later run remove what a killed run left, never a live run's files.
"""

from __future__ import annotations

import atexit
import errno
import glob
import logging
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError  # what rasterio's close and flush raise (not a RasterioError)
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..errors import OutputError
from .raster import Grid

logger = logging.getLogger(__name__)

BLOCK = 256
FULL_MARGIN = 16 * 2**20  # bytes: a write that failed with less free space than this failed for want of space
LEGACY_AGE = 3600.0  # s: temporaries named without a process id are stale once untouched this long
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
NO_SPACE_TEXT = ("no space left", "os error 28", "storagefull", "disk quota", "disk full")
GDAL_FAILURES = (RasterioError, CPLE_BaseError, OSError)
LIVE_TEMPORARIES: set[Path] = set()  # temporaries this process is writing; removed at exit whatever happened


# --- temporaries: named after the output and the writing process -----------------------------------


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` for this process: ``.<name>.<pid>.<8 hex>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (never signals it)."""
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32, code = ctypes.WinDLL("kernel32", use_last_error=True), ctypes.c_ulong()
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # access denied: it exists
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code)), kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` that killed runs left (their process is gone; pid-less ones of
    older versions once untouched for an hour); returns them. A concurrent run's temporaries stay."""
    prefix, removed = f".{path.name}.", []
    for candidate in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        middle = candidate.name[len(prefix):-len(".tmp")]
        pid, legacy = re.fullmatch(r"(\d+)\.[0-9a-f]{8}", middle), re.fullmatch(r"[0-9a-z_]{8}", middle)
        with suppress(OSError):  # gone meanwhile, or not ours to remove
            if ((pid and not process_alive(int(pid.group(1))))
                    or (legacy and time.time() - candidate.stat().st_mtime > LEGACY_AGE)):
                candidate.unlink()
                removed.append(candidate)
                logger.info("removed '%s', a partial file left by an interrupted run", candidate)
    return removed


@atexit.register  # what a second Ctrl-C (KeyboardInterrupt) between two cleanup steps left
def _remove_live_temporaries() -> None:
    for tmp in list(LIVE_TEMPORARIES):
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


# --- write errors ------------------------------------------------------------------------------------


def _error_chain(error: BaseException | str) -> list[BaseException | str]:
    chain = [error]
    while isinstance(chain[-1], BaseException) and len(chain) < 8:
        following = chain[-1].__cause__ or chain[-1].__context__
        if following is None or following in chain:
            break
        chain.append(following)
    return chain


def write_error(path: Path, error: BaseException | str) -> OutputError:
    """The :class:`OutputError` for a failed write of ``path``: "no space left on '<folder>'" when the disk
    is full (by errno, by the message, or by the free space left after a failed write), else the error text.
    Call it before removing the temporary file (its space counts)."""
    chain = _error_chain(error)
    text = "; ".join(dict.fromkeys(str(e) for e in chain if str(e)))
    folder = Path(os.path.abspath(path)).parent
    try:
        free: float = shutil.disk_usage(folder).free
    except OSError:
        free = math.inf
    if (any(getattr(e, "errno", None) in NO_SPACE for e in chain) or free < FULL_MARGIN
            or any(phrase in text.lower() for phrase in NO_SPACE_TEXT)):
        return OutputError(f"no space left on '{folder}' while writing '{Path(path).name}'; the previous file (if "
                           "any) is kept: free some space there or choose another folder")
    return OutputError(f"cannot write '{path}' ({text or 'unknown error'}); nothing was replaced: check the folder "
                       f"'{folder}' (space, permissions, a drive that went away) or choose another")


@contextmanager
def gdal_errors() -> Iterator[list[str]]:
    """Collect the errors GDAL reports through its error handler (not as exceptions) inside the block.

    rasterio's handler logs them on ``rasterio._err`` (CE_Failure at INFO level); they are taken out
    of the log here and returned, so the caller reports them once, in its own error.
    """
    messages: list[str] = []
    rio_logger, level = logging.getLogger("rasterio._err"), logging.getLogger("rasterio._err").level

    def take(record: logging.LogRecord) -> bool:
        if "error" not in record.getMessage().lower():
            return True
        messages.append(record.getMessage())
        return False

    rio_logger.setLevel(min(rio_logger.getEffectiveLevel(), logging.INFO))
    rio_logger.addFilter(take)
    try:
        with rasterio.Env():  # installs rasterio's error handler where none is
            yield messages
    finally:
        rio_logger.removeFilter(take)
        rio_logger.setLevel(level)


def sync_file(path: Path) -> None:
    """Flush ``path`` to the disk (late write errors of network and delayed-allocation file systems)."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- GeoTIFFs ------------------------------------------------------------------------------------------

class AtomicGeoTiff:
    """A GeoTIFF on ``grid`` that appears at ``path`` only after a successful ``with`` block (or
    :meth:`commit`), closed and verified; any failure keeps the previous file and removes the temporary.

    Raises:
        OutputError: the file cannot be written (a full disk names its folder).
    """

    def __init__(self, path: str | Path, grid: Grid, count: int, dtype: str, nodata: float | None,
                 descriptions: Sequence[str] = (), colormap: dict[int, tuple[int, int, int, int]] | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.tmp = temporary_name(self.path)
        self.profile: dict[str, Any] = dict(
            driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype, crs=grid.crs,
            transform=grid.transform, nodata=nodata, compress="deflate", BIGTIFF="IF_SAFER",
            tiled=grid.width >= BLOCK and grid.height >= BLOCK, blockxsize=BLOCK, blockysize=BLOCK,
        )
        self.descriptions, self.colormap, self.tags = descriptions, colormap, tags or {}
        self._ds: Any = None
        self.finished = False

    def __enter__(self) -> AtomicGeoTiff:
        remove_stale_temporaries(self.path)
        LIVE_TEMPORARIES.add(self.tmp)
        with self._removed_on_failure():  # also on a second Ctrl-C right after the file was created
            self._ds = rasterio.open(self.tmp, "w", **self.profile)
            for index, text in enumerate(self.descriptions, 1):
                self._ds.set_band_description(index, text)
            if self.colormap:
                self._ds.write_colormap(1, self.colormap)
            if self.tags:
                self._ds.update_tags(**self.tags)
        return self

    @contextmanager
    def _removed_on_failure(self) -> Iterator[None]:
        """Remove the temporary on any failure; a write failure becomes an :class:`OutputError`."""
        try:
            yield
        except GDAL_FAILURES as error:
            failure = write_error(self.path, error)  # before the removal: its space counts
            self.discard()
            raise failure from error
        except BaseException:
            self.discard()
            raise

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write a (count, h, w) or (h, w) array into ``window``."""
        if data.ndim == 2:
            data = data[None]
        try:
            self._ds.write(data.astype(self.profile["dtype"], copy=False), window=window)
        except GDAL_FAILURES as error:
            raise write_error(self.path, error) from error

    def finish(self) -> None:
        """Close the temporary file and check it: no GDAL error on close, synced, and re-read whole
        (size, type, every block present inside the file). Idempotent; on failure the temporary is removed.

        Raises:
            OutputError: the file is incomplete (a full disk names its folder).
        """
        if self.finished:
            return
        ds, self._ds = self._ds, None
        with self._removed_on_failure():
            with gdal_errors() as errors:  # what close reports only to GDAL's error handler, then the checks
                ds.close()
                with suppress(*GDAL_FAILURES) if errors else nullcontext():
                    sync_file(self.tmp)
                    self._verify()
            if errors:
                raise OSError("; ".join(errors))
        self.finished = True

    def _verify(self) -> None:
        """Raise OSError unless the closed temporary holds the whole raster."""
        size = self.tmp.stat().st_size
        p = self.profile
        with rasterio.open(self.tmp) as ds:
            if (ds.width, ds.height, ds.count, ds.dtypes[0]) != (p["width"], p["height"], p["count"], p["dtype"]):
                raise OSError(f"it reads back as {ds.width} x {ds.height} x {ds.count} {ds.dtypes[0]}")
            interleaved = ds.count == 1 or ds.profile.get("interleave", "pixel") == "pixel"
            for band in [1] if interleaved else range(1, ds.count + 1):
                rows, cols = ds.block_shapes[band - 1]
                for y in range(math.ceil(ds.height / rows)):
                    for x in range(math.ceil(ds.width / cols)):
                        offset = ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
                        length = ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band)
                        if not offset or not length or int(offset) + int(length) > size:
                            raise OSError(f"block {x},{y} of band {band} is missing or truncated "
                                             f"(the file has {size} bytes)")

    def commit(self) -> None:
        """Finish, then rename the temporary onto ``path``.

        Raises:
            OutputError: see :meth:`finish`, or the rename failed.
        """
        self.finish()
        with self._removed_on_failure():
            os.replace(self.tmp, self.path)
        LIVE_TEMPORARIES.discard(self.tmp)

    def discard(self) -> None:
        """Close (quietly) and remove the temporary file; the previous file at ``path`` stays."""
        ds, self._ds = self._ds, None
        try:
            if ds is not None:
                with gdal_errors():  # errors of a file being thrown away are no news
                    ds.close()
        except GDAL_FAILURES as error:
            logger.debug("closing %s: %s", self.tmp, error)
        finally:
            self.tmp.unlink(missing_ok=True)
            LIVE_TEMPORARIES.discard(self.tmp)
            self.finished = False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class OutputGroup:
    """Files that appear together or not at all: each is closed and verified before any is renamed.

    Use as ``with OutputGroup() as group: tif = group.add(AtomicGeoTiff(...))``; an exception in the
    block, or any file failing its check, removes every temporary and keeps every previous file.
    """

    def __init__(self) -> None:
        self.members: list[AtomicGeoTiff] = []

    def __enter__(self) -> OutputGroup:
        return self

    def add(self, tif: AtomicGeoTiff) -> AtomicGeoTiff:
        """Open ``tif`` (its temporary file) as a member of the group."""
        tif.__enter__()
        self.members.append(tif)
        return tif

    def drop(self, tif: AtomicGeoTiff) -> None:
        """Remove ``tif``'s temporary now, never renaming it (a scratch file)."""
        self.members.remove(tif)
        tif.discard()

    def discard(self) -> None:
        """Remove every member's temporary, even when one removal is interrupted."""
        pending: BaseException | None = None
        for tif in self.members:
            try:
                tif.discard()
            except BaseException as error:  # noqa: BLE001 - go on with the others, re-raise below
                pending = pending or error
        self.members.clear()
        if pending is not None:
            raise pending

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            for tif in self.members:
                tif.finish()
            for tif in self.members:  # only renames left: a failure here is rare (the folder went away)
                tif.commit()
        finally:
            self.discard()  # committed members have no temporary left
