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
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: What an invalid folder message ends with: how to fix it.
ENCODER_FIX = ("choose a folder written by 'swimdiff pretrain' (Pre-train tab), or leave Encoder empty for random "
               "weights")


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
    if not folder.is_dir():
        raise ValueError(f"'{folder}' is not a folder; {ENCODER_FIX}")
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"'{folder}' holds no {CONFIG_FILE}; {ENCODER_FIX}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"'{path}' cannot be read as JSON ({exc}); {ENCODER_FIX}") from None
    if not isinstance(config, dict) or "format_version" not in config:
        raise ValueError(f"'{path}' has no format_version, so it is not a SwiMDiff model config; {ENCODER_FIX}")
    kind = config.get("kind")
    if kind != PRETRAIN_KIND:
        raise ValueError(f"'{folder}' holds a {kind or 'unknown'} model, not a pre-trained encoder "
                         f"({PRETRAIN_KIND}); {ENCODER_FIX}")
    bands = config.get("bands")
    if not isinstance(bands, list) or not bands or not all(isinstance(band, str) for band in bands):
        raise ValueError(f"'{path}' lists no band names under 'bands'; {ENCODER_FIX}")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(f"'{folder}' has no {WEIGHTS_FILE} beside its {CONFIG_FILE}; {ENCODER_FIX}")
    architecture = config.get("architecture")
    architecture = architecture if isinstance(architecture, dict) else {}
    data = config.get("data")
    data = data if isinstance(data, dict) else {}
    patch_size = config.get("patch_size") or data.get("patch_size")
    return EncoderInfo(folder=folder, arch=str(architecture.get("arch", "unknown")), bands=tuple(bands),
                       patch_size=patch_size if isinstance(patch_size, int) else None)
