"""Read what the panel shows about a model folder from its ``config.json``, without loading any weights.

Standard library only: the dock uses it on the main thread (it reads one small JSON file), tests use it
without QGIS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: ``kind`` of the folders that ``swimdiff pretrain`` writes (``core/checkpoint.py``).
PRETRAIN_KIND = "swimdiff-pretrain"
#: ``kind`` of the folders that ``swimdiff finetune-classify`` writes.
CLASSIFY_KIND = "swimdiff-classify"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: The resumable training state ``swimdiff pretrain`` keeps beside its model (``core/checkpoint.py``).
STATE_FILE = "train_state.safetensors"
#: What an invalid folder message ends with: how to fix it.
ENCODER_FIX = ("choose a folder written by 'swimdiff pretrain' (the panel's 'Pre-train an encoder' page), or leave "
               "Encoder empty for random weights")
CLASSIFIER_FIX = ("choose a folder written by 'swimdiff finetune-classify' (the panel's 'Train a land-cover "
                  "classifier' page)")
#: How many class names a one-line summary lists before "+N more".
LISTED_CLASSES = 8


@dataclass(frozen=True)
class EncoderInfo:
    """What fine-tuning takes from a pre-trained encoder folder.

    Attributes:
        folder: The encoder folder.
        arch: The backbone, e.g. ``resnet18``.
        bands: The band names, in the order the encoder reads them; fine-tuning uses these.
        patch_size: The side of the pre-training patches in pixels, None when the config does not say.
    """

    folder: Path
    arch: str
    bands: tuple[str, ...]
    patch_size: int | None

    def describe(self) -> str:
        """One line for the panel, e.g. ``resnet18 encoder; 12 bands: B01, …; pre-trained on 64 px patches``."""
        text = f"{self.arch} encoder; {len(self.bands)} bands: {', '.join(self.bands)}"
        if self.patch_size:
            text += f"; pre-trained on {self.patch_size} px patches"
        return text + ". Fine-tuning uses these bands."


@dataclass(frozen=True)
class ClassifierInfo:
    """What classifying with a land-cover classifier folder needs to know.

    Attributes:
        folder: The classifier folder.
        classes: The class names; index i is class id i in the land-cover map.
        bands: The band names the classifier reads, in order.
        patch_size: The side of the training patches in pixels (the default tile), None when unknown.
        multi_label: True for a multi-label (BigEarthNet-style) classifier.
    """

    folder: Path
    classes: tuple[str, ...]
    bands: tuple[str, ...]
    patch_size: int | None
    multi_label: bool

    def describe(self) -> str:
        """One line for the panel, e.g. ``10 classes: AnnualCrop, Forest, … (+2 more); bands B02, B03, B04; 64 px``."""
        names = ", ".join(self.classes[:LISTED_CLASSES])
        if len(self.classes) > LISTED_CLASSES:
            names += f", … (+{len(self.classes) - LISTED_CLASSES} more)"
        text = f"{len(self.classes)} {'multi-label ' if self.multi_label else ''}classes: {names}"
        text += f"; bands {', '.join(self.bands)}"
        return text + (f"; {self.patch_size} px patches" if self.patch_size else "")


def read_encoder_info(folder: str | Path) -> EncoderInfo:
    """Read and check the ``config.json`` of a pre-trained encoder folder.

    Args:
        folder: A folder written by ``swimdiff pretrain``.

    Returns:
        The encoder's backbone, bands and patch size.

    Raises:
        ValueError: The folder is missing, holds no readable config or weights, or holds another kind of
            model; the message names the folder or file, what is wrong and what to choose instead.
    """
    folder = Path(folder)
    config = _read_config(folder, PRETRAIN_KIND, "a pre-trained encoder", ENCODER_FIX)
    bands = _bands(config, folder, ENCODER_FIX)
    architecture = config.get("architecture")
    architecture = architecture if isinstance(architecture, dict) else {}
    data = config.get("data")
    data = data if isinstance(data, dict) else {}
    patch_size = config.get("patch_size") or data.get("patch_size")
    return EncoderInfo(folder=folder, arch=str(architecture.get("arch", "unknown")), bands=tuple(bands),
                       patch_size=patch_size if isinstance(patch_size, int) else None)


def holds_model(folder: str | Path) -> tuple[bool, bool]:
    """What a pre-training output folder already holds, so that the panel can ask before the worker refuses.

    Args:
        folder: A ``swimdiff pretrain --out`` folder, existing or not.

    Returns:
        ``(model, state)``: a ``config.json``; a resumable training state.
    """
    folder = Path(folder)
    return (folder / CONFIG_FILE).is_file(), (folder / STATE_FILE).is_file()


def pretrained_steps(folder: str | Path) -> int | None:
    """The steps behind the usable pre-trained model in ``folder`` (its provenance), None when there is none.

    Args:
        folder: A ``swimdiff pretrain`` output folder.
    """
    try:
        read_encoder_info(folder)
        config = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    provenance = config.get("provenance")
    steps = provenance.get("steps_done") if isinstance(provenance, dict) else None
    return steps if isinstance(steps, int) else None


def read_classifier_info(folder: str | Path) -> ClassifierInfo:
    """Read and check the ``config.json`` of a land-cover classifier folder.

    Args:
        folder: A folder written by ``swimdiff finetune-classify``.

    Returns:
        The classifier's classes, bands, patch size and labelling.

    Raises:
        ValueError: The folder is missing, holds no readable config or weights, no class names, or another
            kind of model; the message names the folder or file, what is wrong and what to choose instead.
    """
    folder = Path(folder)
    config = _read_config(folder, CLASSIFY_KIND, "a land-cover classifier", CLASSIFIER_FIX)
    classes = config.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes):
        raise ValueError(f"'{folder / CONFIG_FILE}' lists no class names under 'classes'; {CLASSIFIER_FIX}")
    bands = _bands(config, folder, CLASSIFIER_FIX)
    patch_size = config.get("patch_size")
    return ClassifierInfo(folder=folder, classes=tuple(classes), bands=tuple(bands),
                          patch_size=patch_size if isinstance(patch_size, int) else None,
                          multi_label=bool(config.get("multi_label", False)))


def _read_config(folder: Path, kind: str, what: str, fix: str) -> dict:
    """The checked ``config.json`` of a model folder of ``kind`` (weights beside it), else a ValueError."""
    if not folder.is_dir():
        raise ValueError(f"'{folder}' is not a folder; {fix}")
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"'{folder}' holds no {CONFIG_FILE}; {fix}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"'{path}' cannot be read as JSON ({exc}); {fix}") from None
    if not isinstance(config, dict) or "format_version" not in config:
        raise ValueError(f"'{path}' has no format_version, so it is not a SwiMDiff model config; {fix}")
    found = config.get("kind")
    if found != kind:
        raise ValueError(f"'{folder}' holds a {found or 'unknown'} model, not {what} ({kind}); {fix}")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(f"'{folder}' has no {WEIGHTS_FILE} beside its {CONFIG_FILE}; {fix}")
    return config


def _bands(config: dict, folder: Path, fix: str) -> list[str]:
    """The config's band names, else a ValueError."""
    bands = config.get("bands")
    if not isinstance(bands, list) or not bands or not all(isinstance(band, str) for band in bands):
        raise ValueError(f"'{folder / CONFIG_FILE}' lists no band names under 'bands'; {fix}")
    return bands
