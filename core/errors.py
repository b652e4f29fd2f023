"""User-facing errors.

Every subclass of :class:`SwimDiffError` carries a message that names the file or argument, the
offending value, and the fix. The CLI prints it (or sends it as an ``error`` event) and exits
non-zero; anything that is not a ``SwimDiffError`` is a bug and is logged with its traceback.
"""


class SwimDiffError(Exception):
    """Base class of every error a user can fix by changing the input."""

    @property
    def kind(self) -> str:
        """The class name, as sent in ``{"event": "error", "kind": ...}``."""
        return type(self).__name__


class RasterReadError(SwimDiffError):
    """A file is missing, not a raster, or unreadable."""


class BandMismatchError(SwimDiffError):
    """Bands are missing, or differ between dates or from what a model expects."""


class GridMismatchError(SwimDiffError):
    """Dates of a scene do not share a CRS or do not cover the same extent."""


class NoDataError(SwimDiffError):
    """A raster (or every usable window of it) holds only nodata."""


class PatchSizeError(SwimDiffError):
    """The requested patch is larger than a raster."""


class CheckpointFormatError(SwimDiffError):
    """A model folder or training state is missing, foreign or corrupted."""


class ResumeError(SwimDiffError):
    """``--resume`` was asked for but cannot be honoured."""


class OutputError(SwimDiffError):
    """The output location cannot be used."""


class Cancelled(SwimDiffError):
    """The user asked the job to stop; nothing was written."""


class ConfigError(SwimDiffError, ValueError):
    """A configuration value is out of range; the message says the allowed values."""


class DatasetError(SwimDiffError):
    """A folder of labelled patches is missing, empty, or its labels are inconsistent."""


class ValueScaleError(SwimDiffError):
    """A raster's values are on another scale than the model's (8-bit vs reflectance), or on none it knows."""
