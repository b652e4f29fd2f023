"""The house's shape: dependency direction, metadata, no stray test packages."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_CORE = {"qgis", "PyQt5", "swimdiff_qgis"}
HEAVY = {"torch", "rasterio", "timm", "diffusers", "safetensors"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_never_imports_qgis_or_the_plugin() -> None:
    offenders = {str(p.relative_to(REPO)): imported_roots(p) & FORBIDDEN_IN_CORE
                 for p in (REPO / "core").rglob("*.py")}
    assert len(offenders) > 10
    assert {k: v for k, v in offenders.items() if v} == {}


def test_plugin_never_imports_heavy_libraries() -> None:
    offenders = {str(p.relative_to(REPO)): imported_roots(p) & HEAVY for p in (REPO / "swimdiff_qgis").rglob("*.py")}
    assert offenders
    assert {k: v for k, v in offenders.items() if v} == {}
    assert imported_roots(REPO / "__init__.py") & HEAVY == set()


def test_metadata_is_complete() -> None:
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository",
                "tracker", "homepage", "tags", "category", "hasProcessingProvider", "icon"):
        assert general.get(key, "").strip(), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (REPO / general["icon"]).is_file()


def test_tests_have_no_init_files() -> None:
    assert list((REPO / "tests").rglob("__init__.py")) == []


def test_core_modules_stay_small() -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
             for p in (REPO / "core").rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 400} == {}


def test_core_is_laid_out_by_job() -> None:
    """At most ten modules directly in core/; the three jobs and their shared rooms are packages whose
    docstring says what the package is and which module to open first."""
    top = sorted(p.name for p in (REPO / "core").glob("*.py"))
    assert len(top) <= 10, top
    for package in ("io", "models", "pretrain", "change", "landcover", "commands"):
        init = REPO / "core" / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc) > 40, package
        if package in ("io", "pretrain", "change", "landcover"):
            assert "first" in doc, package  # names the module to open first
    for job in ("pretrain", "change", "landcover"):  # one name per concept: each job trains in training.py
        assert (REPO / "core" / job / "training.py").is_file(), job


def test_the_jobs_build_on_each_other_in_one_direction() -> None:
    """Pre-training stands alone; change detection may use pre-training's pieces (its scenes' shared bands,
    its learning-rate schedule); land cover may use both (an encoder folder, the pair's progress ticks).
    Never the reverse, so the jobs cannot form an import cycle."""
    may_use = {"pretrain": set(), "change": {"pretrain"}, "landcover": {"pretrain", "change"}}
    crossings = set()
    for job, allowed in may_use.items():
        for path in (REPO / "core" / job).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                    other = node.module.split(".")[0]
                    if other in may_use and other != job and other not in allowed:
                        crossings.add((path.name, node.module))
    assert crossings == set()


def test_test_files_are_named_after_the_room_they_test() -> None:
    rooms = ("io", "pretrain", "change", "landcover", "models", "qgis", "cli", "config", "layout", "bench")
    names = [p.stem for p in (REPO / "tests").glob("test_*.py")]
    assert len(names) > 20
    assert [n for n in names if not n.removeprefix("test_").startswith(rooms)] == []
