"""Names of a run's outputs and of its layer group: a file name that is not taken, and the dates of layers.

Pure functions on paths and strings (plus :func:`layer_file` on a layer), so tests need no QGIS window.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from qgis.core import QgsRasterLayer

#: ``2015-08-21``, ``20150821`` or ``2015_08_21`` in a layer name or file path.
DATE = re.compile(r"(?<!\d)(19\d\d|20\d\d)[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])(?!\d)")
#: How many characters of a layer name a group name keeps when the layer has no date.
NAME_CHARACTERS = 24


def layer_file(layer: QgsRasterLayer | None, role: str) -> str:
    """The file behind a raster layer, for the worker.

    Raises:
        ValueError: No layer, or one that is not a GDAL file (the message names the role and the fix).
    """
    if layer is None or not layer.isValid():
        raise ValueError(f"choose the {role} raster layer")
    if layer.providerType() != "gdal":
        raise ValueError(f"the {role} layer '{layer.name()}' is not a file raster ({layer.providerType()}); "
                         "export it to GeoTIFF first")
    return layer.source().split("|")[0]


def unused_output(path: Path, siblings: Sequence[str] = (), inputs: Collection[str] = ()) -> Path:
    """``path``, or the first of ``<stem>-2``, ``<stem>-3``... whose files are all free.

    A name is taken when the file or one of its siblings (``<stem><sibling>.tif``, e.g. ``_probability``)
    exists or is one of the inputs: an earlier result's layer may still show that file, and an input is
    never overwritten.

    Args:
        path: The output the user chose.
        siblings: Stem suffixes of the other files the run writes beside it.
        inputs: The run's input files.

    Returns:
        A path whose run writes no existing file.
    """
    kept = {str(Path(p).resolve()) for p in inputs}

    def free(candidate: Path) -> bool:
        files = [candidate] + [candidate.with_name(f"{candidate.stem}{s}{candidate.suffix}") for s in siblings]
        return not any(f.exists() or str(f.resolve()) in kept for f in files)

    if free(path):
        return path
    base = re.sub(r"-\d+$", "", path.stem)
    number = 2
    while not free(candidate := path.with_name(f"{base}-{number}{path.suffix}")):
        number += 1
    return candidate


def date_or_name(layer: QgsRasterLayer) -> str:
    """The date in a layer's name or file path (``2015-08-21``), else its name (shortened)."""
    for text in (layer.name(), layer.source()):
        if match := DATE.search(text):
            return "-".join(match.groups())
    name = layer.name()
    return name if len(name) <= NAME_CHARACTERS else name[: NAME_CHARACTERS - 1] + "…"


def model_words(model: str, default: str = "default model") -> str:
    """A model folder in a few words: its folder name, or ``default`` for the shipped one."""
    return Path(model).name if model and model != "default" else default


def change_group_name(t1: str, t2: str, parameters: dict[str, Any], clock: str) -> str:
    """The layer group of a detection, e.g. ``SwiMDiff change 2015-08-21 → 2017-10-14, CVA, 14:02:11``.

    Args:
        t1: The earlier date (or layer name).
        t2: The later date (or layer name).
        parameters: The run's ``method`` and ``model``.
        clock: When the run started.
    """
    method, model = str(parameters.get("method", "model")), str(parameters.get("model", ""))
    if method == "cva":
        how = "CVA"
    elif method == "features":
        how = f"features of {model_words(model, 'the default model')}"
    else:
        how = model_words(model) if model_words(model) == "default model" else f"model {model_words(model)}"
    return f"SwiMDiff change {t1} → {t2}, {how}, {clock}"


def landcover_group_name(raster: str, model: str, clock: str) -> str:
    """The layer group of a classification, e.g. ``SwiMDiff land cover 2021-06-26, eurosat, 14:02:11``."""
    return f"SwiMDiff land cover {raster}, {model_words(model)}, {clock}"
