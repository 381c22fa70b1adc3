"""Attribution overlays: every image of a prompt with its map, side by side, as PNG bytes."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

METHOD_TITLES = {"grad_x_input": "gradient x input", "integrated_gradients": "integrated gradients",
                 "attention": "attention (answer position)", "rollout": "attention rollout"}


def _normalised(values: np.ndarray) -> np.ndarray:
    """Absolute values stretched to 0..1 per image, so that near-uniform maps (attention) still show their shape."""
    magnitude = np.abs(np.nan_to_num(values))
    low, high = magnitude.min(), magnitude.max()
    return (magnitude - low) / (high - low) if high > low else np.zeros_like(magnitude)


def overlay_png(images: Sequence[Image.Image], rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
                titles: Sequence[str], mask: np.ndarray | None = None, caption: str | None = None) -> bytes:
    """A grid: the images on top, then one row per (label, maps) with each map over its image.

    A ``None`` map leaves its cell empty (e.g. a single-image model has no references). Maps
    are shown as absolute values stretched to the full colour range per image (compare shapes
    within a cell, not intensities across cells); ``mask`` outlines the lesion on the last image.
    """
    n_cols, n_rows = len(images), 1 + len(rows)
    fig = Figure(figsize=(2.0 * n_cols, 2.0 * n_rows), dpi=64)  # its own canvas: no pyplot state
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    grey = [np.asarray(image.convert("L"), dtype=np.float32) / 255.0 for image in images]
    for col, (image, title) in enumerate(zip(grey, titles)):
        axes[0, col].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(title, fontsize=8)
    for row, (label, maps) in enumerate(rows, start=1):
        for col, values in enumerate(maps):
            ax = axes[row, col]
            if values is None:
                ax.set_facecolor("#f4f4f4")
                continue
            ax.imshow(grey[col], cmap="gray", vmin=0, vmax=1)
            ax.imshow(_normalised(values), cmap="inferno", alpha=0.55, vmin=0, vmax=1)
            if col == 0 or maps[col - 1] is None:
                ax.set_ylabel(label, fontsize=7)
    if mask is not None and mask.any():
        for row in range(n_rows):
            if row == 0 or rows[row - 1][1][-1] is not None:
                axes[row, -1].contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if caption:
        fig.suptitle(textwrap.fill(caption, width=max(30, 34 * n_cols)), fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
