"""The inverse maps from model inputs to images, checked on images with a known bright square."""

import numpy as np
import pytest
from PIL import Image

from seeinpairs.backends.encoding import chat_prompt, encode_prompts
from seeinpairs.backends.hf import HFBackend
from seeinpairs.backends.tiny import TINY_FAMILIES
from seeinpairs.explain import RequestExplainer
from seeinpairs.explain.layouts import LAYOUTS, UNSUPPORTED_LAYOUTS, ExplainError, layout_for, to_original
from seeinpairs.prompts import Request


def square_image(height: int, width: int, box: tuple[int, int, int, int]) -> Image.Image:
    pixels = np.zeros((height, width), dtype=np.uint8)
    top, left, bottom, right = box
    pixels[top:bottom, left:right] = 255
    return Image.fromarray(pixels).convert("RGB")


MAPPED = [family for family in TINY_FAMILIES.list_names() if family not in UNSUPPORTED_LAYOUTS]


def assert_squares_map_back(backend, family, images, boxes):
    """Each image's brightness, mapped back through the layout, is bright exactly where its square was
    drawn; every mapped token is an image token and none is mapped twice. Returns the slots and inputs."""
    sizes = [(image.height, image.width) for image in images]
    request = Request(messages=[{"role": "user", "content": [*[{"type": "image"}] * len(images),
                                                              {"type": "text", "text": "Is it normal?"}]}],
                      images=images, options=["normal", "abnormal"])
    encoded = encode_prompts(backend.processor, [chat_prompt(backend.processor, request)], [images], "right")
    layout = layout_for(backend.model, backend.processor)
    slots = layout.slots(encoded, sizes)
    assert len(slots) == len(images)
    n_tokens = int((encoded["input_ids"][0] == backend.model.config.image_token_id).sum())
    image_positions = set((encoded["input_ids"][0] == backend.model.config.image_token_id).nonzero().flatten().tolist())
    mapped = [p for s in slots for p in s.token_positions + s.overview_positions]
    assert len(set(mapped)) == len(mapped) and set(mapped) <= image_positions
    # every image token is on a grid, except InternVL's thumbnail tiles and LLaVA-OneVision's newline tokens
    assert len(mapped) == n_tokens or family in ("internvl", "llava_onevision")
    assert all(len(s.token_positions) == s.token_grid[0] * s.token_grid[1] for s in slots)
    pixels = encoded["pixel_values"]
    maps = layout.pixel_maps(encoded, pixels - pixels.min(), sizes)  # brightness, summed over channels
    for values, slot, size, (top, left, bottom, right) in zip(maps, slots, sizes, boxes):
        original = to_original(values, slot, size)
        assert original.shape == size
        bright = original > (original.min() + original.max()) / 2
        inside = np.zeros_like(bright)
        inside[max(0, top - 3):bottom + 3, max(0, left - 3):right + 3] = True
        assert bright[inside].mean() > 0.5  # the square is where it was drawn...
        assert not bright[~inside].any()  # ...and nowhere else
    return slots, encoded


@pytest.mark.parametrize("family", MAPPED)
def test_pixel_values_map_back_onto_each_original_image(tiny_models, family):
    backend = HFBackend(tiny_models[family], device="cpu")
    boxes = [(5, 40, 25, 65), (40, 3, 58, 20)]  # a different bright square in each image
    assert_squares_map_back(backend, family, [square_image(60, 70, box) for box in boxes], boxes)


def split_into_tiles(backend, longest_edge: int) -> None:
    """Turn on Idefics3's image splitting as real checkpoints ship it: the longest edge is resized to
    ``longest_edge`` and cut into tiles of ``max_image_size`` (the tiny vision encoder's 56 pixels)."""
    image_processor = backend.processor.image_processor
    image_processor.do_image_splitting = True
    image_processor.size = {"longest_edge": longest_edge}


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_split_images_map_back_tile_by_tile(tiny_models, family):
    """A 60 x 70 image becomes 2 x 2 tiles and a 40 x 100 one 1 x 2 tiles (each tile 2 x 2 tokens), each
    with a global frame; the tiles' maps and the global frame's map put the square where it was drawn."""
    backend = HFBackend(tiny_models[family], device="cpu")
    split_into_tiles(backend, 112)
    boxes = [(5, 40, 25, 65), (10, 60, 30, 85)]
    images = [square_image(60, 70, boxes[0]), square_image(40, 100, boxes[1])]
    slots, encoded = assert_squares_map_back(backend, family, images, boxes)
    assert [s.token_grid for s in slots] == [(4, 4), (2, 4)]
    ids, tokenizer = encoded["input_ids"][0].tolist(), backend.processor.tokenizer
    for slot in slots:  # the token grid's block (r, c) holds the tokens after the <row_r_col_c> marker
        blocks = np.asarray(slot.token_positions).reshape(slot.token_grid[0] // 2, 2, slot.token_grid[1] // 2, 2)
        for (r, c), block in np.ndenumerate(blocks[:, 0, :, 0]):
            assert ids[block - 1] == tokenizer.convert_tokens_to_ids(f"<row_{r + 1}_col_{c + 1}>")
        assert ids[slot.overview_positions[0] - 1] == tokenizer.convert_tokens_to_ids("<global-img>")
    assert [s.model_grid for s in slots] == [(112, 112), (56, 112)]
    assert [s.overview_grid for s in slots] == [(2, 2), (2, 2)]


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_split_images_get_one_map_each_from_every_method(tiny_models, family):
    backend = HFBackend(tiny_models[family], device="cpu")
    split_into_tiles(backend, 112)
    sizes = [(60, 70), (40, 100)]
    explanation = RequestExplainer.from_backend(backend).explain(two_image_request(sizes),
                                                                 methods=("grad_x_input", "attention"))
    for method in ("grad_x_input", "attention"):
        assert [m.shape for m in explanation.maps[method]] == sizes
        assert all(np.isfinite(m).all() and np.abs(m).sum() > 0 for m in explanation.maps[method])
        assert np.isclose(sum(explanation.image_mass[method]), 1.0)


def test_unsupported_family_is_one_clear_error():
    class Config:
        model_type = "paligemma"
        image_token_id = 5

    class Model:
        config = Config()

    with pytest.raises(ExplainError, match="not available for model type 'paligemma'.*supported: .*qwen2_vl"):
        layout_for(Model(), None)


def test_every_tiny_family_has_a_layout_or_a_stated_reason():
    assert set(TINY_FAMILIES.list_names()) <= set(LAYOUTS.list_names()) | set(UNSUPPORTED_LAYOUTS)
    assert not set(LAYOUTS.list_names()) & set(UNSUPPORTED_LAYOUTS)


def two_image_request(sizes) -> Request:
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random(size) * 255).astype(np.uint8)).convert("RGB") for size in sizes]
    content = [{"type": "text", "text": "Reference 1:"}, {"type": "image"}, {"type": "text", "text": "Query:"},
               {"type": "image"}, {"type": "text", "text": "Is the query image abnormal?"}]
    return Request(messages=[{"role": "user", "content": content}], images=images, options=["normal", "abnormal"])


@pytest.mark.parametrize("family", TINY_FAMILIES.list_names())
def test_each_family_maps_each_image_of_a_two_image_request(tiny_models, family):
    if family in UNSUPPORTED_LAYOUTS:
        pytest.skip(UNSUPPORTED_LAYOUTS[family])
    backend = HFBackend(tiny_models[family], device="cpu")
    sizes = [(60, 70), (48, 52)]
    explanation = RequestExplainer.from_backend(backend).explain(two_image_request(sizes),
                                                                 methods=("grad_x_input", "attention"))
    for method in ("grad_x_input", "attention"):
        maps = explanation.maps[method]
        assert [m.shape for m in maps] == sizes
        assert all(np.isfinite(m).all() and np.abs(m).sum() > 0 for m in maps)


@pytest.mark.parametrize("unsupported", sorted(set(UNSUPPORTED_LAYOUTS) & set(TINY_FAMILIES.list_names())))
def test_an_unsupported_family_is_one_line_saying_what_is_unsupported(tiny_models, unsupported):
    backend = HFBackend(tiny_models[unsupported], device="cpu")
    with pytest.raises(ExplainError) as error:
        RequestExplainer.from_backend(backend)
    message = str(error.value)
    assert "\n" not in message and f"'{unsupported}'" in message and UNSUPPORTED_LAYOUTS[unsupported] in message


@pytest.mark.parametrize("size, grid", [((60, 70), (4, 4)), ((30, 100), (2, 8))])
def test_llava_onevision_maps_a_single_anyres_image_back(tiny_models, size, grid):
    """One image is a base view plus anyres tiles: a 60 x 70 image fills 1 x 2 tiles (56 x 112) with its
    width padded, a 30 x 100 one the same tiles with its height padded; the square comes back where drawn."""
    backend = HFBackend(tiny_models["llava_onevision"], device="cpu")
    box = (10, 45, 25, 60)
    slots, encoded = assert_squares_map_back(backend, "llava_onevision", [square_image(*size, box)], [box])
    assert encoded["pixel_values"].shape[1] == 3  # the base view and 1 x 2 tiles
    assert slots[0].token_grid == grid and slots[0].overview_grid == (4, 4)


def test_llava_onevision_explains_a_single_image_with_every_method(tiny_models):
    backend = HFBackend(tiny_models["llava_onevision"], device="cpu")
    request = two_image_request([(60, 70), (48, 52)])
    single = Request(messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Normal?"}]}],
                     images=request.images[:1], options=request.options)
    explanation = RequestExplainer.from_backend(backend).explain(single, methods=("grad_x_input", "attention"))
    for method in ("grad_x_input", "attention"):
        assert [m.shape for m in explanation.maps[method]] == [(60, 70)]
        assert np.isfinite(explanation.maps[method][0]).all() and np.abs(explanation.maps[method][0]).sum() > 0


def test_llava_onevision_refuses_tokens_that_do_not_match_the_anyres_grid_in_one_line(tiny_models):
    """Image tokens that do not fit the grid the size implies: a clear error, not a wrong map."""
    backend = HFBackend(tiny_models["llava_onevision"], device="cpu")
    image = square_image(60, 70, (10, 45, 25, 60))
    request = Request(messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Normal?"}]}],
                      images=[image], options=["normal", "abnormal"])
    encoded = encode_prompts(backend.processor, [chat_prompt(backend.processor, request)], [[image]], "right")
    with pytest.raises(ExplainError, match=r"^llava_onevision: \d+ image tokens do not match .*anyres grid[^\n]*$"):
        layout_for(backend.model, backend.processor).slots(encoded, [(30, 100)])
