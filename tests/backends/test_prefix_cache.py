"""Reference prefix KV cache: queries sharing instruction + references reuse the prefix's keys/values
and score the same as the uncached single-pass path."""

import numpy as np
import pytest
from shared_helpers import random_image

from seeinpairs.backends.hf import HFBackend
from seeinpairs.backends import prefix_cache
from seeinpairs.backends.prefix_cache import (
    PREFIX_FAMILIES,
    UNSUPPORTED_FAMILIES,
    PrefixFamily,
    group_by_prefix,
    prefix_cache_reason,
    query_marker,
    score_with_prefix_cache,
    supports_prefix_cache,
)
from seeinpairs.backends.tiny import TINY_FAMILIES
from seeinpairs.prompts import Request


def comparative(references, query, options=("normal", "abnormal")) -> Request:
    content = []
    if references:
        content.append({"type": "text", "text": f"The first {len(references)} images are references."})
    for i in range(len(references)):
        content += [{"type": "text", "text": f"Reference {i + 1}:"}, {"type": "image"}]
    content += [{"type": "text", "text": "Query:"}, {"type": "image"},
                {"type": "text", "text": "Is there an abnormal opacity in the query image?"}]
    return Request(messages=[{"role": "user", "content": content}], images=[*references, query],
                   options=list(options))


def sized(rng):
    return random_image(rng, int(rng.integers(40, 90)), int(rng.integers(40, 90)))


FAMILIES = ["qwen2_vl", "idefics3"]  # 3-D M-RoPE positions and 1-D positions


@pytest.fixture(scope="module", params=FAMILIES)
def backend(tiny_models, request):
    return HFBackend(tiny_models[request.param], device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def requests():
    rng = np.random.default_rng(21)
    fixed = [sized(rng) for _ in range(2)]
    shared = [comparative(fixed, sized(rng)) for _ in range(6)]  # 6 queries, the same k=2 references
    others = [comparative([sized(rng), sized(rng)], sized(rng)), comparative([sized(rng)], sized(rng))]
    return [shared[0], others[0], *shared[1:4], others[1], *shared[4:]]


def test_groups_share_prefix_and_reference_content(backend, requests):
    prompts = [backend.prompt_text(r) for r in requests]
    groups = group_by_prefix(prompts, requests, range(len(requests)),
                             marker=query_marker(backend.processor, backend.model))
    assert [members for _, members in groups] == [[0, 2, 3, 4, 6, 7]]


def test_prefix_cache_scores_equal_the_uncached_single_pass(backend, requests):
    uncached = backend.score_options(requests)
    cached_only = score_with_prefix_cache(backend, requests)
    assert [v is None for v in cached_only] == [False, True, False, False, False, True, False, False]
    backend.prefix_cache = True
    try:
        cached = backend.score_options(requests)
    finally:
        backend.prefix_cache = False
    diff = max(np.max(np.abs(np.array(c) - np.array(u))) for c, u in zip(cached, uncached))
    print(f"max abs diff cached vs uncached: {diff:.2e}")
    assert diff < 1e-4, diff
    for values, u in zip(cached_only, uncached):
        if values is not None:
            assert np.max(np.abs(np.array(values) - np.array(u))) < 1e-4


def test_prefix_cache_falls_back_for_multi_token_options_and_other_families(backend, requests, monkeypatch):
    multi = [comparative(r.images[:-1], r.images[-1], ("normal", "abnormal opacity")) for r in requests[:3]]
    assert score_with_prefix_cache(backend, multi) is None
    monkeypatch.setattr(prefix_cache, "PREFIX_FAMILIES", {})  # a family the cache does not handle
    assert score_with_prefix_cache(backend, requests) is None
    backend.prefix_cache = True
    try:
        assert len(backend.score_options(requests[:2])) == 2
    finally:
        backend.prefix_cache = False


def test_a_split_that_changes_the_tokens_runs_uncached(backend, requests, monkeypatch):
    monkeypatch.setattr(prefix_cache, "_split_is_exact", lambda *args: False)
    backend._prefix_store = None
    try:
        assert all(v is None for v in score_with_prefix_cache(backend, requests))
    finally:
        backend._prefix_store = None


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_is_reused_across_calls_and_dropped_when_weights_change(tiny_models, requests, family):
    import torch

    backend = HFBackend(tiny_models[family], device="cpu", batch_size=4, prefix_cache=True)
    reference = HFBackend(tiny_models[family], device="cpu", batch_size=4)
    shared = [requests[i] for i in (0, 2, 3, 4, 6, 7)]
    first = backend.score_options(shared[:3])
    store = backend._prefix_store
    assert (store.hits, store.misses) == (0, 1)
    later = backend.score_options(shared[3:4])  # one request: served from the stored prefix
    assert (store.hits, store.misses) == (1, 1)
    expected = reference.score_options(shared[:4])
    for got, want in zip(first + later, expected):
        assert np.max(np.abs(np.array(got) - np.array(want))) < 1e-4
    with torch.no_grad():  # an in-place weight update (as an optimizer step) invalidates the stored prefix
        for model in (backend.model, reference.model):
            language_model = model.model.language_model if family == "qwen2_vl" else model.model.text_model
            language_model.layers[0].mlp.down_proj.weight.mul_(1.5)
    changed = backend.score_options(shared[4:])
    assert store.misses == 2
    for got, want in zip(changed, reference.score_options(shared[4:])):
        assert np.max(np.abs(np.array(got) - np.array(want))) < 1e-4


def test_every_tiny_family_is_registered_or_has_a_reason():
    families = set(TINY_FAMILIES.list_names())
    assert families <= set(PREFIX_FAMILIES) | set(UNSUPPORTED_FAMILIES)
    assert not set(PREFIX_FAMILIES) & set(UNSUPPORTED_FAMILIES)
    assert all(UNSUPPORTED_FAMILIES.values())


@pytest.mark.parametrize("family", TINY_FAMILIES.list_names())
def test_each_registered_family_is_served_equal_to_the_uncached_path(tiny_models, requests, family):
    if family in UNSUPPORTED_FAMILIES:
        pytest.skip(UNSUPPORTED_FAMILIES[family])
    backend = HFBackend(tiny_models[family], device="cpu", batch_size=4)
    shared = [requests[i] for i in (0, 2, 3, 4)]  # the same two references, queries of varied sizes
    plain = backend.score(shared)
    assert all("method" not in (s.how or {}) for s in plain)  # nothing asked, nothing recorded
    uncached = [s.log_likelihoods for s in plain]
    backend.prefix_cache = True
    scored = backend.score(shared)
    cached = [s.log_likelihoods for s in scored]
    assert supports_prefix_cache(backend.model)
    assert [(s.how["method"], s.how["notes"]) for s in scored] == [("prefix-cache", [])] * len(shared)
    diff = max(np.max(np.abs(np.array(c) - np.array(u))) for c, u in zip(cached, uncached))
    print(f"{family}: max abs diff cached vs uncached {diff:.2e}")
    assert diff < 1e-4, diff


@pytest.mark.parametrize("unregistered", sorted(set(UNSUPPORTED_FAMILIES) & set(TINY_FAMILIES.list_names())))
def test_an_unregistered_family_runs_uncached_and_records_why(tiny_models, requests, unregistered):
    backend = HFBackend(tiny_models[unregistered], device="cpu", batch_size=4)
    shared = [requests[i] for i in (0, 2, 3)]
    uncached = backend.score_options(shared)
    backend.prefix_cache = True
    scored = backend.score(shared)
    assert [s.log_likelihoods for s in scored] == uncached
    reason = prefix_cache_reason(backend.model)
    assert reason == f"prefix-cache: not registered for {unregistered} ({UNSUPPORTED_FAMILIES[unregistered]})"
    assert [(s.how["method"], s.how["notes"]) for s in scored] == [("next-token", [reason])] * len(shared)


def test_a_plain_1d_entry_for_gemma3_is_caught_and_runs_uncached(tiny_models, requests, monkeypatch):
    """Gemma 3's image blocks attend bidirectionally, by token types read at absolute positions: an entry
    without the prefix's token types scores the query differently, which the first-query check catches."""
    monkeypatch.setitem(PREFIX_FAMILIES, "gemma3", PrefixFamily("linear", "<start_of_image>"))
    backend = HFBackend(tiny_models["gemma3"], device="cpu", batch_size=4)
    shared = [requests[i] for i in (0, 2, 3)]
    uncached = backend.score_options(shared)
    notes: list = [None] * len(shared)
    assert score_with_prefix_cache(backend, shared, notes=notes) == [None] * len(shared)
    assert all(note.startswith("prefix-cache: cached scores differ from the full pass") for note in notes)
    backend.prefix_cache = True
    assert backend.score_options(shared) == uncached
