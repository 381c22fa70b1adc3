"""Attribution maps: shapes, finiteness, closed-set probabilities, integrated-gradients completeness,
and concentration on the only region that can change the answer."""

import numpy as np
import pytest
import torch
from explain_data import REGION, SIZE, TASK
from PIL import Image

from seeinpairs.backends.base import option_probabilities
from seeinpairs.backends.hf import HFBackend
from seeinpairs.explain import (
    ATTENTION_METHODS,
    GRADIENT_METHODS,
    ExplainError,
    RequestExplainer,
)
from seeinpairs.explain.localization import (
    chance_energy,
    energy_inside,
    load_mask,
    pointing_game,
)
from seeinpairs.prompts import PromptBuilder, Request

ALL = list(GRADIENT_METHODS + ATTENTION_METHODS)


def two_image_request(options, sizes=((60, 70), (48, 52))) -> Request:
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random(size) * 255).astype(np.uint8)).convert("RGB") for size in sizes]
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Is the query image abnormal?"}]
    return Request(messages=[{"role": "user", "content": content}], images=images, options=list(options),
                   image_ids=["ref", "query"])


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
@pytest.mark.parametrize("options", [["normal", "abnormal"], ["clear lung fields", "a faint focal opacity"]])
def test_every_method_gives_finite_maps_of_each_image_shape(tiny_models, family, options):
    backend = HFBackend(tiny_models[family], device="cpu")
    request = two_image_request(options)
    explanation = RequestExplainer.from_backend(backend, ig_steps=2).explain(request, methods=ALL)
    expected = option_probabilities(backend.score_options([request])[0])
    assert np.allclose(explanation.probabilities, expected, atol=1e-4)
    assert explanation.option == options[int(np.argmax(expected))]  # default: the predicted option
    for method in ALL:
        maps = explanation.maps[method]
        assert [m.shape for m in maps] == [(60, 70), (48, 52)]
        assert all(np.isfinite(m).all() and np.abs(m).sum() > 0 for m in maps)
        assert sum(explanation.image_mass[method]) == pytest.approx(1.0)
        assert explanation.reference_share(method) == pytest.approx(explanation.image_mass[method][0])


def test_integrated_gradients_are_complete(tiny_models):
    """Attributions sum to f(input) - f(black baseline), up to the Riemann error of the path integral."""
    backend = HFBackend(tiny_models["qwen2_vl"], device="cpu")
    request = two_image_request(["normal", "abnormal"])
    explainer = RequestExplainer.from_backend(backend, ig_steps=32)
    encoded, option_ids = explainer._encode(request)
    target = 1
    pixels = encoded["pixel_values"]
    attribution = explainer._gradient_attribution("integrated_gradients", request, encoded, option_ids, pixels, target)
    with torch.no_grad():
        at_input = explainer._option_log_probs(encoded, option_ids, pixels)[target]
        at_black = explainer._option_log_probs(encoded, option_ids, explainer._black(request))[target]
    assert float(attribution.sum()) == pytest.approx(float(at_input - at_black), rel=0.05, abs=1e-4)


def test_bad_option_method_and_cached_backend_are_one_line_errors(tiny_models):
    backend = HFBackend(tiny_models["qwen2_vl"], device="cpu")
    explainer = RequestExplainer.from_backend(backend)
    request = two_image_request(["normal", "abnormal"])
    with pytest.raises(ExplainError, match="option 'maybe' is not one of"):
        explainer.explain(request, option="maybe")
    with pytest.raises(ExplainError, match="unknown attribution method"):
        explainer.explain(request, methods=["saliency"])
    with pytest.raises(ExplainError, match="without vision_cache_mb"):
        RequestExplainer.from_backend(HFBackend(tiny_models["qwen2_vl"], device="cpu", vision_cache_mb=8))


def test_maps_concentrate_on_the_only_region_that_changes_the_answer(region_model):
    """On the region data, only a blob in the top-left quadrant makes an image abnormal (identical
    blobs elsewhere appear in both classes). Integrated gradients must point inside the lesion and put
    most of the attribution in that quadrant (chance: a quarter)."""
    backend, table, root = region_model
    prompts = PromptBuilder(TASK)
    explainer = RequestExplainer.from_backend(backend, ig_steps=8)
    quadrant = np.zeros((SIZE, SIZE), dtype=bool)
    quadrant[REGION] = True
    cases = [c for c in table if c.split == "test" and c.label == "abnormal"][:12]
    hits, lesion_energy, lesion_chance, quadrant_energy = [], [], [], []
    for case in cases:
        explanation = explainer.explain(prompts.build(case), option="abnormal", methods=["integrated_gradients"])
        assert explanation.probabilities[1] > 0.9  # the model learnt the task
        values = explanation.maps["integrated_gradients"][-1]
        mask = load_mask(root / case.extra["mask"], values.shape)
        hits.append(pointing_game(values, mask))
        lesion_energy.append(energy_inside(values, mask))
        lesion_chance.append(chance_energy(mask))
        quadrant_energy.append(energy_inside(values, quadrant))
    assert np.mean(hits) >= 0.75
    assert np.mean(quadrant_energy) > 0.6
    assert np.mean(lesion_energy) > 4 * np.mean(lesion_chance)
