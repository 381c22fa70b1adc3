"""Where each prompt image lives in a model's inputs: its pixels and its language-model tokens.

Attribution needs two inverse maps that differ per model family: from the
processor's ``pixel_values`` back to each image's pixel grid (Qwen2-VL packs
images into flattened, merge-ordered patches; Idefics3 keeps one padded tile
per image), and from the image placeholder tokens in ``input_ids`` back to a
spatial token grid. A layout is registered per ``model_type``; a family that
is not registered fails with one clear line instead of a wrong map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import SeeInPairsError
from ..registry import Registry


class ExplainError(SeeInPairsError):
    """An explanation cannot be computed for this model or request."""


@dataclass
class ImageSlot:
    """One prompt image inside the model inputs.

    ``token_positions``: indices in ``input_ids`` of the image's placeholder tokens,
    in raster order of ``token_grid`` (rows, columns). ``valid``: the (height, width)
    of the model-space pixel grid that shows the image (the rest is padding).
    """

    token_positions: list[int]
    token_grid: tuple[int, int]
    valid: tuple[int, int]
    model_grid: tuple[int, int]


class ImageLayout:
    """Inverse maps from model inputs to images, for one model family."""

    def __init__(self, model, processor) -> None:
        self.model = model
        self.processor = processor
        self.image_token_id = int(model.config.image_token_id)

    def slots(self, inputs: dict[str, Any]) -> list[ImageSlot]:
        raise NotImplementedError

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor) -> list[np.ndarray]:
        """Per image, ``per_element`` (same shape as ``pixel_values``) summed over channels (and frames)
        onto the model-space pixel grid (height, width), padding included."""
        raise NotImplementedError

    def _image_token_positions(self, inputs: dict[str, Any]) -> list[int]:
        ids = inputs["input_ids"]
        if ids.shape[0] != 1:
            raise ExplainError("explanations are computed one request at a time")
        return (ids[0] == self.image_token_id).nonzero().flatten().tolist()


#: per ``config.model_type``; a layout serving several families is registered under each
LAYOUTS: Registry[ImageLayout] = Registry("attribution layout", expects=ImageLayout)


def layout_for(model, processor) -> ImageLayout:
    """The layout of ``model``'s family (by ``config.model_type``)."""
    model_type = str(getattr(model.config, "model_type", ""))
    if model_type not in LAYOUTS.list_names():
        raise ExplainError(f"attribution maps are not available for model type '{model_type}' "
                           f"(supported: {', '.join(LAYOUTS.list_names())})")
    return LAYOUTS.get(model_type)(model, processor)


@LAYOUTS.register("qwen2_vl")
@LAYOUTS.register("qwen2_5_vl")
class QwenVLLayout(ImageLayout):
    """Qwen2-VL / Qwen2.5-VL: every image is ``grid_t x grid_h x grid_w`` patches of ``patch`` pixels,
    flattened in (t, h/merge, w/merge, merge, merge) order with (channel, frame, py, px) columns;
    ``merge x merge`` patches become one language-model token."""

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        image_processor = processor.image_processor
        self.patch = int(image_processor.patch_size)
        self.merge = int(image_processor.merge_size)
        self.frames = int(image_processor.temporal_patch_size)

    def _grids(self, inputs: dict[str, Any]) -> list[tuple[int, int, int]]:
        return [tuple(int(v) for v in row) for row in inputs["image_grid_thw"].tolist()]

    def slots(self, inputs: dict[str, Any]) -> list[ImageSlot]:
        positions = self._image_token_positions(inputs)
        slots, start = [], 0
        for t, h, w in self._grids(inputs):
            count = t * h * w // (self.merge ** 2)
            if start + count > len(positions):
                raise ExplainError("the prompt has fewer image tokens than its images need")
            size = (h * self.patch, w * self.patch)
            slots.append(ImageSlot(positions[start:start + count], (t * h // self.merge, w // self.merge), size, size))
            start += count
        return slots

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor) -> list[np.ndarray]:
        maps, start = [], 0
        values = per_element.detach().float().cpu()
        channels = values.shape[1] // (self.frames * self.patch * self.patch)
        for t, h, w in self._grids(inputs):
            rows = values[start:start + t * h * w]
            start += t * h * w
            m, p = self.merge, self.patch
            blocks = rows.reshape(t, h // m, w // m, m, m, channels, self.frames, p, p)
            summed = blocks.sum(dim=(5, 6))  # (t, bh, bw, mh, mw, py, px)
            grid = summed.permute(0, 1, 3, 5, 2, 4, 6).reshape(t, h * p, w * p).sum(0)
            maps.append(grid.numpy())
        return maps


@LAYOUTS.register("idefics3")
@LAYOUTS.register("smolvlm")
class Idefics3Layout(ImageLayout):
    """Idefics3 / SmolVLM without image splitting: one (padded) tile per image whose
    ``image_seq_len`` tokens form a square grid after the pixel shuffle."""

    def slots(self, inputs: dict[str, Any]) -> list[ImageSlot]:
        pixels = inputs["pixel_values"]
        positions = self._image_token_positions(inputs)
        n_images = int(pixels.shape[1])
        if n_images == 0 or len(positions) % n_images:
            raise ExplainError("image tokens do not divide evenly among the images")
        per_image = len(positions) // n_images
        side = math.isqrt(per_image)
        if side * side != per_image or getattr(self.processor.image_processor, "do_image_splitting", False):
            raise ExplainError("attribution maps for Idefics3 need do_image_splitting=False (one tile per image)")
        mask = inputs.get("pixel_attention_mask")
        slots = []
        for i in range(n_images):
            height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
            valid = (height, width)
            if mask is not None:
                tile = mask[0, i].bool()
                valid = (int(tile.any(dim=1).sum()), int(tile.any(dim=0).sum()))
            slots.append(ImageSlot(positions[i * per_image:(i + 1) * per_image], (side, side), valid, (height, width)))
        return slots

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor) -> list[np.ndarray]:
        values = per_element.detach().float().cpu()
        return [values[0, i].sum(0).numpy() for i in range(values.shape[1])]


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (height, width)."""
    height, width = size
    if values.shape == (height, width):
        return values.astype(np.float32)
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float32)


def to_original(values: np.ndarray, slot: ImageSlot, original: tuple[int, int]) -> np.ndarray:
    """A model-space map (the model grid, padding included) cropped to the image and resized to the
    original image's (height, width)."""
    if values.shape != slot.model_grid:
        values = resize_map(values, slot.model_grid)
    cropped = values[:slot.valid[0], :slot.valid[1]]
    return resize_map(cropped, original)
