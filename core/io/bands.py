"""Sentinel-2 band names: which band a description, file name or user's word names, and stacking order.

Pure functions on strings (and one that reads a VRT's XML: which file a band passes on). The rules, in the
words of issue 11 ("nothing silently wrong"):

* A raster's own band order is never changed in meaning: bands travel with their names, and only
  Sentinel-2 band ids are stacked in sensor order (a name says which band it is, so nothing moves
  between names); every other name keeps the position the user gave it ("R, G, B" is never
  sorted into "B, G, R").
* Names are recognised where they are unambiguous: ``B01``..``B12``/``B8A`` (only Sentinel-2
  writes zero-padded ids and an 8A band), colour names (``R``, ``Red``, ``NIR``...) and STAC
  ``eo:common_name`` values (``red`` -> B04, ``nir08`` -> B8A, ``swir16`` -> B11...).
  ``rededge`` (B05, B06 or B07) stays as given.
* Short ids (``B4``) are Sentinel-2 only when the sensor is explicit (another band is zero-padded
  or ``B8A``, or the file's name or metadata says Sentinel-2): Landsat writes ``B4`` too, and its
  ``B5`` is near infrared, not Sentinel-2's red edge B05. Landsat Collection 2 names (``SR_B4``)
  and Landsat product files (``LC08_...``) are never taken as Sentinel-2.
* Positional labels (``Band 1``, ``layer_2``) name nothing: such bands are unnamed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath

from ..errors import BandMismatchError

SENTINEL2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)
# L2A products drop the cirrus band B10: 12 bands in this order (Boadella, Jaca, BigEarthNet).
SENTINEL2_L2A_BANDS: tuple[str, ...] = tuple(b for b in SENTINEL2_BANDS if b != "B10")
BAND_PRESETS: dict[str, tuple[str, ...]] = {"l1c": SENTINEL2_BANDS, "l2a": SENTINEL2_L2A_BANDS}
ASSUME_FIX = ("--assume-band-names l2a (B01..B12 without B10), l1c (all 13) or the names in file order, "
              "e.g. B02,B03,B04,B08")

# STAC eo:common_name values, colour names and Earth Search's Sentinel-2 asset keys -> Sentinel-2 band.
COMMON_NAMES: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "b": "B02", "green": "B03", "g": "B03", "red": "B04", "r": "B04",
    "rededge1": "B05", "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
    "cirrus": "B10", "swir16": "B11", "swir22": "B12", "swir1": "B11", "swir2": "B12",
}

_SUFFIX = re.compile(r"_(B(?:0[1-9]|1[0-2]|8A))(?:_[126]0m)?\.(?:tiff?|jp2)$", re.IGNORECASE)
_LANDSAT_FILE = re.compile(r"(?:^|[_/])L[COTEM]0\d_|_(?:SR|ST)_B\d+\.", re.IGNORECASE)
_SENTINEL2_TEXT = re.compile(r"sentinel[-_ ]?2|(?:^|[^a-z0-9])S2[ABC]?_|\bMSIL[12]", re.IGNORECASE)
_S2_ID = re.compile(r"^B(0[1-9]|1[0-2]|8A)$", re.IGNORECASE)
_SHORT_ID = re.compile(r"^B([1-9]|1[0-2])$", re.IGNORECASE)
_LANDSAT_NAME = re.compile(r"^(?:SR|ST|QA)_B\d+$", re.IGNORECASE)
_POSITIONAL = re.compile(r"^(?:band|layer|channel)[\s_-]*\d+$", re.IGNORECASE)
_USER_NAME = re.compile(r"^(?:B|band\s*)?(0?[1-9]|1[0-2]|8A)$", re.IGNORECASE)


def normalise_band_name(name: str) -> str:
    """Canonical spelling of a band name the user typed (``b2`` -> ``B02``, ``red`` -> ``B04``).

    For names typed on the command line (``--bands``, ``--assume-band-names``), where this tool's
    convention is Sentinel-2. Names that are no Sentinel-2 band are returned stripped.
    """
    name = name.strip()
    if name.lower() in COMMON_NAMES:
        return COMMON_NAMES[name.lower()]
    match = _USER_NAME.match(name)
    if match is None or not name.upper().startswith("B"):
        return name
    number = match.group(1).upper()
    return "B8A" if number == "8A" else f"B{int(number):02d}"


def is_positional(name: str) -> bool:
    """True for labels that only say a band's position (``band3``, ``Band 3``, ``layer_3``)."""
    return bool(_POSITIONAL.match(name.strip()))


def mentions_sentinel2(text: str) -> bool:
    """True when a file name or metadata value says Sentinel-2 (``S2A_MSIL1C...``, ``Sentinel-2B``)."""
    return bool(_SENTINEL2_TEXT.search(text))


def band_from_filename(filename: str) -> str | None:
    """The Sentinel-2 band a file name ends with (``..._B8A.tif``, ``..._B04_10m.jp2``), else None.

    Only zero-padded ids and B8A count (``_B4.TIF`` is Landsat's style), and Landsat product files
    (``LC08_...``, ``..._SR_B4.TIF``) never do.
    """
    match = _SUFFIX.search(filename)
    if match is None or _LANDSAT_FILE.search(filename):
        return None
    return normalise_band_name(match.group(1))


def band_file_prefix(filename: str) -> str | None:
    """What a band file's name holds before its ``_Bxx`` suffix (the name its sibling bands share)."""
    match = _SUFFIX.search(filename)
    return filename[:match.start()] if match and band_from_filename(filename) else None


def names_from_descriptions(descriptions: Sequence[str | None],
                            sentinel2: bool = False) -> tuple[list[str | None], list[str]]:
    """Band names from a raster's band descriptions, by the rules of this module.

    Args:
        descriptions: one description per band (None or empty when the band has none).
        sentinel2: the file's name or metadata says Sentinel-2 (makes ``B4`` mean B04).

    Returns:
        ``(names, ambiguous)``: names[i] is the band's name, or None when the band is unnamed
        (no description, or a positional label); ``ambiguous`` lists descriptions kept as they are
        because they may be Landsat or Sentinel-2 numbers (``B4`` without evidence, ``SR_B4``).
    """
    texts = [(d or "").strip() for d in descriptions]
    evidence = sentinel2 or any(_S2_ID.match(t) and t.upper() not in ("B10", "B11", "B12") for t in texts)
    short = any(_SHORT_ID.match(t) and not _S2_ID.match(t) for t in texts)
    names: list[str | None] = []
    ambiguous: list[str] = []
    for text in texts:
        if not text or is_positional(text):
            names.append(None)
        elif text.lower() in COMMON_NAMES:
            names.append(COMMON_NAMES[text.lower()])
        elif _LANDSAT_NAME.match(text) or ((_S2_ID.match(text) or _SHORT_ID.match(text)) and short and not evidence):
            names.append(text)  # Landsat, or numbers of an unknown sensor: not Sentinel-2's bands
            ambiguous.append(text)
        elif _S2_ID.match(text) or _SHORT_ID.match(text):
            names.append(normalise_band_name(text))
        else:
            names.append(text)
    return names, ambiguous


def vrt_band_names(xml_text: str) -> list[str | None]:
    """Names of a VRT's bands from their source files (what ``gdalbuildvrt -separate *_Bxx.tif`` writes).

    A band is named when all its sources are one single-band file whose name ends with a
    Sentinel-2 band suffix (see :func:`band_from_filename`); otherwise its entry is None. Text
    that is not VRT XML gives an empty list.
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return []
    names: dict[int, str | None] = {}
    for position, band in enumerate(root.iter("VRTRasterBand"), 1):
        number = band.get("band", str(position))
        index = int(number) if number.isdigit() else position
        sources = {(s.findtext("SourceFilename") or "", s.findtext("SourceBand") or "1")
                   for s in band if s.find("SourceFilename") is not None}
        name = None
        if len(sources) == 1:
            filename, source_band = next(iter(sources))
            if source_band.strip() == "1":
                name = band_from_filename(PurePath(filename.strip().replace("\\", "/")).name)
        names[index] = name
    return [names.get(i) for i in range(1, max(names, default=0) + 1)]


def vrt_band_source(vrt: Path, index: int) -> tuple[Path, int] | None:
    """The one (file, band) that band ``index`` of the VRT file ``vrt`` copies, or None (several sources, an
    unreadable VRT)."""
    try:
        root = ET.parse(vrt).getroot()
    except (OSError, ET.ParseError):
        return None
    for position, band in enumerate(root.iter("VRTRasterBand"), 1):
        if band.get("band", str(position)) != str(index):
            continue
        sources = [(source, name) for source in band if (name := source.find("SourceFilename")) is not None]
        if len(sources) != 1:
            return None
        source, name = sources[0]
        filename = Path((name.text or "").strip())
        if name.get("relativeToVRT") == "1":
            filename = vrt.parent / filename
        number = (source.findtext("SourceBand") or "1").strip()  # "mask,1" for a mask band
        return (filename.resolve(), int(number)) if number.isdigit() else None
    return None


def canonical_order(names: Iterable[str]) -> list[str]:
    """Stacking order: Sentinel-2 bands in sensor order first, then every other name in the given order.

    Sorting Sentinel-2 ids moves no data between names (each name says which band it is), so two
    rasters naming the same bands in different orders give models the same channel order; any
    other name (``R``, ``NDVI``, ``band3``) keeps the user's position.
    """
    unique = list(dict.fromkeys(names))
    known = sorted((n for n in unique if n in SENTINEL2_BANDS), key=SENTINEL2_BANDS.index)
    return known + [n for n in unique if n not in SENTINEL2_BANDS]


def parse_band_list(text: str | Sequence[str], option: str = "--bands") -> tuple[str, ...]:
    """Parse ``"B02,B03, b4"`` (or a list) into canonical names, rejecting duplicates."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(normalise_band_name(t) for t in items if t.strip())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BandMismatchError(f"{option} lists {duplicates} more than once; give each band once")
    return names


def assumed_band_names(text: str) -> tuple[str, ...]:
    """``--assume-band-names``: ``l2a`` (12 bands, no B10), ``l1c`` (13) or a comma-separated list in file order."""
    preset = BAND_PRESETS.get(text.strip().lower())
    if preset is not None:
        return preset
    return parse_band_list(text, "--assume-band-names") if text.strip() else ()
