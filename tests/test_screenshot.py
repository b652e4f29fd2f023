"""The README's screenshot: the real QGIS desktop under Xvfb with a change map of Nantes from the default model.

Skipped unless Xvfb, QGIS, ImageMagick's ``import`` and ../shared/data are here. It builds RGB VRTs of the
two OSCD Nantes dates, runs ``swimdiff detect`` with the shipped model, starts QGIS on a fresh profile with
the plugin enabled and ``tests/screenshot_scene.py`` as startup code, grabs the screen and writes
``docs/screenshots/qgis-change-map.png`` (``$SWIMDIFF_SCREENSHOT`` names another file). About a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA

NANTES = SHARED_DATA / "oscd" / "images" / "nantes"
SCREEN = (1600, 1000)
PLUGIN_NAME = "swimdiff"
DEFAULT_SHOT = REPO / "docs" / "screenshots" / "qgis-change-map.png"
NEEDED = ("Xvfb", "qgis", "import", "gdalbuildvrt")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not NANTES.is_dir(), reason="../shared/data/oscd/images/nantes is not here"),
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


def detect(tmp_path: Path) -> dict:
    """``swimdiff detect`` with the shipped model on the two Nantes dates; its result event's outputs."""
    completed = subprocess.run(
        [str(REPO / ".venv" / "bin" / "swimdiff"), "detect", "--t1", str(NANTES / "imgs_1"), "--t2",
         str(NANTES / "imgs_2"), "--out", str(tmp_path / "change.tif"), "--probability", str(tmp_path / "prob.tif"),
         "--events", "jsonl"], cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
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


def test_qgis_shows_a_styled_change_map_and_the_panel(tmp_path: Path, display: str) -> None:
    t1 = rgb_vrt(NANTES / "imgs_1", tmp_path / "nantes_t1_rgb.vrt")
    t2 = rgb_vrt(NANTES / "imgs_2", tmp_path / "nantes_t2_rgb.vrt")
    outputs = detect(tmp_path)
    dates = dict(line.split(": ") for line in (NANTES / "dates.txt").read_text().splitlines() if ": " in line)
    day = {key: f"{value[:4]}-{value[4:6]}-{value[6:]}" for key, value in dates.items()}
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / PLUGIN_NAME).symlink_to(REPO, target_is_directory=True)
    fresh_profile(tmp_path / "config")
    scene = {
        "plugin": PLUGIN_NAME, "size": SCREEN, "t1": str(t1), "t2": str(t2), "outputs": outputs,
        "t1_name": f"Nantes {day['date_1']} (t1, RGB)", "t2_name": f"Nantes {day['date_2']} (t2, RGB)",
        "group": "SwiMDiff change (default model)",
        "parameters": {"t1": str(NANTES / "imgs_1"), "t2": str(NANTES / "imgs_2"), "method": "model",
                       "model": "default"},
        "message": f"Changes detected: {100 * outputs['changed_fraction']:.2f} % of the pixels changed "
                   f"(threshold {outputs['threshold']:.3g})",
        "ready": str(tmp_path / "ready"), "error": str(tmp_path / "error"),
    }
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
    red = (image[..., 0] > 180) & (image[..., 1] < 60) & (image[..., 2] < 60)  # the change mask's colour
    assert red.sum() > 100, "no change pixels are visible on the map"
    out = Path(os.environ.get("SWIMDIFF_SCREENSHOT", DEFAULT_SHOT))
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, out)


def read_png(path: Path) -> np.ndarray:
    """An (H, W, 3) uint8 array of a PNG, read with Qt (no extra imaging library)."""
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(path)).convertToFormat(QImage.Format_RGB888)
    assert not image.isNull(), path
    data = image.constBits().asstring(image.bytesPerLine() * image.height())
    rows = np.frombuffer(data, np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3)
