"""What a ZIP user gets (`make zip`): the plugin without dev files, a README written for it, runtime requirements."""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEV_TOOLS = {"pytest", "pytest-qgis", "ruff", "mypy"}

#: Inline links and images ``[text](target "title")``, reference definitions ``[id]: target``, HTML src/href.
LINK_PATTERNS = (re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"),
                 re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE),
                 re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']"""))


def relative_links(markdown: str) -> list[str]:
    """The link targets of a Markdown text that point to files (no URL, no anchor of the page itself)."""
    targets = [match.group(1) for pattern in LINK_PATTERNS for match in pattern.finditer(markdown)]
    return [target.split("#")[0] for target in targets
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("#")]


def missing_links(markdown: str, names: list[str], folder: str = "swimdiff") -> list[str]:
    """The relative links of ``markdown`` (a file in ``folder`` of the archive) that the archive lacks."""
    files = set(names)
    folders = {name.rstrip("/") for name in names if name.endswith("/")} | {
        posixpath.dirname(name) for name in names}
    missing = []
    for target in relative_links(markdown):
        path = posixpath.normpath(posixpath.join(folder, target))
        if path not in files and path not in folders:
            missing.append(target)
    return missing


def requirement_names(path: Path) -> set[str]:
    """The distribution names a requirements file lists itself (not those of the files it includes)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """``make zip`` into a private folder (the build folder too: other runs may build theirs meanwhile)."""
    if shutil.which("zip") is None or shutil.which("git") is None:
        pytest.skip("needs the zip and git commands")
    folder = tmp_path_factory.mktemp("zip")
    path = folder / "swimdiff.zip"
    subprocess.run(["make", "-s", "zip", f"ZIP={path}", f"ZIP_BUILD={folder / 'build'}"], cwd=ROOT, check=True,
                   capture_output=True)
    return zipfile.ZipFile(path)


def test_make_zip_packs_the_plugin_without_tests_or_dev_files(archive: zipfile.ZipFile, tmp_path: Path) -> None:
    names = archive.namelist()
    assert all(name.startswith("swimdiff/") for name in names)
    for needed in ("metadata.txt", "__init__.py", "requirements.txt", "README.md", "Makefile", "resources/icon.png",
                   "swimdiff_qgis/plugin.py", "swimdiff_qgis/processing/provider.py", "core/cli.py"):
        assert f"swimdiff/{needed}" in names
    for banned in ("tests/", "bench/", "docs/", "scripts/", ".ci/", ".venv/", "__pycache__/", "runs/", ".git/"):
        assert not [name for name in names if f"/{banned}" in name], banned
    assert "swimdiff/resources/README-plugin.md" not in names  # it is the README.md
    archive.extractall(tmp_path)
    metadata = (tmp_path / "swimdiff" / "metadata.txt").read_text()
    assert "name=SwiMDiff" in metadata and "hasProcessingProvider=yes" in metadata


def test_the_zips_readme_is_written_for_the_installed_plugin(archive: zipfile.ZipFile) -> None:
    readme = archive.read("swimdiff/README.md").decode()
    assert readme == (ROOT / "resources" / "README-plugin.md").read_text()
    assert missing_links(readme, archive.namelist()) == []
    assert relative_links(readme) == ["requirements.txt"]  # the check above has something to check
    # the first steps are the plugin's own set-up action, not a terminal
    assert "Click **Set up environment**" in readme and "**Set up SwiMDiff environment…**" in readme
    assert "make setup" not in readme


def test_the_link_check_finds_what_the_zip_lacks(archive: zipfile.ZipFile) -> None:
    """The developer's README links docs/ and images that stay out of the ZIP: the check must see them."""
    missing = missing_links((ROOT / "README.md").read_text(), archive.namelist())
    assert "docs/benchmarks.md" in missing
    assert missing_links("[x](core/cli.py) [y](resources/models/) [z](#usage) [w](https://a.b/c.md)",
                         archive.namelist()) == []
    assert missing_links('[a](nowhere.md) ![b](img/b.png "B")\n[c]: ../outside.txt\n<img src="d.png">',
                         archive.namelist()) == ["nowhere.md", "img/b.png", "../outside.txt", "d.png"]


def test_the_runtime_requirements_hold_no_dev_tool(archive: zipfile.ZipFile, tmp_path: Path) -> None:
    archive.extract("swimdiff/requirements.txt", tmp_path)
    runtime = requirement_names(tmp_path / "swimdiff" / "requirements.txt")
    assert runtime & DEV_TOOLS == set()
    assert {"torch", "torchvision", "timm", "diffusers", "safetensors", "rasterio", "numpy"} <= runtime
    dev = ROOT / "requirements-dev.txt"
    assert "-r requirements.txt" in dev.read_text().splitlines()
    assert requirement_names(dev) == DEV_TOOLS


def test_make_setup_installs_runtime_and_dev_requirements_in_one_pip_call(tmp_path: Path) -> None:
    """Two pip calls can make pip swap torch (ENVIRONMENT.md): one call takes both files."""
    if shutil.which("make") is None:
        pytest.skip("needs make")
    dry_run = subprocess.run(["make", "-n", "setup", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    requirement_installs = [line for line in dry_run.splitlines() if "pip install" in line and " -r " in line]
    assert len(requirement_installs) == 1
    assert requirement_installs[0].endswith("-r requirements-dev.txt")
