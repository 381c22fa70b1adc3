"""Attribution overlays: a readable grid with horizontal labels and a colour bar that says what colour means."""

import io

import numpy as np
from PIL import Image

import pytest

from seeinpairs.explain.overlay import COLOUR_MEANING, overlay_figure, overlay_image, overlay_png


def _inputs():
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)) for _ in range(2)]
    maps = [rng.random((32, 32)) for _ in range(2)]
    rows = [("paired: integrated gradients", maps), ("paired: attention (answer position)", maps),
            ("single: integrated gradients", [None, maps[1]])]
    mask = np.zeros((32, 32), dtype=bool)
    mask[10:20, 10:20] = True
    return images, rows, ["reference 1", "query"], mask


def test_overlay_is_a_grid_with_horizontal_labels_and_a_colour_bar():
    images, rows, titles, mask = _inputs()
    fig = overlay_figure(images, rows, titles, mask=mask, caption="P1 (gold abnormal)")
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(bars) == 1 and COLOUR_MEANING == bars[0].get_ylabel() and "attribution" in COLOUR_MEANING
    assert len(grid) == len(images) * (1 + len(rows))  # a row per image, a column per map plus the image
    row_labels = [ax.yaxis.label for ax in grid if ax.get_ylabel()]
    assert [t.get_text() for t in row_labels] == titles
    for text in row_labels + [ax.title for ax in grid if ax.get_title()]:
        assert text.get_rotation() == 0
    titles_top = [ax.get_title().replace("\n", " ") for ax in grid if ax.get_title()]
    assert titles_top == ["image"] + [label for label, _ in rows]
    width, height = fig.get_size_inches() * fig.dpi
    assert width >= 700 and width > height  # side by side, each image well over 100 px


def test_overlay_png_is_readable_size():
    images, rows, titles, mask = _inputs()
    png = overlay_png(images, rows, titles, mask=mask)
    width, height = Image.open(io.BytesIO(png)).size
    assert width >= 700 and height >= 300


def test_overlay_image_keeps_the_image_size_and_colours_where_the_map_is_high():
    image = Image.fromarray(np.full((20, 30), 128, dtype=np.uint8))
    values = np.zeros((20, 30))
    values[5:10, 5:10] = 1.0
    shown = np.asarray(overlay_image(image, values)).astype(int)
    assert shown.shape == (20, 30, 3)
    # the high region takes the colour map's bright end (inferno: pale yellow), the rest its dark end
    assert shown[7, 7, 0] > 180 and shown[7, 7, 0] - shown[7, 7, 2] > 30
    assert shown[15, 20].max() < 120
    with pytest.raises(ValueError, match="does not match"):
        overlay_image(image, np.zeros((10, 10)))
