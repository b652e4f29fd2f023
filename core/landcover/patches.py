"""Labelled image patches for land-cover classification, read whole into memory.

Two folder layouts are recognised (:func:`load_patches` tells them apart):

* **EuroSAT**: ``<data>/<Class>/<image>``, one folder per class holding JPG/PNG RGB images (8-bit
  display values, bands named B04, B03, B02) or multi-band GeoTIFFs (bands named by their
  descriptions, else by count: 13 = EuroSAT's L1C order B01..B12 then B8A, 12 = L2A without B10,
  3 = R, G, B). Single-label: the folder name is the class.
* **BigEarthNet**: ``<data>/<patch>/<patch>_Bxx.tif`` (one GeoTIFF per band at 10, 20 or 60 m; all are
  resampled bilinearly onto the finest band's grid) and ``<patch>_labels_metadata.json`` whose
  ``labels`` list names CORINE land-cover classes of the BigEarthNet nomenclature. Multi-label.

Samples are small (64-120 px), so every patch is read once into one array; bands come in the
canonical Sentinel-2 order of :func:`~core.io.bands.canonical_order`.
"""

from __future__ import annotations

import difflib
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from ..errors import BandMismatchError, DatasetError, RasterReadError
from ..io.bands import SENTINEL2_L2A_BANDS, band_from_filename
from ..io.raster import StackReader, open_date

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
EIGHT_BIT_SUFFIXES = (".jpg", ".jpeg", ".png")
RGB_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
# EuroSAT's multi-spectral GeoTIFFs store B8A last (checked on ../shared/data: band 13 follows B08).
EUROSAT_MS_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)
ALPHA = "alpha"
LABELS_SUFFIX = "_labels_metadata.json"
# The 43 CORINE Land Cover classes of BigEarthNet (v1), in nomenclature order.
BIGEARTHNET_CLASSES: tuple[str, ...] = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
    "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities",
    "Non-irrigated arable land", "Permanently irrigated land", "Rice fields", "Vineyards",
    "Fruit trees and berry plantations", "Olive groves", "Pastures", "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest", "Natural grassland",
    "Moors and heathland", "Sclerophyllous vegetation", "Transitional woodland/shrub", "Beaches, dunes, sands",
    "Bare rock", "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes",
    "Salines", "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons", "Estuaries",
    "Sea and ocean",
)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class PatchSet:
    """Labelled patches held in memory.

    Attributes:
        x: pixel values, float32 (N, C, H, W), invalid pixels 0.
        valid: bool (N, H, W), False where a band is nodata or NaN.
        y: class index per patch, int64 (N,) (single-label), or multi-hot float32 (N, K) (multi-label).
        bands: band names of the C channels.
        classes: the K class names; index i of ``y`` refers to ``classes[i]``.
        multi_label: True for BigEarthNet-style labels.
        layout: "eurosat" or "bigearthnet".
        sources: the file or folder each patch came from.
        eight_bit: values are 8-bit display values (JPG/PNG), not reflectance.
    """

    x: np.ndarray
    valid: np.ndarray
    y: np.ndarray
    bands: tuple[str, ...]
    classes: tuple[str, ...]
    multi_label: bool
    layout: str
    sources: tuple[str, ...]
    eight_bit: bool

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def patch_size(self) -> int:
        return int(self.x.shape[-1])

    def class_counts(self) -> np.ndarray:
        """Patches per class, int64 (K,)."""
        if self.multi_label:
            return self.y.sum(axis=0).astype(np.int64)
        return np.bincount(self.y, minlength=len(self.classes)).astype(np.int64)


def band_names_by_count(count: int, suffix: str) -> tuple[str, ...]:
    """Names for the bands of an image whose band descriptions do not name them (empty if unknown)."""
    if suffix in EIGHT_BIT_SUFFIXES:
        return {3: RGB_BANDS, 4: (*RGB_BANDS, ALPHA)}.get(count, ())
    return {13: EUROSAT_MS_BANDS, 12: SENTINEL2_L2A_BANDS, 3: RGB_BANDS}.get(count, ())


def _unreadable(path: Path, error: Exception) -> RasterReadError:
    return RasterReadError(f"'{path}' is not a readable image ({error}); it may be truncated or corrupted: "
                           "replace it or remove it from the data folder")


def _read_stack(path: Path, assume: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read a raster file or ``*_Bxx.tif`` folder on its finest grid: (C, H, W), (H, W), band names.

    Raises:
        RasterReadError: the file (or a band file) cannot be opened or decoded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # JPG/PNG carry no georeferencing
        date = open_date(path, assume)
        bands = tuple(b for b in date.band_names if b != ALPHA)
        reader = StackReader(date, date.grid, bands)
        try:
            x, valid = reader.read_all()
        except (RasterioError, OSError) as error:  # a header that opens but pixels that do not decode
            raise _unreadable(path, error) from error
        finally:
            reader.close()
    return x, valid, bands


def _image_band_names(path: Path) -> tuple[str, ...]:
    """Names for an image's bands from its band count (empty if unknown).

    Raises:
        RasterReadError: the file is not a readable image.
    """
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as ds:
                return band_names_by_count(ds.count, path.suffix.lower())
        except (RasterioError, OSError) as error:
            raise _unreadable(path, error) from error


def _stack(items: list[tuple[Path, np.ndarray, np.ndarray, tuple[str, ...]]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-patch arrays, refusing mixed band lists or sizes with the two files that differ."""
    first_path, first_x, _, first_bands = items[0]
    for path, x, _, bands in items[1:]:
        if bands != first_bands:
            raise BandMismatchError(
                f"'{path}' has {len(bands)} bands ({', '.join(bands)}) but '{first_path}' has {len(first_bands)} "
                f"({', '.join(first_bands)}); every patch needs the same bands: remove or convert the odd ones")
        if x.shape[1:] != first_x.shape[1:]:
            raise DatasetError(
                f"'{path}' is {x.shape[2]}x{x.shape[1]} pixels but '{first_path}' is {first_x.shape[2]}x"
                f"{first_x.shape[1]}; every patch must have the same size: crop or resample the odd ones")
    return np.stack([i[1] for i in items]), np.stack([i[2] for i in items])  # (N, C, H, W), (N, H, W)


def _children(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_bigearthnet_patch(folder: Path) -> bool:
    return any(p.name.endswith(LABELS_SUFFIX) or band_from_filename(p.name) for p in folder.iterdir())


def detect_layout(root: Path) -> str:
    """"eurosat" or "bigearthnet" for a data folder.

    Raises:
        DatasetError: the folder is missing or holds no sub-folders.
    """
    if not root.is_dir():
        raise DatasetError(f"--data '{root}' is not a folder; give a folder of class folders (EuroSAT layout) "
                           "or of BigEarthNet patch folders")
    children = _children(root)
    if not children:
        raise DatasetError(
            f"--data '{root}' holds no sub-folders; give one folder per class with images in it "
            "(EuroSAT layout: <Class>/*.jpg|*.png|*.tif) or one folder per patch "
            "(BigEarthNet layout: <patch>/<patch>_B02.tif ... and <patch>_labels_metadata.json)")
    return "bigearthnet" if any(_is_bigearthnet_patch(c) for c in children) else "eurosat"


def load_patches(root: str | Path, progress: Progress | None = None) -> PatchSet:
    """Read every labelled patch under ``root`` (EuroSAT or BigEarthNet layout, see the module doc).

    Raises:
        DatasetError: empty or missing folders, missing or unknown labels, patches of different sizes.
        BandMismatchError: patches with different bands, or images whose bands cannot be named.
        RasterReadError: a file that is not a readable raster.
    """
    root = Path(root)
    layout = detect_layout(root)
    report = progress or (lambda fraction, message: None)
    patches = load_bigearthnet(root, report) if layout == "bigearthnet" else load_eurosat(root, report)
    counts = ", ".join(f"{name} {n}" for name, n in zip(patches.classes, patches.class_counts()))
    logger.info("read %d %s patches of %dx%d px with bands %s from '%s' (%s)", len(patches), layout,
                patches.patch_size, patches.patch_size, ",".join(patches.bands), root, counts)
    return patches


def load_eurosat(root: Path, report: Progress) -> PatchSet:
    """Single-label patches from one folder per class (see the module doc)."""
    classes = _children(root)
    files: list[tuple[int, Path]] = []
    for index, folder in enumerate(classes):
        images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"class folder '{folder}' holds no images (*.jpg, *.png, *.tif); add images of "
                               f"class '{folder.name}' or remove the folder")
        files += [(index, p) for p in images]
    if len(classes) < 2:
        raise DatasetError(f"--data '{root}' has only one class folder ('{classes[0].name}'); classification needs "
                           "at least two classes, one folder each")
    suffixes = {p.suffix.lower() in EIGHT_BIT_SUFFIXES for _, p in files}
    if len(suffixes) > 1:
        raise BandMismatchError(f"--data '{root}' mixes 8-bit images (JPG/PNG) with GeoTIFFs; their values are "
                                "not comparable: use one kind of image")
    items = []
    for i, (_, path) in enumerate(files):
        items.append((path, *_read_stack(path, _image_band_names(path))))
        if i % 50 == 0 or i == len(files) - 1:
            report(0.1 * (i + 1) / len(files), f"reading images {i + 1}/{len(files)}")
    x, valid = _stack(items)
    y = np.array([index for index, _ in files], dtype=np.int64)  # (N,)
    return PatchSet(x=x, valid=valid, y=y, bands=items[0][3], classes=tuple(c.name for c in classes),
                    multi_label=False, layout="eurosat", sources=tuple(str(p) for _, p in files),
                    eight_bit=suffixes == {True})


def read_labels(folder: Path) -> list[str]:
    """The ``labels`` list of a BigEarthNet patch folder's ``*_labels_metadata.json``.

    Raises:
        DatasetError: no labels file, unreadable JSON, no or empty ``labels``, unknown class names.
    """
    found = sorted(folder.glob(f"*{LABELS_SUFFIX}"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise DatasetError(f"patch folder '{folder}' has {what} *{LABELS_SUFFIX} files; every BigEarthNet patch "
                           "folder needs exactly one, with a 'labels' list of land-cover class names")
    path = found[0]
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"'{path}' is not valid JSON ({error}); fix or replace the labels file") from error
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(n, str) for n in labels):
        raise DatasetError(f"'{path}' has no non-empty 'labels' list of class names (got {labels!r}); "
                           "write the patch's land-cover classes there")
    unknown = [n for n in labels if n not in BIGEARTHNET_CLASSES]
    if unknown:
        hints = [difflib.get_close_matches(n, BIGEARTHNET_CLASSES, n=1) for n in unknown]
        hint = "; ".join(f"'{n}' -> did you mean '{h[0]}'?" for n, h in zip(unknown, hints) if h)
        raise DatasetError(f"'{path}' names unknown land-cover classes {unknown}; use the 43 BigEarthNet (CORINE) "
                           f"class names, e.g. 'Pastures' or 'Coniferous forest'{'. ' + hint if hint else ''}")
    return labels


def load_bigearthnet(root: Path, report: Progress) -> PatchSet:
    """Multi-label patches from one folder of ``*_Bxx.tif`` bands + labels JSON each (see the module doc)."""
    folders = _children(root)
    items, labels = [], []
    for i, folder in enumerate(folders):
        if not any(band_from_filename(p.name) for p in folder.iterdir()):
            raise DatasetError(f"patch folder '{folder}' holds no band files named like *_B02.tif; every "
                               "BigEarthNet patch folder needs its bands and a labels file")
        labels.append(read_labels(folder))
        items.append((folder, *_read_stack(folder)))
        report(0.1 * (i + 1) / len(folders), f"reading patches {i + 1}/{len(folders)}")
    x, valid = _stack(items)
    present = set().union(*labels)
    classes = tuple(c for c in BIGEARTHNET_CLASSES if c in present)
    y = np.zeros((len(folders), len(classes)), dtype=np.float32)  # (N, K)
    for n, names in enumerate(labels):
        y[n, [classes.index(name) for name in names]] = 1.0
    return PatchSet(x=x, valid=valid, y=y, bands=items[0][3], classes=classes, multi_label=True,
                    layout="bigearthnet", sources=tuple(str(f) for f in folders), eight_bit=False)
