"""Draw the plugin icon: two overlapping image tiles (t1, t2) with a highlighted change patch.

Run with a Python that has Pillow (Debian's ``/usr/bin/python3`` does)::

    /usr/bin/python3 resources/make_icon.py

It writes ``resources/icon.png`` (64x64 RGBA) next to this script. The drawing is made at 4x the
size and scaled down, which gives smooth edges without an anti-aliasing drawing API.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
SCALE = 4  # supersampling factor

T1_FILL = (46, 125, 110, 255)  # back tile, earlier date: muted teal
T1_EDGE = (28, 84, 73, 255)
T2_FILL = (76, 175, 140, 255)  # front tile, later date: brighter green
T2_EDGE = (33, 97, 78, 255)
GRID = (255, 255, 255, 70)  # faint pixel grid on the front tile
CHANGE_FILL = (255, 87, 34, 255)  # the detected change: orange-red
CHANGE_EDGE = (255, 255, 255, 255)


def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """Scale a box given in 64-px icon units to the supersampled canvas."""
    return (round(x0 * SCALE), round(y0 * SCALE), round(x1 * SCALE), round(y1 * SCALE))


def draw_icon(size: int = SIZE) -> Image.Image:
    """Draw the icon.

    Args:
        size: Edge length of the returned square image in pixels.

    Returns:
        An RGBA image of ``size`` x ``size`` pixels.
    """
    canvas = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    radius = 5 * SCALE
    edge = 2 * SCALE

    # t1: the back tile, top left.
    draw.rounded_rectangle(_box(3, 3, 43, 43), radius, fill=T1_FILL, outline=T1_EDGE, width=edge)

    # t2: the front tile, bottom right, with a faint 4x4 grid of "pixels".
    draw.rounded_rectangle(_box(19, 19, 61, 61), radius, fill=T2_FILL, outline=T2_EDGE, width=edge)
    for i in range(1, 4):
        offset = 19 + i * 42 / 4
        draw.line(_box(offset, 22, offset, 58), fill=GRID, width=SCALE)
        draw.line(_box(22, offset, 58, offset), fill=GRID, width=SCALE)

    # The change: a bright patch on t2, outlined in white so it reads on both tiles' colours.
    draw.rounded_rectangle(
        _box(36, 36, 56, 56), 3 * SCALE, fill=CHANGE_FILL, outline=CHANGE_EDGE, width=round(2.5 * SCALE)
    )

    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    """Write ``icon.png`` beside this script."""
    out = Path(__file__).resolve().with_name("icon.png")
    draw_icon().save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
