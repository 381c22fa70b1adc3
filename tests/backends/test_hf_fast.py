"""Single-pass option scoring: requests whose options are all one token are scored from one
forward pass of the prompt, and give the same scores as the per-option path."""

import numpy as np
import pytest
from test_hf import FAMILIES, make_request

from seeinpairs.backends.hf import HFBackend, answer_token_ids


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
