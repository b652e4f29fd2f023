"""The change model shipped with the plugin, used when no ``--model`` is given.

It lives in ``resources/models/oscd-change`` (fp16 safetensors + config.json with how it was
trained and its validation and test scores); ``make default-model`` re-creates it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointFormatError

DEFAULT_CHANGE_MODEL = Path(__file__).resolve().parents[2] / "resources" / "models" / "oscd-change"


def change_model_dir(model: str | Path | None) -> Path:
    """``model`` when given, else the shipped default change model.

    Raises:
        CheckpointFormatError: no model given and the default one is missing.
    """
    if model:
        return Path(model)
    if (DEFAULT_CHANGE_MODEL / "config.json").is_file():
        return DEFAULT_CHANGE_MODEL
    raise CheckpointFormatError(f"no --model given and the default model '{DEFAULT_CHANGE_MODEL}' is missing; "
                                "re-create it with 'make default-model' or pass --model DIR")
