import numpy as np
import pytest
import torch
from shared_helpers import random_image

from seeinpairs.backends import create_backend
from seeinpairs.backends.hf import HFBackend
from seeinpairs.errors import BackendError
from seeinpairs.prompts import Request

FAMILIES = ["qwen2_vl", "idefics3"]


def make_request(rng, n_references: int, options=("normal", "abnormal")) -> Request:
    content = []
    for i in range(n_references):
        content += [{"type": "text", "text": f"Reference {i + 1}:"}, {"type": "image"}]
    content += [{"type": "text", "text": "Query:"}, {"type": "image"},
                {"type": "text", "text": "Is there an abnormal opacity in the query image?"}]
    sizes = [(int(rng.integers(40, 90)), int(rng.integers(40, 90))) for _ in range(n_references + 1)]
    return Request(messages=[{"role": "user", "content": content}],
                   images=[random_image(rng, h, w) for h, w in sizes], options=list(options))


@pytest.fixture(scope="module")
def backends(tiny_models):
    return {family: HFBackend(tiny_models[family], device="cpu", batch_size=16) for family in FAMILIES}


@pytest.fixture()
def requests_mixed():
    rng = np.random.default_rng(7)
    return [make_request(rng, k) for k in (0, 1, 2, 0, 3)] + [make_request(rng, 1, ("normal", "abnormal opacity"))]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_scores_equal_one_at_a_time(backends, requests_mixed, family):
    backend = backends[family]
    batched = backend.score_options(requests_mixed)
    backend.batch_size = 1
    try:
        single = backend.score_options(requests_mixed)
    finally:
        backend.batch_size = 16
    for b, s in zip(batched, single):
        assert np.max(np.abs(np.array(b) - np.array(s))) < 1e-4
    assert all(np.isfinite(v).all() and (np.array(v) < 0).all() for v in batched)


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_match_a_direct_forward_pass_of_the_full_answer(backends, family):
    """The option score is the summed log-probability of the answer tokens after the prompt."""
    backend = backends[family]
    rng = np.random.default_rng(1)
    request = make_request(rng, 2, ("normal", "abnormal opacity"))
    scores = backend.score_options([request])[0]
    prompt = backend.prompt_text(request)
    for option, score in zip(request.options, scores):
        answer_ids = backend.tokenizer(backend.continuation(prompt, option), add_special_tokens=False)["input_ids"]
        encoded = backend.processor(text=[prompt], images=[request.images], return_tensors="pt")
        ids = torch.cat([encoded["input_ids"], torch.tensor([answer_ids])], dim=1)
        inputs = dict(encoded, input_ids=ids, attention_mask=torch.ones_like(ids))
        if "mm_token_type_ids" in encoded:
            inputs["mm_token_type_ids"] = torch.cat(
                [encoded["mm_token_type_ids"], torch.zeros((1, len(answer_ids)), dtype=torch.long)], dim=1)
        with torch.no_grad():
            logits = backend.model(**inputs).logits[0].float()
        log_probs = torch.log_softmax(logits, -1)
        start = encoded["input_ids"].shape[1]
        expected = sum(float(log_probs[start - 1 + i, t]) for i, t in enumerate(answer_ids))
        assert score == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_identical_inputs_give_identical_outputs(backends, requests_mixed, family):
    backend = backends[family]
    assert backend.score_options(requests_mixed) == backend.score_options(requests_mixed)
    first = backend.generate(requests_mixed[:2], max_new_tokens=4)
    assert first == backend.generate(requests_mixed[:2], max_new_tokens=4)
    assert all(isinstance(a, str) for a in first)


def test_option_order_permutes_scores(backends):
    backend = backends["qwen2_vl"]
    rng = np.random.default_rng(3)
    request = make_request(rng, 1)
    flipped = Request(request.messages, request.images, list(reversed(request.options)))
    a, b = backend.score_options([request, flipped])
    assert a == pytest.approx(list(reversed(b)), abs=1e-5)


def test_registry_creates_hf_backend(tiny_models):
    backend = create_backend({"name": str(tiny_models["qwen2_vl"]), "device": "cpu"})
    assert backend.identity()["backend"] == "hf"
    assert backend.identity()["fingerprint"] == HFBackend(tiny_models["qwen2_vl"], device="cpu").identity()["fingerprint"]


def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(BackendError) as info:
        HFBackend(tmp_path / "nope", device="cpu")
    assert "nope" in str(info.value) and "\n" not in str(info.value)


def test_bad_dtype_is_rejected(tiny_models):
    with pytest.raises(BackendError, match="dtype"):
        HFBackend(tiny_models["qwen2_vl"], dtype="float8", device="cpu")
