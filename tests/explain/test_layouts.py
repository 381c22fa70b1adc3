"""The inverse maps from model inputs to images, checked on images with a known bright square."""

import numpy as np
import pytest
from PIL import Image

from seeinpairs.backends.encoding import chat_prompt, encode_prompts
from seeinpairs.backends.hf import HFBackend
from seeinpairs.explain.layouts import ExplainError, layout_for, to_original
from seeinpairs.prompts import Request


def square_image(height: int, width: int, box: tuple[int, int, int, int]) -> Image.Image:
    pixels = np.zeros((height, width), dtype=np.uint8)
    top, left, bottom, right = box
    pixels[top:bottom, left:right] = 255
    return Image.fromarray(pixels).convert("RGB")


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_pixel_values_map_back_onto_each_original_image(tiny_models, family):
    backend = HFBackend(tiny_models[family], device="cpu")
    boxes = [(5, 40, 25, 65), (40, 3, 58, 20)]  # a different bright square in each image
    images = [square_image(60, 70, box) for box in boxes]
    request = Request(messages=[{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                              {"type": "text", "text": "Is it normal?"}]}],
                      images=images, options=["normal", "abnormal"])
    encoded = encode_prompts(backend.processor, [chat_prompt(backend.processor, request)], [images], "right")
    layout = layout_for(backend.model, backend.processor)
    slots = layout.slots(encoded)
    assert len(slots) == 2
    n_tokens = int((encoded["input_ids"][0] == backend.model.config.image_token_id).sum())
    assert sum(len(s.token_positions) for s in slots) == n_tokens
    assert all(len(s.token_positions) == s.token_grid[0] * s.token_grid[1] for s in slots)
    pixels = encoded["pixel_values"]
    maps = layout.pixel_maps(encoded, pixels - pixels.min())  # brightness, summed over channels
    for values, slot, (top, left, bottom, right) in zip(maps, slots, boxes):
        original = to_original(values, slot, (60, 70))
        assert original.shape == (60, 70)
        bright = original > (original.min() + original.max()) / 2
        inside = np.zeros_like(bright)
        inside[max(0, top - 3):bottom + 3, max(0, left - 3):right + 3] = True
        assert bright[inside].mean() > 0.5  # the square is where it was drawn...
        assert not bright[~inside].any()  # ...and nowhere else


def test_unsupported_family_is_one_clear_error():
    class Config:
        model_type = "paligemma"
        image_token_id = 5

    class Model:
        config = Config()

    with pytest.raises(ExplainError, match="not available for model type 'paligemma'.*supported: .*qwen2_vl"):
        layout_for(Model(), None)
