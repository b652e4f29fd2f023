"""The README's screenshots: the real QGIS desktop under Xvfb with the plugin's results on real data.

Skipped unless Xvfb, QGIS, ImageMagick's ``import`` and ../shared/data are here. Each test makes its inputs
with the real ``swimdiff`` CLI, starts QGIS on a fresh profile with the plugin enabled and
``tests/screenshot_scene.py`` as startup code, grabs the screen and writes a PNG to ``docs/screenshots/``
(``$SWIMDIFF_SCREENSHOTS`` names another folder):

- ``qgis-change-map.png``: RGB VRTs of the two OSCD Nantes dates and ``swimdiff detect``'s change map from
  the shipped model (about 30 s on 2 busy cores);
- ``qgis-panel-detect.png``: the same dates with a CVA change map and the Detect page as that run leaves it
  (method in words, Otsu's threshold, no model row); it also checks that the panel and its Detect button stay on
  the 1600 px screen, also with the long device line a fresh install shows before its set-up;
- ``qgis-adapt.png``: the Nantes dates, polygons an analyst would draw over part of the city (the larger changed
  blocks of the OSCD label in red, unchanged squares in green; in edit mode, styled by the plugin), the change map
  of the shipped model adapted to them by ``swimdiff adapt`` (a short run: about two minutes) and the Adapt page;
- ``qgis-landcover.png``: an 8-bit RGB rendering of the Boadella Sentinel-2 scene and ``swimdiff classify``'s
  land-cover map from a classifier trained on the 100 EuroSAT patches (about a minute; it reuses
  ``runs/demo-landcover/model`` when ``make demo-landcover`` has written one).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA

NANTES = SHARED_DATA / "oscd" / "images" / "nantes"
NANTES_LABEL = SHARED_DATA / "oscd" / "labels" / "nantes" / "cm" / "nantes-cm.tif"
BOADELLA = SHARED_DATA / "multitemporal" / "boadella_s2l2a_12dates" / "Boadella_2021-06-26.tif"
EUROSAT = SHARED_DATA / "classification" / "eurosat_small" / "rgb_100"
DEMO_CLASSIFIER = REPO / "runs" / "demo-landcover" / "model"
SCREEN = (1600, 1000)
PLUGIN_NAME = "swimdiff"
NEEDED = ("Xvfb", "qgis", "import", "gdalbuildvrt")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in NEEDED),
                       reason=f"needs {', '.join(NEEDED)} (make setup installs them)"),
]


@pytest.fixture
def display() -> Iterator[str]:
    """A private Xvfb screen; it picks a free display number itself (``-displayfd``)."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                               "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    assert number, "Xvfb did not start"
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def band_file(folder: Path, band: str) -> str:
    (path,) = folder.glob(f"*_{band}.tif")
    return str(path)


def rgb_vrt(folder: Path, out: Path) -> Path:
    """A true-colour VRT (B04, B03, B02) of one OSCD date folder."""
    bands = [band_file(folder, band) for band in ("B04", "B03", "B02")]
    subprocess.run(["gdalbuildvrt", "-q", "-separate", str(out), *bands], check=True)
    return out


def swimdiff(*args: str) -> dict:
    """Run the ``swimdiff`` CLI (``python -m core.cli``) with JSON-lines events; its result event's outputs."""
    completed = subprocess.run([sys.executable, "-m", "core.cli", *args, "--events", "jsonl"], cwd=REPO,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (result,) = [e for e in map(json.loads, completed.stdout.splitlines()) if e.get("event") == "result"]
    return result["outputs"]


def fresh_profile(config: Path) -> None:
    """A QGIS profile with the plugin enabled and nothing that asks questions at start."""
    ini = config / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("\n".join([
        "[PythonPlugins]", f"{PLUGIN_NAME}=true", "",
        "[migration]", "settings=true", "firstRunVersionFlag=32216", "fileVersion=2", "",
        "[qgis]", "checkVersion=false", "showTips=false", "allowCrashReporting=false", "",
        "[core]", "NewsFeed\\\\httpsfeedqgisorg\\\\disabled=true", ""]))


def show_in_qgis(tmp_path: Path, display: str, scene: dict) -> tuple[dict, np.ndarray]:
    """Start QGIS with ``screenshot_scene.py`` on ``scene``, wait until it is shown and grab the screen.

    Returns:
        The scene's report (device, message bar, legend, panel tab) and the (H, W, 3) screenshot; the PNG
        itself is ``tmp_path / "screen.png"``.
    """
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / PLUGIN_NAME).symlink_to(REPO, target_is_directory=True)
    fresh_profile(tmp_path / "config")
    scene = {**scene, "plugin": PLUGIN_NAME, "size": SCREEN, "ready": str(tmp_path / "ready"),
             "error": str(tmp_path / "error")}
    (tmp_path / "scene.json").write_text(json.dumps(scene))
    env = {**os.environ, "DISPLAY": display, "QGIS_PLUGINPATH": str(plugins),
           "SWIMDIFF_SCENE": str(tmp_path / "scene.json"), "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "config")}
    env.pop("QT_QPA_PLATFORM", None)  # the real xcb platform, on the Xvfb screen
    env.pop("SWIMDIFF_PYTHON", None)
    command = ["qgis", "--nologo", "--noversioncheck", "--code", str(REPO / "tests" / "screenshot_scene.py")]
    with open(tmp_path / "qgis.log", "w") as log:
        qgis = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    shot = tmp_path / "screen.png"
    try:
        deadline = time.monotonic() + 150
        while not (tmp_path / "ready").exists() and not (tmp_path / "error").exists() and qgis.poll() is None:
            assert time.monotonic() < deadline, "QGIS did not show the scene in time"
            time.sleep(0.5)
        subprocess.run(["import", "-display", display, "-window", "root", str(shot)], check=True, timeout=60)
    finally:
        qgis.kill()
        qgis.wait(timeout=30)

    assert not (tmp_path / "error").exists(), (tmp_path / "error").read_text()
    report = json.loads((tmp_path / "ready").read_text())
    assert report["device"].startswith("Device: ") and "unknown" not in report["device"], report
    assert report["messages"][0] == [3, f"SwiMDiff: {scene['message']}"]  # Qgis.Success, the newest
    assert [text for level, text in report["messages"] if level in (1, 2)] == []  # no warnings, no errors
    image = read_png(shot)
    assert image.shape[:2] == (SCREEN[1], SCREEN[0])
    return report, image


def save_screenshot(tmp_path: Path, name: str) -> None:
    """Copy the checked screenshot to ``docs/screenshots/<name>`` (or ``$SWIMDIFF_SCREENSHOTS/<name>``)."""
    out = Path(os.environ.get("SWIMDIFF_SCREENSHOTS", REPO / "docs" / "screenshots")) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / "screen.png", out)


@pytest.mark.skipif(not NANTES.is_dir(), reason="../shared/data/oscd/images/nantes is not here")
def test_qgis_shows_a_styled_change_map_and_the_panel(tmp_path: Path, display: str) -> None:
    t1 = rgb_vrt(NANTES / "imgs_1", tmp_path / "nantes_t1_rgb.vrt")
    t2 = rgb_vrt(NANTES / "imgs_2", tmp_path / "nantes_t2_rgb.vrt")
    outputs = swimdiff("detect", "--t1", str(NANTES / "imgs_1"), "--t2", str(NANTES / "imgs_2"), "--out",
                       str(tmp_path / "change.tif"), "--probability", str(tmp_path / "prob.tif"))
    dates = dict(line.split(": ") for line in (NANTES / "dates.txt").read_text().splitlines() if ": " in line)
    day = {key: f"{value[:4]}-{value[4:6]}-{value[6:]}" for key, value in dates.items()}
    scene = {
        "kind": "change", "t1": str(t1), "t2": str(t2), "outputs": outputs,
        "t1_name": f"Nantes {day['date_1']} (t1, RGB)", "t2_name": f"Nantes {day['date_2']} (t2, RGB)",
        "group": "SwiMDiff change (default model)",
        "parameters": {"t1": str(NANTES / "imgs_1"), "t2": str(NANTES / "imgs_2"), "method": "model",
                       "model": "default"},
        "message": f"Changes detected: {100 * outputs['changed_fraction']:.2f} % of the pixels changed "
                   f"(threshold {outputs['threshold']:.3g})",
    }
    report, image = show_in_qgis(tmp_path, display, scene)
    assert report["tab"] == "Detect changes"
    red = (image[..., 0] > 180) & (image[..., 1] < 60) & (image[..., 2] < 60)  # the change mask's colour
    assert red.sum() > 100, "no change pixels are visible on the map"
    save_screenshot(tmp_path, "qgis-change-map.png")


#: The device line of a fresh install before "Set up environment" (336 characters in the issue's QGIS window).
LONG_DEVICE = ("unknown (No worker Python environment: /home/someone/.local/share/QGIS/QGIS3/profiles/default/python/"
               "plugins/swimdiff/.venv/bin/python is missing; click Set up SwiMDiff environment… on the SwiMDiff "
               "toolbar or in Raster › SwiMDiff (in a terminal: `make setup` in /home/someone/.local/share/QGIS/"
               "QGIS3/profiles/default/python/plugins/swimdiff), or point the SWIMDIFF_PYTHON variable or the "
               "SwiMDiff settings to an interpreter with the requirements installed)")


@pytest.mark.skipif(not NANTES.is_dir(), reason="../shared/data/oscd/images/nantes is not here")
def test_qgis_shows_the_detect_panel_in_words_within_the_screen(tmp_path: Path, display: str) -> None:
    t1 = rgb_vrt(NANTES / "imgs_1", tmp_path / "nantes_t1_rgb.vrt")
    t2 = rgb_vrt(NANTES / "imgs_2", tmp_path / "nantes_t2_rgb.vrt")
    outputs = swimdiff("detect", "--t1", str(NANTES / "imgs_1"), "--t2", str(NANTES / "imgs_2"), "--method", "cva",
                       "--out", str(tmp_path / "change.tif"), "--probability", str(tmp_path / "change_probability.tif"))
    dates = dict(line.split(": ") for line in (NANTES / "dates.txt").read_text().splitlines() if ": " in line)
    day = {key: f"{value[:4]}-{value[4:6]}-{value[6:]}" for key, value in dates.items()}
    scene = {
        "kind": "detect-panel", "t1": str(t1), "t2": str(t2), "outputs": outputs, "long_device": LONG_DEVICE,
        "t1_name": f"Nantes {day['date_1']} (t1, RGB)", "t2_name": f"Nantes {day['date_2']} (t2, RGB)",
        "group": f"SwiMDiff change {day['date_1']} → {day['date_2']}, CVA, {time.strftime('%H:%M:%S')}",
        "parameters": {"t1": str(NANTES / "imgs_1"), "t2": str(NANTES / "imgs_2"), "method": "cva", "model": ""},
        "message": f"Changes detected: {100 * outputs['changed_fraction']:.2f} % of the pixels changed "
                   f"(threshold {outputs['threshold']:.3g})",
    }
    report, image = show_in_qgis(tmp_path, display, scene)
    assert report["tab"] == "Detect changes"
    panel, long_line = report["panel"], report["long_device"]
    assert panel["method"] == "Change vector analysis"  # words, not the id "cva"
    assert panel["threshold"] == "auto (Otsu's)" and not panel["model_row_shown"]  # CVA: no model, Otsu's
    assert panel["note_height"] <= panel["note_needed"] + panel["line"]  # the CVA note leaves no gap around it
    for geometry in (panel, long_line):
        assert geometry["dock_left"] + geometry["dock_width"] <= geometry["window_width"] == SCREEN[0], geometry
        assert geometry["button_right"] <= geometry["window_width"], geometry  # Detect stays on the screen
    assert long_line["dock_width"] == panel["dock_width"]  # the long device line wraps instead of widening the panel
    assert long_line["device_lines"] >= 4
    red = (image[..., 0] > 180) & (image[..., 1] < 60) & (image[..., 2] < 60)
    assert red.sum() > 100, "no change pixels are visible on the map"
    save_screenshot(tmp_path, "qgis-panel-detect.png")


@pytest.mark.skipif(not NANTES.is_dir(), reason="../shared/data/oscd/images/nantes is not here")
def test_qgis_shows_the_live_threshold_at_two_values(tmp_path: Path, display: str) -> None:
    """``qgis-live-threshold.png``: the Detect page's slider drawing Nantes' change probability at 0.15 (top) and
    0.60 (bottom), without running the model again."""
    from qgis.PyQt.QtGui import QImage, QPainter

    outputs = swimdiff("detect", "--t1", str(NANTES / "imgs_1"), "--t2", str(NANTES / "imgs_2"), "--out",
                       str(tmp_path / "change.tif"), "--probability", str(tmp_path / "prob.tif"))
    t1 = rgb_vrt(NANTES / "imgs_1", tmp_path / "nantes_t1_rgb.vrt")
    t2 = rgb_vrt(NANTES / "imgs_2", tmp_path / "nantes_t2_rgb.vrt")
    reds, shots = [], []
    for threshold in (0.15, 0.6):
        run = tmp_path / f"at-{threshold}"
        run.mkdir()
        scene = {"kind": "live-threshold", "t1": str(t1), "t2": str(t2), "outputs": outputs, "threshold": threshold,
                 "t1_name": "Nantes t1 (RGB)", "t2_name": "Nantes t2 (RGB)", "group": "SwiMDiff change (default model)",
                 "parameters": {"t1": str(NANTES / "imgs_1"), "t2": str(NANTES / "imgs_2"), "method": "model",
                                "model": "default"},
                 "message": f"Live threshold {threshold:.2f} (the run's: {outputs['threshold']:.2f})"}
        report, image = show_in_qgis(run, display, scene)
        assert report["tab"] == "Detect changes"
        reds.append(int(((image[..., 0] > 180) & (image[..., 1] < 60) & (image[..., 2] < 60)).sum()))
        shots.append(QImage(str(run / "screen.png")))
    assert reds[0] > reds[1] > 100, reds  # a lower threshold shows more change
    both = QImage(SCREEN[0], 2 * SCREEN[1], QImage.Format_RGB888)
    painter = QPainter(both)
    painter.drawImage(0, 0, shots[0])
    painter.drawImage(0, SCREEN[1], shots[1])
    painter.end()
    both.save(str(tmp_path / "screen.png"))
    save_screenshot(tmp_path, "qgis-live-threshold.png")


def drawn_labels(label: Path, grid: str, out: Path, window: tuple[int, int, int] = (30, 225, 160)) -> Path:
    """Polygons an analyst would draw in a ``(row, col, size)`` window of a city: its changed blocks of at least 8
    pixels (from the OSCD label) as change 1, and 12 x 12 pixel squares where nothing changed as no change 0."""
    from osgeo import gdal, ogr, osr

    row, col, size = window
    changed = gdal.Open(str(label)).ReadAsArray() == 2  # OSCD: 1 no change, 2 change
    reference = gdal.Open(grid)
    x0, dx, _, y0, _, dy = reference.GetGeoTransform()
    inside = np.zeros_like(changed)
    inside[row:row + size, col:col + size] = True
    blocks = gdal.GetDriverByName("MEM").Create("", changed.shape[1], changed.shape[0], 2, gdal.GDT_Byte)
    blocks.SetGeoTransform(reference.GetGeoTransform())
    blocks.GetRasterBand(1).WriteArray((changed & inside).astype(np.uint8))
    blocks.GetRasterBand(2).WriteArray((changed & inside).astype(np.uint8))
    srs = osr.SpatialReference(reference.GetProjection())
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(out))
    layer = source.CreateLayer("labels", srs, ogr.wkbMultiPolygon)
    layer.CreateField(ogr.FieldDefn("change", ogr.OFTInteger))
    scratch = ogr.GetDriverByName("Memory").CreateDataSource("")
    components = scratch.CreateLayer("c", srs, ogr.wkbPolygon)
    components.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    gdal.Polygonize(blocks.GetRasterBand(1), blocks.GetRasterBand(2), components, 0)
    pixel = abs(dx * dy)
    shapes = [(1, f.GetGeometryRef().Clone()) for f in components if f.GetGeometryRef().GetArea() >= 8 * pixel]
    rng = np.random.default_rng(0)
    free = [(r, c) for r in range(row, row + size - 12, 6) for c in range(col, col + size - 12, 6)
            if not changed[max(r - 4, 0):r + 16, max(c - 4, 0):c + 16].any()]
    for r, c in [free[i] for i in rng.choice(len(free), 10, replace=False)]:
        left, top = x0 + c * dx, y0 + r * dy
        ring = f"{left} {top}, {left + 12 * dx} {top}, {left + 12 * dx} {top + 12 * dy}, {left} {top + 12 * dy}"
        shapes.append((0, ogr.CreateGeometryFromWkt(f"POLYGON (({ring}, {left} {top}))")))
    for value, geometry in shapes:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("change", value)
        feature.SetGeometry(ogr.ForceToMultiPolygon(geometry))
        layer.CreateFeature(feature)
    del layer, source, components, scratch
    return out


@pytest.mark.skipif(not (NANTES.is_dir() and NANTES_LABEL.is_file()),
                    reason="../shared/data/oscd (Nantes and its label) is not here")
def test_qgis_shows_labelling_polygons_and_the_adapted_change_map(tmp_path: Path, display: str) -> None:
    from swimdiff_qgis.outcomes import adapt_sentence

    t1 = rgb_vrt(NANTES / "imgs_1", tmp_path / "nantes_t1_rgb.vrt")
    t2 = rgb_vrt(NANTES / "imgs_2", tmp_path / "nantes_t2_rgb.vrt")
    labels = drawn_labels(NANTES_LABEL, band_file(NANTES / "imgs_1", "B02"), tmp_path / "nantes-labels.gpkg")
    model = tmp_path / "adapted_2015-08-21_2017-10-14"
    steps = 60
    adapted = swimdiff("adapt", "--t1", str(NANTES / "imgs_1"), "--t2", str(NANTES / "imgs_2"), "--labels",
                       str(labels), "--out", str(model), "--steps", str(steps), "--eval-every", "20")
    outputs = swimdiff("detect", "--t1", str(NANTES / "imgs_1"), "--t2", str(NANTES / "imgs_2"), "--model",
                       str(model), "--out", str(tmp_path / "change.tif"), "--probability", str(tmp_path / "prob.tif"))
    scene = {
        "kind": "adapt", "t1": str(t1), "t2": str(t2), "outputs": outputs, "labels": str(labels), "margin": 0.1,
        "labels_name": "SwiMDiff labels 2015-08-21 → 2017-10-14", "model": str(model), "steps": steps,
        "t1_name": "Nantes 2015-08-21 (t1, RGB)", "t2_name": "Nantes 2017-10-14 (t2, RGB)",
        "group": f"SwiMDiff change 2015-08-21 → 2017-10-14, model {model.name}, {time.strftime('%H:%M:%S')}",
        "parameters": {"t1": str(NANTES / "imgs_1"), "t2": str(NANTES / "imgs_2"), "method": "model",
                       "model": str(model)},
        "message": adapt_sentence(adapted, str(model)), "adapted": adapted,
    }
    report, image = show_in_qgis(tmp_path, display, scene)
    assert report["tab"] == "Adapt to this area"
    assert report["legend"] == ["change", "no change"]  # the labels' two classes
    assert report["adapt"]["top"] == scene["labels_name"]  # above the rasters and the change map
    assert report["adapt"]["editable"] and report["adapt"]["add_feature"]  # ready to draw more
    assert "Enough to adapt" in report["adapt"]["counts"], report["adapt"]
    red = (image[..., 0] > 180) & (image[..., 1] < 60) & (image[..., 2] < 60)
    green = (image[..., 0] < 60) & (image[..., 1] > 120) & (image[..., 2] < 110)
    assert red.sum() > 100 and green.sum() > 100, (red.sum(), green.sum())
    save_screenshot(tmp_path, "qgis-adapt.png")


def render_rgb(scene: Path, out: Path) -> Path:
    """``scripts/demo_landcover.py``'s 8-bit B04, B03, B02 rendering (the scale EuroSAT's JPGs have)."""
    spec = importlib.util.spec_from_file_location("demo_landcover", REPO / "scripts" / "demo_landcover.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo.render_rgb(scene, out)


def classifier(tmp_path: Path) -> Path:
    """The demo's classifier when ``make demo-landcover`` wrote one, else a quick linear probe on EuroSAT."""
    if (DEMO_CLASSIFIER / "config.json").is_file():
        return DEMO_CLASSIFIER
    outputs = swimdiff("finetune-classify", "--data", str(EUROSAT), "--out", str(tmp_path / "model"), "--epochs", "3",
                       "--linear-probe")
    return Path(outputs["model_dir"])


@pytest.mark.skipif(not (BOADELLA.is_file() and EUROSAT.is_dir()),
                    reason="../shared/data's Boadella scene or EuroSAT patches are not here")
def test_qgis_shows_a_land_cover_map_with_its_classes_and_the_panel(tmp_path: Path, display: str) -> None:
    rgb = render_rgb(BOADELLA, tmp_path / "boadella_rgb.tif")
    model = classifier(tmp_path)
    outputs = swimdiff("classify", "--raster", str(rgb), "--model", str(model), "--out",
                       str(tmp_path / "landcover.tif"))
    main = sorted(outputs["class_fractions"].items(), key=lambda item: -item[1])[:3]
    scene = {
        "kind": "landcover", "raster": str(rgb), "raster_name": "Boadella 2021-06-26 (RGB)",
        "model": str(model), "outputs": outputs, "group": "SwiMDiff land cover (EuroSAT classifier)",
        "parameters": {"raster": str(rgb), "model": str(model)}, "opacity": 0.6,
        "message": f"Land cover classified into {len(outputs['classes'])} classes: "
                   + ", ".join(f"{name} {100 * share:.1f} %" for name, share in main),
    }
    report, image = show_in_qgis(tmp_path, display, scene)
    assert report["tab"] == "Classify land cover"
    assert report["legend"][1:] == outputs["classes"]  # under the band's title, one entry per class, by id
    assert report["classify"] == {"raster": scene["raster_name"], "model": str(model)}
    pixels = image.reshape(-1, 3)
    for name, color in zip(outputs["classes"], outputs["colors"]):  # each legend swatch, at full colour
        assert (pixels == color).all(axis=1).sum() >= 40, f"the legend shows no {name} swatch {color}"
    save_screenshot(tmp_path, "qgis-landcover.png")


def read_png(path: Path) -> np.ndarray:
    """An (H, W, 3) uint8 array of a PNG, read with Qt (no extra imaging library)."""
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(path)).convertToFormat(QImage.Format_RGB888)
    assert not image.isNull(), path
    data = image.constBits().asstring(image.bytesPerLine() * image.height())
    rows = np.frombuffer(data, np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3)
