"""Shared fixtures: generated GeoTIFFs (never committed) and the path to ../shared/data."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_geotiff(path: Path, data: np.ndarray, *, crs: str = "EPSG:32631",
                  origin: tuple[float, float] = (500000.0, 4600000.0),
                  pixel: float = 10.0, nodata: float | None = 0, descriptions: Sequence[str] | None = None) -> Path:
    """Write a (C, H, W) array as a tiled GeoTIFF."""
    import rasterio
    from rasterio.transform import from_origin

    count, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name, crs=crs,
                   transform=from_origin(origin[0], origin[1], pixel, pixel), nodata=nodata)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, text in enumerate(descriptions or [], 1):
            ds.set_band_description(i, text)
    return path


def smooth_field(rng: np.random.Generator, bands: int, size: int) -> np.ndarray:
    """Spatially correlated reflectance-like values (uint16), so patches have structure."""
    base = rng.normal(size=(bands, size // 8 + 1, size // 8 + 1))
    up = np.kron(base, np.ones((8, 8)))[:, :size, :size]
    return (1000 + 300 * up + rng.normal(scale=20, size=up.shape)).clip(1, 65535).astype("uint16")


OSCD_BANDS = ("B02", "B03", "B04", "B08")


def make_oscd(root: Path, cities: tuple[str, ...] = ("alpha", "beta", "gamma"), size: int = 64) -> Path:
    for seed, city in enumerate(cities):
        rng = np.random.default_rng(seed)
        t1 = smooth_field(rng, len(OSCD_BANDS), size)
        t2 = t1.copy()
        t2[:, 10:30, 20:44] += 900  # a new building block
        label = np.ones((1, size, size), dtype=np.uint8)
        label[0, 10:30, 20:44] = 2
        for date, data in (("imgs_1", t1), ("imgs_2", t2)):
            folder = root / "images" / city / date
            folder.mkdir(parents=True)
            for i, band in enumerate(OSCD_BANDS):
                write_geotiff(folder / f"T00_{band}.tif", data[i:i + 1], nodata=None)
        (root / "labels" / city / "cm").mkdir(parents=True)
        write_geotiff(root / "labels" / city / "cm" / f"{city}-cm.tif", label, crs=None, nodata=None)
    return root


@pytest.fixture
def make_geotiff(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_geotiff(name, bands=13, size=64, dtype="uint16", crs=..., nodata=0, seed=0, ...)``."""

    def make(name: str = "date.tif", bands: int = 13, size: int = 64, dtype: str = "uint16", crs: str = "EPSG:32631",
             nodata: float | None = 0, seed: int = 0, descriptions: Sequence[str] | None = None,
             origin: tuple[float, float] = (500000.0, 4600000.0), pixel: float = 10.0,
             fill: float | None = None) -> Path:
        rng = np.random.default_rng(seed)
        data = smooth_field(rng, bands, size).astype(dtype)
        if fill is not None:
            data[:] = fill
        return write_geotiff(tmp_path / name, data, crs=crs, origin=origin, pixel=pixel, nodata=nodata,
                             descriptions=descriptions)

    return make


@pytest.fixture
def make_band_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory for a Sentinel-2 style folder: ``<prefix>_Bxx.tif`` at 10, 20 and 60 m."""
    from core.io.bands import SENTINEL2_BANDS

    resolution = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20, "B07": 20, "B8A": 20,
                  "B11": 20, "B12": 20, "B01": 60, "B09": 60, "B10": 60}

    def make(name: str = "imgs_1", size: int = 120, seed: int = 0, bands: Sequence[str] = SENTINEL2_BANDS,
             prefix: str = "T31TCJ_20200101") -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        for band in bands:
            pixel = resolution[band]
            n = size * 10 // pixel
            write_geotiff(folder / f"{prefix}_{band}.tif", smooth_field(rng, 1, n), pixel=float(pixel), nodata=None)
        return folder

    return make


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not here")
    return SHARED_DATA


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """A (3 or 1, H, W) uint8 array as a PNG (no georeferencing, like EuroSAT's RGB images)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    count, height, width = rgb.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=width, height=height, count=count, dtype="uint8") as ds:
            ds.write(rgb)
    return path


def make_rgb_classes(root: Path, per_class: int = 4, size: int = 32, classes: tuple[str, ...] = ("Forest", "Sea"),
                     bands: int = 3) -> Path:
    """EuroSAT-style PNG folders: class k is brighter by 90 per step and striped, so it is learnable."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = 40 + 90 * k + rng.normal(0, 8, size=(bands, size, size))
            if k:
                image[:, ::4] += 40
            image[0] += 10  # red differs from blue, to check band order
            write_png(root / name / f"{name}_{i}.png", image.clip(0, 255).astype("uint8"))
    return root


def forest_sea_raster(path: Path, height: int = 96, width: int = 160, nodata_block: int = 24) -> Path:
    """An unnamed 3-band uint8 raster (R, G, B; EPSG:32631, 10 m) in the style of :func:`make_rgb_classes`:
    "Forest" on the left half, "Sea" on the right, and a nodata (0) square in the top-left corner."""
    rng = np.random.default_rng(5)
    image = np.empty((3, height, width))
    image[:, :, :width // 2] = 40 + rng.normal(0, 8, size=(3, height, width // 2))
    sea = 130 + rng.normal(0, 8, size=(3, height, width - width // 2))
    sea[:, ::4] += 40
    image[:, :, width // 2:] = sea
    image[0] += 10
    image = image.clip(1, 255).astype("uint8")
    image[:, :nodata_block, :nodata_block] = 0
    return write_geotiff(path, image, nodata=0)


# --- QGIS fixtures shared by the QGIS test files (qgis is imported inside them, so core tests never need it) ---

@pytest.fixture
def provider(qgis_processing) -> Iterator:
    """The SwiMDiff Processing provider, registered for one test (the plugin tests register their own copy)."""
    from qgis.core import QgsApplication

    from swimdiff_qgis.processing.provider import SwimDiffProvider

    registry = QgsApplication.processingRegistry()
    provider = SwimDiffProvider()
    assert registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)


@pytest.fixture
def dock(qgis_iface, qgis_new_project) -> Iterator:
    """The SwiMDiff panel with its runner, as the plugin creates them (messages cleared)."""
    from swimdiff_qgis.panel.dock import SwimDiffDock
    from swimdiff_qgis.runs import Runner

    qgis_iface.messageBar().clear_messages()
    runner = Runner(qgis_iface)
    dock = SwimDiffDock(qgis_iface, runner)
    yield dock
    runner.shutdown()
    dock.shutdown()
    dock.deleteLater()
    wait_for_no_tasks()  # a run left by a failed test must not report into the next test's panel


def wait_for_no_tasks(timeout: float = 30.0) -> None:
    """Turn the event loop until QGIS's task manager has no active task (or ``timeout`` seconds passed)."""
    import time

    from qgis.core import QgsApplication

    deadline = time.monotonic() + timeout
    while QgsApplication.taskManager().countActiveTasks() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    QgsApplication.processEvents()


# --- Table-driven bad-input cases (issue 11): one row per case -------------------------------------------

@dataclass(frozen=True)
class BadInput:
    """One bad-input case of the ``swimdiff`` command line.

    Attributes:
        id: a short name for the pytest id.
        argv: builds the command line inside a fresh folder (creating whatever files the case needs).
        code: the expected exit code (2: a user error, 130: cancelled).
        phrase: a phrase the error message must contain (case-insensitive).
        absent: paths, relative to the folder, that must not exist afterwards.
        unchanged: paths, relative to the folder, whose bytes must be the same afterwards.
    """

    id: str
    argv: Callable[[Path], list[str]]
    code: int
    phrase: str
    absent: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    """Run ``swimdiff <argv> --events jsonl`` in this process; return the exit code and the events."""
    import json

    from core.cli import main

    capsys.readouterr()
    code = main([*argv, "--events", "jsonl"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return code, events


def check_bad_input(case: BadInput, folder: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """Run a :class:`BadInput` row and assert everything it promises; returns the error event.

    Besides the row's own promises: exactly one error event, no traceback (not an ``InternalError``),
    and no hidden temporary file (``.*.tmp``) left anywhere under the folder.
    """
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    argv = case.argv(folder)

    def digest(name: str) -> str:
        return hashlib.sha256((folder / name).read_bytes()).hexdigest()

    before = {name: digest(name) for name in case.unchanged}
    code, events = run_cli(argv, capsys)
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1, f"{case.id}: expected one error event, got {events[-3:]}"
    error = errors[0]
    assert error["kind"] != "InternalError", f"{case.id}: a traceback instead of a clear error: {error}"
    assert code == case.code, f"{case.id}: exit {code}, expected {case.code}: {error}"
    assert case.phrase.lower() in error["message"].lower(), f"{case.id}: {error['message']!r}"
    assert not [e for e in events if e["event"] == "result"], f"{case.id}: a result event after an error"
    for name in case.absent:
        assert not (folder / name).exists(), f"{case.id}: {name} exists"
    for name, value in before.items():
        assert (folder / name).exists() and digest(name) == value, f"{case.id}: {name} was changed"
    leftovers = [p for p in folder.rglob(".*.tmp")]
    assert not leftovers, f"{case.id}: temporary files left: {leftovers}"
    return error
