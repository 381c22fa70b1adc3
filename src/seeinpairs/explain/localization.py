"""How well a map points at the lesion: pointing game and energy inside the mask.

Both scores use the absolute attribution, since the sign of gradient x input
depends on the intensity convention of the image (a bright lesion on a dark
background and a dark one on a bright background give opposite signs), while
where the evidence sits does not. Each score comes with its chance level for
a map that carries no information (uniform): the mask's area fraction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageError
from .layouts import resize_map


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A boolean lesion mask (any non-zero pixel is inside), resized (nearest) to (height, width)."""
    try:
        with Image.open(path) as image:
            mask = image.convert("L")
            if size is not None and (mask.height, mask.width) != size:
                mask = mask.resize((size[1], size[0]), Image.NEAREST)
            return np.asarray(mask) > 0
    except (OSError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read the mask ({str(exc).splitlines()[0]})") from None


def _check(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if values.shape != mask.shape:
        values = resize_map(values, mask.shape)
    return np.abs(np.nan_to_num(values.astype(np.float64)))


def pointing_game(values: np.ndarray, mask: np.ndarray) -> float:
    """1.0 when the map's maximum falls inside the mask (ties: any maximum inside), else 0.0; NaN without a mask."""
    if not mask.any():
        return float("nan")
    magnitude = _check(values, mask)
    peak = magnitude.max()
    if peak <= 0:
        return 0.0
    return float(mask[magnitude >= peak].any())


def energy_inside(values: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's absolute attribution inside the mask; NaN without a mask or without attribution."""
    if not mask.any():
        return float("nan")
    magnitude = _check(values, mask)
    total = magnitude.sum()
    return float(magnitude[mask].sum() / total) if total > 0 else float("nan")


def chance_energy(mask: np.ndarray) -> float:
    """What a uniform map scores on both measures in expectation: the mask's area fraction."""
    return float(mask.mean()) if mask.size else float("nan")
