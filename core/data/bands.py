"""Sentinel-2 band names and the order models use.

Pure functions on strings: which band a file suffix or a band description names, and the
canonical order bands are stacked in when the user does not declare one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import BandMismatchError

SENTINEL2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)
# L2A products drop the cirrus band B10: 12 bands in this order (Boadella, Jaca, BigEarthNet).
SENTINEL2_L2A_BANDS: tuple[str, ...] = tuple(b for b in SENTINEL2_BANDS if b != "B10")

_SUFFIX = re.compile(r"_(B(?:0?[1-9]|1[0-2]|8A))\.tiff?$", re.IGNORECASE)
_NAME = re.compile(r"^(?:B|band\s*)?(0?[1-9]|1[0-2]|8A)$", re.IGNORECASE)


def normalise_band_name(name: str) -> str:
    """Return the canonical spelling of a band name (``b2`` -> ``B02``, ``b8a`` -> ``B8A``).

    Names that are not Sentinel-2 bands are returned stripped but otherwise unchanged.
    """
    name = name.strip()
    match = _NAME.match(name)
    if match is None or not name.upper().startswith("B"):
        return name
    number = match.group(1).upper()
    return "B8A" if number == "8A" else f"B{int(number):02d}"


def band_from_filename(filename: str) -> str | None:
    """The band a Sentinel-2/OSCD file name ends with (``..._B8A.tif`` -> ``B8A``), else None."""
    match = _SUFFIX.search(filename)
    return normalise_band_name(match.group(1)) if match else None


def canonical_order(names: Iterable[str]) -> list[str]:
    """Sort band names: Sentinel-2 bands in sensor order first, then others by natural order."""

    def key(name: str) -> tuple[int, int, str]:
        if name in SENTINEL2_BANDS:
            return (0, SENTINEL2_BANDS.index(name), name)
        digits = re.findall(r"\d+", name)
        return (1, int(digits[-1]) if digits else 0, name)

    return sorted(set(names), key=key)


def parse_band_list(text: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``"B02,B03, b4"`` (or a list) into canonical names, rejecting duplicates."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(normalise_band_name(t) for t in items if t.strip())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BandMismatchError(f"--bands lists {duplicates} more than once; give each band once")
    return names
