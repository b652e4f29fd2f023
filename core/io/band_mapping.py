"""Matching the bands a pre-trained encoder was trained on with the bands a data set has.

The classifier's input is the encoder's bands that the data also has, in the encoder's order;
its first convolution keeps only those input channels (see
:meth:`~core.models.classifier.Classifier.load_pretrained_encoder`). Because normalised inputs are
centred, dropping a channel gives the same output as feeding that channel its training mean (0), so
RGB data on a 12- or 13-band encoder is served exactly as "missing bands at their mean", at the
cost of three input channels instead of thirteen, and the saved model asks a raster only for the
bands it really uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import BandMismatchError


@dataclass(frozen=True)
class BandMapping:
    """Which encoder input channels the data feeds, and from which data channels.

    Attributes:
        bands: the model's input bands, in the encoder's order.
        encoder_channels: index of each of ``bands`` among the encoder's input channels.
        data_channels: index of each of ``bands`` among the data's channels.
        missing: encoder bands the data lacks (their first-layer weights are dropped).
        dropped: data bands the encoder does not know (not used).
    """

    bands: tuple[str, ...]
    encoder_channels: tuple[int, ...]
    data_channels: tuple[int, ...]
    missing: tuple[str, ...]
    dropped: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """True when the data has every encoder band."""
        return not self.missing


def identity_mapping(data_bands: Sequence[str]) -> BandMapping:
    """All data bands, in data order (a model without a pre-trained encoder)."""
    index = tuple(range(len(data_bands)))
    return BandMapping(tuple(data_bands), index, index, (), ())


def map_bands(encoder_bands: Sequence[str], data_bands: Sequence[str], encoder: str = "--encoder",
              data: str = "--data") -> BandMapping:
    """Map the data's bands onto the encoder's by name.

    Args:
        encoder_bands: the encoder's input bands in order (its config.json ``bands``).
        data_bands: the data's bands in order.
        encoder: how to name the encoder in messages (its folder).
        data: how to name the data in messages (its folder).

    Raises:
        BandMismatchError: no data band is one of the encoder's bands.
    """
    encoder_bands, data_bands = list(encoder_bands), list(data_bands)
    shared = [b for b in encoder_bands if b in data_bands]
    if not shared:
        raise BandMismatchError(
            f"encoder '{encoder}' was trained on bands {', '.join(encoder_bands)} but the patches in '{data}' have "
            f"{', '.join(data_bands)}: no band matches. Name the patches' bands (GeoTIFF band descriptions such as "
            "B02, B03, B04), use an encoder pre-trained on these bands, or train without --encoder")
    return BandMapping(
        bands=tuple(shared),
        encoder_channels=tuple(encoder_bands.index(b) for b in shared),
        data_channels=tuple(data_bands.index(b) for b in shared),
        missing=tuple(b for b in encoder_bands if b not in data_bands),
        dropped=tuple(b for b in data_bands if b not in encoder_bands),
    )
