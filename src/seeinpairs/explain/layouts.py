"""Where each prompt image lives in a model's inputs: its pixels and its language-model tokens.

Attribution needs two inverse maps that differ per model family: from the
processor's ``pixel_values`` back to each image's pixel grid (Qwen2-VL packs
images into flattened, merge-ordered patches; Gemma 3 and LLaVA keep one tile per
image; InternVL and Idefics3 with image splitting cut an image into a grid of tiles
plus a view of the whole image), and
from the image placeholder tokens in ``input_ids`` back to a spatial token grid. A
layout is registered per ``model_type``; a family that is not registered fails with
one clear line that says what is unsupported (:data:`UNSUPPORTED_LAYOUTS`) instead of
a wrong map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
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
    #: original (height, width) -> the (top, left, bottom, right) box of the original that the model grid
    #: shows, for processors that crop (LLaVA's center crop); None: the whole image
    shown: Callable[[tuple[int, int]], tuple[int, int, int, int]] | None = None
    #: (top, left, bottom, right) of the image inside the model grid where the processor padded around it
    #: (LLaVA-OneVision pads to a centered square); None: the top-left ``valid`` region
    content: tuple[int, int, int, int] | None = None
    #: tokens of a second, whole-image view beside the tiles (Idefics3's global frame), raster order of
    #: ``overview_grid``; empty for families with one view
    overview_positions: list[int] = field(default_factory=list)
    overview_grid: tuple[int, int] = (0, 0)

    def crop(self, values: np.ndarray) -> np.ndarray:
        """The part of a model-grid map that shows the image (padding cut off)."""
        top, left, bottom, right = self.content or (0, 0, *self.valid)
        return values[top:bottom, left:right]

    def token_map(self, row: np.ndarray) -> tuple[np.ndarray, float]:
        """Per-position values of the whole input (``row``) as this image's model-grid map, and their
        absolute total over the image's tokens (the overview's tokens spread and added, see
        :func:`add_overview`)."""
        grid = row[self.token_positions].reshape(self.token_grid)
        mass = float(np.abs(grid).sum())
        if self.overview_positions:
            overview = row[self.overview_positions].reshape(self.overview_grid)
            grid, mass = add_overview(grid, overview), mass + float(np.abs(overview).sum())
        return resize_map(grid, self.model_grid), mass


class ImageLayout:
    """Inverse maps from model inputs to images, for one model family."""

    def __init__(self, model, processor) -> None:
        self.model = model
        self.processor = processor
        self.image_token_id = int(model.config.image_token_id)

    def slots(self, inputs: dict[str, Any], sizes: list[tuple[int, int]] | None = None) -> list[ImageSlot]:
        """Per image, where it lives in the inputs; ``sizes`` are the original images' (height, width), which
        tiling families need to know how an image was cut."""
        raise NotImplementedError

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor,
                   sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
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

#: model type -> what attribution maps do not support for it (the one-line error says so)
UNSUPPORTED_LAYOUTS: dict[str, str] = {
    "mllama": "images enter through cross-attention layers, not image tokens in the prompt, so there is no "
              "token grid to map",
}


def layout_for(model, processor) -> ImageLayout:
    """The layout of ``model``'s family (by ``config.model_type``)."""
    model_type = str(getattr(model.config, "model_type", ""))
    if model_type in UNSUPPORTED_LAYOUTS:
        raise ExplainError(f"attribution maps are not available for model type '{model_type}': "
                           f"{UNSUPPORTED_LAYOUTS[model_type]}")
    if model_type not in LAYOUTS.list_names():
        raise ExplainError(f"attribution maps are not available for model type '{model_type}' "
                           f"(supported: {', '.join(LAYOUTS.list_names())})")
    return LAYOUTS.get(model_type)(model, processor)


@LAYOUTS.register("qwen2_vl")
@LAYOUTS.register("qwen2_5_vl")
@LAYOUTS.register("qwen3_vl")
@LAYOUTS.register("glm4v")
class QwenVLLayout(ImageLayout):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL / GLM-4V: every image is ``grid_t x grid_h x grid_w`` patches of ``patch`` pixels,
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

    def slots(self, inputs: dict[str, Any], sizes: list[tuple[int, int]] | None = None) -> list[ImageSlot]:
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

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor,
                   sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
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
    """Idefics3 / SmolVLM: each frame (tile) of ``pixel_values`` becomes ``image_seq_len`` tokens that form a
    square grid after the pixel shuffle. Without image splitting an image is one (padded) frame. With
    splitting (what real checkpoints ship) the processor resizes the longest edge, stretches the image to
    ``rows x cols`` frames of ``max_image_size`` and cuts it into them, raster order, each frame's tokens
    after a ``<row_i_col_j>`` marker, then adds one downscaled frame of the whole image after ``<global-img>``.
    The arrangement is read from those markers, so it is what the processor did, not a recomputation.

    A tiled image's map is its tiles' maps put together on the stretched image plus the global frame's map
    spread over the same area (each global pixel or token covers ``rows x cols`` times the area of a tile's,
    so its value is divided by that). The sum, not an average, because every original pixel reaches the
    model through both views: for gradients the sum is the attribution of the original pixel (the chain
    rule through both resizes, up to the resampling kernels), and for attention it is the attention on the
    image per unit of its area. Either way an image's total counts each view exactly once, so the share of
    attribution between images stays comparable with untiled families. The token grid is the tiles' token
    grids put together; the global frame's tokens are its overview."""

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        tokenizer = processor.tokenizer
        unknown = getattr(tokenizer, "unk_token_id", None)
        self.global_id = tokenizer.convert_tokens_to_ids("<global-img>")
        tiles = {tokenizer.convert_tokens_to_ids(f"<row_{i}_col_{j}>"): (i, j) for i in range(1, 7) for j in range(1, 7)}
        self.tile_ids = {token: place for token, place in tiles.items() if token is not None and token != unknown}

    def _images(self, inputs: dict[str, Any]) -> list[tuple[list[list[int]], int, int, list[int], int]]:
        """Per image: its tiles' token runs (raster order), rows, columns, the global frame's tokens and the
        index of its first frame in ``pixel_values``."""
        positions = self._image_token_positions(inputs)
        ids = inputs["input_ids"][0].tolist()
        images, tiles, first = [], [], 0
        for run in _runs(positions):
            marker = ids[run[0] - 1] if run[0] > 0 else None
            if marker in self.tile_ids:
                tiles.append((self.tile_ids[marker], run))
            elif marker == self.global_id:
                rows, columns = _tile_arrangement([place for place, _ in tiles])
                images.append(([tokens for _, tokens in tiles], rows, columns, run, first))
                first, tiles = first + len(tiles) + 1, []
            else:
                raise ExplainError("idefics3: image tokens are not preceded by a <row_i_col_j> or <global-img> marker")
        if tiles:
            raise ExplainError("idefics3: the last image's tiles have no <global-img> frame after them")
        lengths = {len(tokens) for tiles, _, _, overview, _ in images for tokens in [*tiles, overview]}
        if len(lengths) > 1 or first != int(inputs["pixel_values"].shape[1]):
            raise ExplainError("idefics3: image token counts do not match the frames in pixel_values")
        return images

    def slots(self, inputs: dict[str, Any], sizes: list[tuple[int, int]] | None = None) -> list[ImageSlot]:
        pixels = inputs["pixel_values"]
        frame = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        mask = inputs.get("pixel_attention_mask")
        slots = []
        for tiles, rows, columns, overview, first in self._images(inputs):
            side = _square_side(len(overview), "idefics3")
            if not tiles:  # one frame, padded to the largest in the batch
                valid = frame
                if mask is not None:
                    shown = mask[0, first].bool()
                    valid = (int(shown.any(dim=1).sum()), int(shown.any(dim=0).sum()))
                slots.append(ImageSlot(overview, (side, side), valid, frame))
                continue
            tokens = np.asarray(tiles).reshape(rows, columns, side, side)
            ordered = tokens.transpose(0, 2, 1, 3).reshape(-1).tolist()  # raster order over the whole mosaic
            grid = (rows * frame[0], columns * frame[1])
            slots.append(ImageSlot(ordered, (rows * side, columns * side), grid, grid,
                                   overview_positions=overview, overview_grid=(side, side)))
        return slots

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor,
                   sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
        values = per_element.detach().float().cpu()[0].sum(1).numpy()  # (frames, H, W)
        height, width = values.shape[-2:]
        maps = []
        for tiles, rows, columns, _, first in self._images(inputs):
            overview = values[first + len(tiles)]
            if not tiles:
                maps.append(overview)
                continue
            mosaic = values[first:first + len(tiles)].reshape(rows, columns, height, width)
            maps.append(add_overview(mosaic.transpose(0, 2, 1, 3).reshape(rows * height, columns * width), overview))
        return maps


def _tile_arrangement(places: list[tuple[int, int]]) -> tuple[int, int]:
    """(rows, columns) of tiles whose ``<row_i_col_j>`` markers came in ``places`` order; a gap or another
    order than raster is one clear error rather than a scrambled map."""
    if not places:
        return 0, 0
    rows, columns = max(i for i, _ in places), max(j for _, j in places)
    if places != [(i, j) for i in range(1, rows + 1) for j in range(1, columns + 1)]:
        raise ExplainError(f"idefics3: tile markers {places} do not form a {rows} x {columns} grid in raster order")
    return rows, columns


def add_overview(mosaic: np.ndarray, overview: np.ndarray) -> np.ndarray:
    """A tiled image's map plus its whole-image view's map resized onto it, each value of the view divided
    by how many of the mosaic's cells it covers (so both views keep their total)."""
    return mosaic + resize_map(overview, mosaic.shape) * (overview.size / mosaic.size)


def _even_split(positions: list[int], n_images: int, family: str) -> int:
    """Image tokens per image when every image has the same count, else one clear error."""
    if n_images == 0 or len(positions) % n_images:
        raise ExplainError(f"{family}: image tokens do not divide evenly among the images")
    return len(positions) // n_images


def _square_side(count: int, family: str) -> int:
    side = math.isqrt(count)
    if side * side != count:
        raise ExplainError(f"{family}: {count} tokens per image do not form a square grid")
    return side


def _center_crop_box(shortest_edge: int, crop: tuple[int, int]) -> Callable[[tuple[int, int]], tuple[int, ...]]:
    """The box of an original image that survives resizing its shortest edge to ``shortest_edge`` and
    center-cropping (height, width) = ``crop`` (CLIP-style preprocessing)."""
    def box(original: tuple[int, int]) -> tuple[int, int, int, int]:
        height, width = original
        scale = shortest_edge / min(height, width)
        shown_h, shown_w = min(height, round(crop[0] / scale)), min(width, round(crop[1] / scale))
        top, left = (height - shown_h) // 2, (width - shown_w) // 2
        return top, left, top + shown_h, left + shown_w

    return box


@LAYOUTS.register("gemma3")
@LAYOUTS.register("llava")
class OneTileLayout(ImageLayout):
    """Gemma 3 / LLaVA: each image is one (images, C, H, W) tile whose tokens form a square grid. Gemma 3
    resizes the whole image onto the tile; LLaVA (CLIP preprocessing) resizes the shortest edge and
    center-crops, so its maps are zero outside the box the model saw."""

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        self.family = str(model.config.model_type)
        image_processor = processor.image_processor
        self.shown = None
        if getattr(image_processor, "do_center_crop", False):
            crop = image_processor.crop_size
            self.shown = _center_crop_box(int(image_processor.size["shortest_edge"]),
                                          (int(crop["height"]), int(crop["width"])))

    def slots(self, inputs: dict[str, Any], sizes: list[tuple[int, int]] | None = None) -> list[ImageSlot]:
        pixels = inputs["pixel_values"]
        positions = self._image_token_positions(inputs)
        per_image = _even_split(positions, int(pixels.shape[0]), self.family)
        side = _square_side(per_image, self.family)
        grid = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        return [ImageSlot(positions[i * per_image:(i + 1) * per_image], (side, side), grid, grid, self.shown)
                for i in range(int(pixels.shape[0]))]

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor,
                   sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
        values = per_element.detach().float().cpu()
        return [values[i].sum(0).numpy() for i in range(values.shape[0])]


@LAYOUTS.register("llava_onevision")
class LlavaOnevisionLayout(ImageLayout):
    """LLaVA-OneVision. With several images in the prompt each image is its base tile (the image padded to a
    centered square and resized, ``pixel_values[i, 0]``) whose square token grid is followed by one newline
    token.

    One image in the prompt is encoded at "anyres": ``pixel_values[0, 0]`` is the whole image stretched to
    one tile (the base view), then the tiles of the grid pinpoint that fits the image best, in raster order,
    hold the image resized to keep its aspect and padded to a centered box. Its tokens are the base view's
    square grid, then the tiles' features with the padding rows or columns cut off (and shrunk to at most
    ``anyres_max_N`` tiles' worth), each row followed by a newline token. The map is the tiles' map on the
    image's box plus the base view's map spread over it (added as for Idefics3's global frame, see
    :class:`Idefics3Layout`); the token grid is the unpadded features, placed on the image's box (the
    model drops partly padded feature columns, so the grid may be up to one patch narrower than the box).
    """

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        vision = model.config.vision_config
        self.side = int(vision.image_size) // int(vision.patch_size)
        self.pinpoints = [tuple(int(v) for v in point) for point in model.config.image_grid_pinpoints]
        aspect = str(getattr(model.config, "vision_aspect_ratio", "anyres_max_9"))
        self.max_tiles = int(aspect.removeprefix("anyres_max_"))

    def slots(self, inputs: dict[str, Any], sizes: list[tuple[int, int]] | None = None) -> list[ImageSlot]:
        pixels = inputs["pixel_values"]
        n_images = int(pixels.shape[0])
        if sizes is None or len(sizes) != n_images:
            raise ExplainError("llava_onevision: attribution maps need the original image sizes, one per image")
        positions = self._image_token_positions(inputs)
        if n_images == 1:
            return [self._anyres_slot(positions, sizes[0], int(pixels.shape[-1]))]
        per_image = _even_split(positions, n_images, "llava_onevision")
        side = _square_side(per_image - 1, "llava_onevision")  # the last token is the image newline
        grid = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        return [ImageSlot(positions[i * per_image:i * per_image + side * side], (side, side), grid, grid,
                          content=_padded_square_box(size, grid)) for i, size in enumerate(sizes)]

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor,
                   sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
        values = per_element.detach().float().cpu()
        if values.shape[0] != 1:
            return [values[i, 0].sum(0).numpy() for i in range(values.shape[0])]
        if sizes is None or len(sizes) != 1:
            raise ExplainError("llava_onevision: attribution maps need the original image size")
        frames = values[0].sum(1).numpy()  # (1 + rows * columns, tile, tile)
        tile = frames.shape[-1]
        rows, columns, box = self._canvas(sizes[0], tile)
        canvas = frames[1:1 + rows * columns].reshape(rows, columns, tile, tile)
        canvas = canvas.transpose(0, 2, 1, 3).reshape(rows * tile, columns * tile)
        top, left, bottom, right = box
        return [add_overview(canvas[top:bottom, left:right], frames[0])]

    def _canvas(self, size: tuple[int, int], tile: int) -> tuple[int, int, tuple[int, int, int, int]]:
        """Rows and columns of tiles for an image of (height, width) ``size``, and the (top, left, bottom,
        right) box the resized image fills on them (as the image processor pads it)."""
        from transformers.image_processing_utils import select_best_resolution

        best_height, best_width = select_best_resolution(list(size), self.pinpoints)
        scale_height, scale_width = best_height / size[0], best_width / size[1]
        if scale_width < scale_height:
            height, width = min(math.ceil(size[0] * scale_width), best_height), best_width
        else:
            height, width = best_height, min(math.ceil(size[1] * scale_height), best_width)
        top, left = (best_height - height) // 2, (best_width - width) // 2
        return best_height // tile, best_width // tile, (top, left, top + height, left + width)

    def _anyres_slot(self, positions: list[int], size: tuple[int, int], tile: int) -> ImageSlot:
        rows, columns, (top, left, bottom, right) = self._canvas(size, tile)
        height, width = _unpadded_features(size, rows * self.side, columns * self.side)
        ratio = math.sqrt(height * width / (self.max_tiles * self.side ** 2))
        if ratio > 1.1:  # the model shrinks large grids to about anyres_max_N tiles
            height, width = int(height // ratio), int(width // ratio)
        base = self.side ** 2
        if len(positions) != base + height * (width + 1):
            raise ExplainError(f"llava_onevision: {len(positions)} image tokens do not match a base view and a "
                               f"{height} x {width} anyres grid with newlines")
        grid = np.asarray(positions[base:]).reshape(height, width + 1)[:, :width]  # newline tokens dropped
        shown = (bottom - top, right - left)
        return ImageSlot(grid.reshape(-1).tolist(), (height, width), shown, shown,
                         overview_positions=positions[:base], overview_grid=(self.side, self.side))


def _unpadded_features(size: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """The (rows, columns) of a ``height x width`` feature grid left after cutting the centered padding
    around an image of (height, width) ``size`` (LLaVA-NeXT's ``unpad_image``)."""
    if size[1] / size[0] > width / height:
        padding = (height - int(round(size[0] * width / size[1], 7))) // 2
        return height - 2 * padding, width
    padding = (width - int(round(size[1] * height / size[0], 7))) // 2
    return height, width - 2 * padding


@LAYOUTS.register("internvl")
class InternVLLayout(ImageLayout):
    """InternVL: an image is one tile, or a (rows x columns) grid of tiles in raster order followed by a
    thumbnail of the whole image (the arrangement follows from the original size, as the processor chose
    it). The tiles' maps are put together on the grid and the thumbnail's map is resized onto it and added;
    the token grid is the tiles' token grids put together (the thumbnail's tokens are not in it)."""

    def _arrangements(self, inputs: dict[str, Any], sizes: list[tuple[int, int]] | None
                      ) -> list[tuple[list[int], int, int, int]]:
        """Per image: its token positions, first tile index, rows and columns of tiles."""
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        positions = self._image_token_positions(inputs)
        per_tile = int(self.processor.image_seq_length)
        runs = _runs(positions)
        if sizes is None or len(runs) != len(sizes):
            raise ExplainError("internvl: attribution maps need the original image sizes, one per image")
        image_processor = self.processor.image_processor
        tile = (int(image_processor.size["height"]), int(image_processor.size["width"]))
        result, first = [], 0
        for run, size in zip(runs, sizes):
            n_tiles = len(run) // per_tile
            columns, rows = (1, 1) if n_tiles == 1 else get_optimal_tiled_canvas(
                size, tile, int(image_processor.min_patches), int(image_processor.max_patches))
            if n_tiles not in (1, rows * columns + 1):
                raise ExplainError(f"internvl: {n_tiles} tiles do not match a {rows} x {columns} grid and a thumbnail")
            result.append((run, first, rows, columns))
            first += n_tiles
        return result

    def slots(self, inputs: dict[str, Any], sizes: list[tuple[int, int]] | None = None) -> list[ImageSlot]:
        pixels = inputs["pixel_values"]
        side = _square_side(int(self.processor.image_seq_length), "internvl")
        height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
        slots = []
        for run, _, rows, columns in self._arrangements(inputs, sizes):
            tokens = np.asarray(run[:rows * columns * side * side]).reshape(rows, columns, side, side)
            ordered = tokens.transpose(0, 2, 1, 3).reshape(-1).tolist()  # raster order over the whole grid
            grid = (rows * height, columns * width)
            slots.append(ImageSlot(ordered, (rows * side, columns * side), grid, grid))
        return slots

    def pixel_maps(self, inputs: dict[str, Any], per_element: torch.Tensor,
                   sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
        values = per_element.detach().float().cpu().sum(1).numpy()  # (tiles, H, W)
        height, width = values.shape[-2:]
        maps = []
        for _, first, rows, columns in self._arrangements(inputs, sizes):
            tiles = values[first:first + rows * columns].reshape(rows, columns, height, width)
            grid = tiles.transpose(0, 2, 1, 3).reshape(rows * height, columns * width)
            if rows * columns > 1:  # the thumbnail sees the whole image
                grid = grid + resize_map(values[first + rows * columns], grid.shape)
            maps.append(grid)
        return maps


def _padded_square_box(size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where an image of (height, width) ``size`` lies in a ``grid`` it was padded to a centered square for."""
    height, width = size
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    scale_h, scale_w = grid[0] / side, grid[1] / side
    return (round(top * scale_h), round(left * scale_w), round((top + height) * scale_h),
            round((left + width) * scale_w))


def _runs(positions: list[int]) -> list[list[int]]:
    """Consecutive runs of token positions (InternVL wraps each image's tokens in its own <img> ... </img>)."""
    runs: list[list[int]] = []
    for position in positions:
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    return runs


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
    return place_on_original(slot.crop(values), slot, original)


def place_on_original(cropped: np.ndarray, slot: ImageSlot, original: tuple[int, int]) -> np.ndarray:
    """A map of what the model saw of the image (padding already cropped) at the original's (height, width):
    resized onto the whole image, or onto the box the processor kept where it cropped."""
    if slot.shown is None:
        return resize_map(cropped, original)
    top, left, bottom, right = slot.shown(original)
    full = np.zeros(original, dtype=np.float32)  # what the model did not see gets no attribution
    full[top:bottom, left:right] = resize_map(cropped, (bottom - top, right - left))
    return full
