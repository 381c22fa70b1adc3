"""Interleaved multi-image prompts: each image goes where the item's ``<image>`` placeholder stands.

The result is an ordinary :class:`~seeinpairs.prompts.Request` (chat messages with
``{"type": "image"}`` slots, the images in slot order, the answer options), so any
backend scores or generates it exactly like a comparative prompt. Comparative
diagnosis keeps its references-first order (:class:`~seeinpairs.prompts.PromptBuilder`);
here the item decides the order, because its text refers to images by position.

A multiple-choice item's options are its answers as Med-MIM writes them
(``"C: option text"``), so option scoring compares the same strings the model is
trained to produce. The single-image ablation keeps one image and drops the
other placeholders, leaving the text unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from ..prompts import Request
from .format import IMAGE_TOKEN, MimItem

PROMPT_VERSION = "mim-interleaved-v2"  # v2: per-image turns under images-first chat templates


def interleaved_content(text: str, n_images: int, keep: Sequence[int] | None = None) -> list[dict]:
    """Chat content parts: text segments with an image slot at each placeholder (only ``keep`` ones)."""
    segments = text.split(IMAGE_TOKEN)
    if len(segments) - 1 != n_images:
        raise ValueError(f"{len(segments) - 1} placeholders for {n_images} images")
    kept = set(range(n_images) if keep is None else keep)
    content: list[dict] = []
    for position, segment in enumerate(segments):
        if position > 0 and position - 1 in kept:
            content.append({"type": "image"})
        if segment:
            if content and content[-1]["type"] == "text":
                content[-1]["text"] += segment
            else:
                content.append({"type": "text", "text": segment})
    return content


def build_request(item: MimItem, images: Sequence[Image.Image], keep: Sequence[int] | None = None) -> Request:
    """The request for ``item``: all images in place, or only those at positions ``keep`` (ablation)."""
    positions = list(range(len(images))) if keep is None else sorted(set(keep))
    content = interleaved_content(item.user_text, len(item.images), positions)
    return Request(messages=[{"role": "user", "content": content}], images=[images[i] for i in positions],
                   options=item.option_answers, image_ids=[item.images[i] for i in positions])


def ablation_position(item: MimItem, which: str | int) -> int:
    """The image kept by the single-image ablation: ``"first"``, ``"last"`` or a 0-based position."""
    if which == "first":
        return 0
    if which == "last":
        return len(item.images) - 1
    position = int(which)
    return min(max(position, 0), len(item.images) - 1)
