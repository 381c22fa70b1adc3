"""Single-pass option scoring: requests whose options are all one token are scored from one
forward pass of the prompt, and give the same scores as the per-option path."""

import numpy as np
import pytest
from test_hf import FAMILIES, make_request

from seeinpairs.backends.encoding import answer_token_ids
from seeinpairs.backends.hf import HFBackend


@pytest.fixture(scope="module")
def backends(tiny_models):
    return {family: HFBackend(tiny_models[family], device="cpu", batch_size=4) for family in FAMILIES}


def mixed_requests():
    rng = np.random.default_rng(11)
    return ([make_request(rng, k) for k in (0, 1, 3, 0, 2, 4)]
            + [make_request(rng, 1, ("normal", "abnormal opacity")),
               make_request(rng, 0, ("normal", "abnormal", "pneumonia")),
               make_request(rng, 2, ("abnormal opacity", "normal opacity"))])


def count_forward_rows(backend):
    """Wrap the model's forward to record the batch size of each call; returns the list and an undo."""
    rows: list[int] = []
    original = backend.model.forward

    def forward(*args, **kwargs):
        rows.append(int(kwargs["input_ids"].shape[0]))
        return original(*args, **kwargs)

    backend.model.forward = forward
    return rows, lambda: setattr(backend.model, "forward", original)


def generic_scores(backend, requests):
    backend.single_pass = False
    try:
        return backend.score_options(requests)
    finally:
        backend.single_pass = True


@pytest.mark.parametrize("family", FAMILIES)
def test_single_pass_scores_equal_the_per_option_path(backends, family):
    backend = backends[family]
    requests = mixed_requests()
    single_token = [all(len(answer_token_ids(backend.tokenizer, backend.prompt_text(r), o)) == 1 for o in r.options)
                    for r in requests]
    assert any(single_token) and not all(single_token)  # both paths are exercised in one call
    fast = backend.score_options(requests)
    slow = generic_scores(backend, requests)
    for f, s, r in zip(fast, slow, requests):
        assert len(f) == len(r.options)
        assert np.max(np.abs(np.array(f) - np.array(s))) < 1e-4
    assert all(np.isfinite(v).all() and (np.array(v) < 0).all() for v in fast)


@pytest.mark.parametrize("family", FAMILIES)
def test_single_pass_runs_one_row_per_request(backends, family):
    backend = backends[family]
    rng = np.random.default_rng(5)
    requests = [make_request(rng, k) for k in (0, 1, 2, 3, 1)]  # two one-token options each
    rows, undo = count_forward_rows(backend)
    try:
        backend.score_options(requests)
    finally:
        undo()
    assert sum(rows) == len(requests)  # not one row per (request, option)
    assert max(rows) <= backend.batch_size


@pytest.mark.parametrize("family", FAMILIES)
def test_single_pass_is_independent_of_batching(backends, family):
    backend = backends[family]
    rng = np.random.default_rng(9)
    requests = [make_request(rng, k) for k in (3, 0, 1, 2)]
    batched = backend.score_options(requests)
    one_by_one = [backend.score_options([r])[0] for r in requests]
    for b, s in zip(batched, one_by_one):
        assert np.max(np.abs(np.array(b) - np.array(s))) < 1e-4


def multi_token_requests():
    rng = np.random.default_rng(23)
    return [make_request(rng, k, options) for k, options in
            ((0, ("normal", "abnormal opacity")), (2, ("abnormal opacity", "normal opacity", "normal")),
             (1, ("no finding at all", "a large abnormal opacity in the left lung")), (3, ("normal", "abnormal")),
             (4, ("pneumonia with consolidation", "normal lungs")))]


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompt_scores_equal_the_per_option_path(backends, family):
    backend = backends[family]
    requests = multi_token_requests()
    lengths = [[len(answer_token_ids(backend.tokenizer, backend.prompt_text(r), o)) for o in r.options]
               for r in requests]
    assert sum(max(n) > 1 for n in lengths) >= 3 and max(max(n) for n in lengths) >= 4
    fast = backend.score_options(requests)
    slow = generic_scores(backend, requests)
    for f, s, r in zip(fast, slow, requests):
        assert len(f) == len(r.options)
        assert np.max(np.abs(np.array(f) - np.array(s))) < 1e-4
    one_by_one = [backend.score_options([r])[0] for r in requests]  # independent of batching
    assert max(np.max(np.abs(np.array(a) - np.array(b))) for a, b in zip(fast, one_by_one)) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompt_runs_each_prompt_once(backends, family):
    """Images go through the model once per request, not once per option."""
    backend = backends[family]
    requests = multi_token_requests()[:4]  # 4 requests, 10 options, 3 multi-token requests
    calls: list[tuple[int, bool]] = []
    original = backend.model.forward

    def forward(*args, **kwargs):
        calls.append((int(kwargs["input_ids"].shape[0]), kwargs.get("pixel_values") is not None))
        return original(*args, **kwargs)

    backend.model.forward = forward
    try:
        backend.score_options(requests)
    finally:
        backend.model.forward = original
    assert sum(rows for rows, with_images in calls if with_images) == len(requests)
    continuation_rows = sum(rows for rows, with_images in calls if not with_images)
    multi_token_options = sum(len(answer_token_ids(backend.tokenizer, backend.prompt_text(r), o)) > 1
                              for r in requests for o in r.options)
    assert continuation_rows == multi_token_options  # one short text-only row per multi-token option


def test_unverified_families_are_checked_once_and_fall_back_on_a_mismatch(backends, monkeypatch):
    from seeinpairs.backends import shared_prompt

    backend = backends["idefics3"]
    monkeypatch.setattr(shared_prompt, "VERIFIED_MODEL_TYPES", ())
    requests = multi_token_requests()
    reference = generic_scores(backend, requests)
    monkeypatch.setattr(backend, "_shared_prompt_state", None, raising=False)
    for got, want in zip(backend.score_options(requests), reference):
        assert np.max(np.abs(np.array(got) - np.array(want))) < 1e-4
    assert backend._shared_prompt_state is True  # the check passed on this family
    monkeypatch.setattr(backend, "_shared_prompt_state", None)
    monkeypatch.setattr(backend, "_shared_prompt_difference", lambda *a: 0.5)  # a family where it differs
    with pytest.warns(UserWarning, match=r"differs from the per-option path \(max abs difference 5.00e-01\)"):
        backend.score_options(requests[:1])
    assert backend._shared_prompt_state is False
    monkeypatch.setattr(backend, "_shared_prompt_state", None)
    monkeypatch.setattr(backend, "_shared_prompt_difference", lambda *a: None)  # a family it cannot drive
    with pytest.warns(UserWarning, match="could not run on model type 'idefics3'; using the per-option path"):
        fallback = backend.score_options(requests)
    for got, want in zip(fallback, reference):
        assert np.max(np.abs(np.array(got) - np.array(want))) < 1e-4
    monkeypatch.setattr(backend, "_shared_prompt_state", None)
