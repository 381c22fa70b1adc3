"""Attribution overlays: every image of a prompt with its maps, in a grid a reader can read, as PNG bytes."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

METHOD_TITLES = {"grad_x_input": "gradient x input", "integrated_gradients": "integrated gradients",
                 "attention": "attention (answer position)", "rollout": "attention rollout"}
#: what the colour of a map means, printed on the colour bar
COLOUR_MEANING = "|attribution|, scaled 0-1 within each image"
CMAP = "inferno"
_CELL = 1.7  # inches per image at 100 dpi: about 170 px, large enough to see a lesion outline


def _normalised(values: np.ndarray) -> np.ndarray:
    """Absolute values stretched to 0..1 per image, so that near-uniform maps (attention) still show their shape."""
    magnitude = np.abs(np.nan_to_num(values))
    low, high = magnitude.min(), magnitude.max()
    return (magnitude - low) / (high - low) if high > low else np.zeros_like(magnitude)


def overlay_figure(images: Sequence[Image.Image], rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
                   titles: Sequence[str], mask: np.ndarray | None = None, caption: str | None = None) -> Figure:
    """The overlay grid as a figure: one row per image (references, then the query), one column per map.

    The first column is the image itself; each (label, maps) of ``rows`` adds a column with each map
    over its image. A ``None`` map leaves its cell blank (a single-image model has no references).
    Maps are absolute values stretched to the full colour range per image (compare shapes within a
    cell, not intensities across cells), which the colour bar says; ``mask`` outlines the lesion on
    the last image. All labels are horizontal.
    """
    n_rows, n_cols = len(images), 1 + len(rows)
    fig = Figure(figsize=(_CELL * n_cols + 2.2, _CELL * n_rows + 1.3), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # its own canvas: no pyplot state
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    grey = [np.asarray(image.convert("L"), dtype=np.float32) / 255.0 for image in images]
    columns = [("image", [None] * n_rows)] + list(rows)
    for col, (label, maps) in enumerate(columns):
        axes[0, col].set_title(textwrap.fill(label, width=18), fontsize=9)
        for row, image in enumerate(grey):
            ax = axes[row, col]
            values = maps[row] if col else None
            if col and values is None:
                ax.set_facecolor("#f4f4f4")
                ax.text(0.5, 0.5, "not shown\nto this model", ha="center", va="center", fontsize=8,
                        color="#777", transform=ax.transAxes)
            else:
                ax.imshow(image, cmap="gray", vmin=0, vmax=1)
                if values is not None:
                    ax.imshow(_normalised(values), cmap=CMAP, alpha=0.55, vmin=0, vmax=1)
                if mask is not None and mask.any() and row == n_rows - 1:
                    ax.contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
    for row, title in enumerate(titles):
        axes[row, 0].set_ylabel(title, fontsize=9, rotation=0, ha="right", va="center", labelpad=6)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=CMAP), ax=axes, shrink=0.8, fraction=0.04, pad=0.02)
    bar.set_label(COLOUR_MEANING, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if caption:
        fig.suptitle(textwrap.fill(caption, width=max(40, 16 * n_cols)), fontsize=9)
    return fig


def overlay_png(images: Sequence[Image.Image], rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
                titles: Sequence[str], mask: np.ndarray | None = None, caption: str | None = None) -> bytes:
    """:func:`overlay_figure` as PNG bytes."""
    fig = overlay_figure(images, rows, titles, mask=mask, caption=caption)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def overlay_image(image: Image.Image, values: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """One map over its image (greyscale under the colour map, as in :func:`overlay_figure`), as RGB:
    the web viewer shows each image of a prompt with its own overlay, at the image's size."""
    import matplotlib

    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    if values.shape != grey.shape[:2]:
        raise ValueError(f"map of shape {values.shape} does not match the image's {grey.shape[:2]}")
    colours = matplotlib.colormaps[CMAP](_normalised(values))[..., :3]
    blended = (1 - alpha) * grey + alpha * colours
    return Image.fromarray(np.clip(blended * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGB")
