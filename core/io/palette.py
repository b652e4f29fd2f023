"""Colours of land-cover classes, as analysts expect to see them on a map.

EuroSAT's ten classes get natural colours (crops yellow, forest green, water blue, built-up red
and grey); the 43 CORINE Land Cover classes of BigEarthNet get the colours of the official CLC
legend; any other class name gets a colour by keyword (forest, water, urban...) or, failing that,
the next colour of a qualitative palette. Colours are unique within one model's classes.
"""

from __future__ import annotations

import colorsys
import itertools
from collections.abc import Iterator, Sequence

RGB = tuple[int, int, int]

EUROSAT_COLORS: dict[str, RGB] = {
    "AnnualCrop": (235, 205, 70), "Forest": (30, 110, 40), "HerbaceousVegetation": (150, 205, 95),
    "Highway": (140, 140, 140), "Industrial": (165, 70, 165), "Pasture": (200, 235, 110),
    "PermanentCrop": (235, 140, 50), "Residential": (215, 40, 40), "River": (60, 145, 230),
    "SeaLake": (20, 60, 160),
}

CORINE_COLORS: dict[str, RGB] = {
    "Continuous urban fabric": (230, 0, 77), "Discontinuous urban fabric": (255, 0, 0),
    "Industrial or commercial units": (204, 77, 242), "Road and rail networks and associated land": (204, 0, 0),
    "Port areas": (230, 204, 204), "Airports": (230, 204, 230), "Mineral extraction sites": (166, 0, 204),
    "Dump sites": (166, 77, 0), "Construction sites": (255, 77, 255), "Green urban areas": (255, 166, 255),
    "Sport and leisure facilities": (255, 230, 255), "Non-irrigated arable land": (255, 255, 168),
    "Permanently irrigated land": (255, 255, 0), "Rice fields": (230, 230, 0), "Vineyards": (230, 128, 0),
    "Fruit trees and berry plantations": (242, 166, 77), "Olive groves": (230, 166, 0), "Pastures": (230, 230, 77),
    "Annual crops associated with permanent crops": (255, 230, 166), "Complex cultivation patterns": (255, 230, 77),
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (230, 204, 77),
    "Agro-forestry areas": (242, 204, 166), "Broad-leaved forest": (128, 255, 0), "Coniferous forest": (0, 166, 0),
    "Mixed forest": (77, 255, 0), "Natural grassland": (204, 242, 77), "Moors and heathland": (166, 255, 128),
    "Sclerophyllous vegetation": (166, 230, 77), "Transitional woodland/shrub": (166, 242, 0),
    "Beaches, dunes, sands": (230, 230, 230), "Bare rock": (204, 204, 204), "Sparsely vegetated areas": (204, 255, 204),
    "Burnt areas": (0, 0, 0), "Inland marshes": (166, 166, 255), "Peatbogs": (77, 77, 255),
    "Salt marshes": (204, 204, 255), "Salines": (230, 230, 255), "Intertidal flats": (166, 166, 230),
    "Water courses": (0, 204, 242), "Water bodies": (128, 242, 230), "Coastal lagoons": (0, 255, 166),
    "Estuaries": (166, 255, 230), "Sea and ocean": (230, 242, 255),
}

#: (keyword in a lower-case class name, colour), first match wins.
KEYWORD_COLORS: tuple[tuple[str, RGB], ...] = (
    ("forest", (30, 120, 40)), ("tree", (60, 150, 60)), ("wood", (60, 150, 60)), ("shrub", (140, 170, 60)),
    ("water", (40, 110, 210)), ("river", (60, 145, 230)), ("lake", (30, 80, 180)), ("sea", (20, 60, 160)),
    ("wetland", (110, 180, 200)), ("marsh", (110, 180, 200)), ("snow", (240, 250, 255)), ("ice", (220, 240, 250)),
    ("urban", (215, 40, 40)), ("residential", (215, 40, 40)), ("building", (190, 30, 30)),
    ("industrial", (165, 70, 165)), ("road", (140, 140, 140)), ("highway", (140, 140, 140)),
    ("crop", (235, 205, 70)), ("arable", (240, 220, 110)), ("grass", (150, 205, 95)), ("pasture", (200, 235, 110)),
    ("bare", (200, 180, 150)), ("sand", (230, 220, 170)), ("cloud", (255, 255, 255)),
)

#: Qualitative fallback colours, in order of use.
QUALITATIVE: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)


def _fallback() -> Iterator[RGB]:
    """The qualitative colours, then endless hues a golden angle apart."""
    yield from QUALITATIVE
    for i in itertools.count():
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.85)
        yield round(r * 255), round(g * 255), round(b * 255)


def _known(name: str) -> RGB | None:
    if name in EUROSAT_COLORS:
        return EUROSAT_COLORS[name]
    if name in CORINE_COLORS:
        return CORINE_COLORS[name]
    lower = name.lower()
    return next((color for keyword, color in KEYWORD_COLORS if keyword in lower), None)


def class_colors(names: Sequence[str]) -> list[RGB]:
    """One distinct colour per class, in class order (see the module docstring for the rules)."""
    used: set[RGB] = set()
    fallback = _fallback()
    colors: list[RGB] = []
    for name in names:
        color = _known(name)
        while color is None or color in used:  # a repeat (two "forest" classes) takes the next free colour
            color = next(fallback)
        used.add(color)
        colors.append(color)
    return colors
