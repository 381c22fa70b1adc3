"""Vision-feature cache: same scores as the uncached path, hits for repeated references, bounded memory."""

import numpy as np
import pytest
import torch
from shared_helpers import random_image
from test_hf import FAMILIES, make_request

from seeinpairs.backends.hf import HFBackend
from seeinpairs.backends.tiny import TINY_FAMILIES
from seeinpairs.backends.vision_cache import (
    UNSUPPORTED_FAMILIES,
    VISION_FAMILIES,
    VisionFeatureCache,
    install_vision_cache,
    uninstall_vision_cache,
    vision_cache_reason,
)
from seeinpairs.prompts import Request

QUESTION = "Is there an abnormal opacity in the query image?"


@pytest.fixture(scope="module")
def pairs(tiny_models):
    """(uncached, cached) backends of each family, loaded from the same folder."""
    return {family: (HFBackend(tiny_models[family], device="cpu", batch_size=4),
                     HFBackend(tiny_models[family], device="cpu", batch_size=4, vision_cache_mb=16))
            for family in FAMILIES}


def comparative(references, query, options=("normal", "abnormal")) -> Request:
    content = []
    for i in range(len(references)):
        content += [{"type": "text", "text": f"Reference {i + 1}:"}, {"type": "image"}]
    content += [{"type": "text", "text": "Query:"}, {"type": "image"}, {"type": "text", "text": QUESTION}]
    return Request(messages=[{"role": "user", "content": content}], images=[*references, query], options=list(options))


def fixed_reference_requests(seed: int, n_queries: int, k: int = 4, size=(56, 56), options=("normal", "abnormal")):
    rng = np.random.default_rng(seed)
    references = [random_image(rng, *size) for _ in range(k)]
    return [comparative(references, random_image(rng, *size), options) for _ in range(n_queries)]


def assert_close(a, b, tol=1e-5):
    assert [len(x) for x in a] == [len(y) for y in b]
    assert max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys)) < tol


def test_off_by_default(pairs):
    plain, cached = pairs["qwen2_vl"]
    assert plain.vision_cache is None
    assert "get_image_features" not in vars(plain.model.model)
    assert isinstance(cached.vision_cache, VisionFeatureCache)
    assert cached.vision_cache.max_bytes == 16 * 2**20


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_scores_equal_uncached_with_repeated_references(pairs, family):
    plain, cached = pairs[family]
    cache = cached.vision_cache
    cache.clear()
    cache.hits = cache.misses = 0
    n, k = 6, 4
    requests = fixed_reference_requests(3, n, k)
    reference = plain.score_options(requests)
    first = cached.score_options(requests)
    assert_close(first, reference)
    # each distinct image is computed once: the k shared references and the n queries
    assert cache.misses == k + n
    assert cache.hits == n * (k + 1) - (k + n)
    # a later request set with the same references: only the new queries miss
    later = fixed_reference_requests(3, n, k)  # same seed: same references, same queries
    fresh = [comparative(r.images[:k], random_image(np.random.default_rng(50 + i), 56, 56))
             for i, r in enumerate(later)]
    assert_close(cached.score_options(fresh), plain.score_options(fresh))
    assert cache.misses == k + 2 * n
    assert cache.hits == 2 * n * (k + 1) - (k + 2 * n)
    # nothing new at all: every image hits
    misses = cache.misses
    assert_close(cached.score_options(requests), reference)
    assert cache.misses == misses
    assert cache.nbytes <= cache.max_bytes


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_scores_equal_uncached_on_both_paths(pairs, family):
    """Single-pass and per-option rows, varied image sizes and reference counts, repeated across calls."""
    plain, cached = pairs[family]
    rng = np.random.default_rng(17)
    base = [make_request(rng, k) for k in (0, 1, 3, 2)]
    base.append(make_request(rng, 2, ("normal", "abnormal opacity")))  # multi-token option: per-option path
    shared = base[2].images[:3]
    repeated = [comparative(shared, img, opts) for img, opts in
                [(base[0].images[0], ("normal", "abnormal")), (base[1].images[1], ("normal", "abnormal opacity"))]]
    requests = base + repeated
    reference = plain.score_options(requests)
    assert_close(cached.score_options(requests), reference)
    assert_close(cached.score_options(requests[::-1]), reference[::-1])
    assert cached.vision_cache.hits > 0


def test_generate_unchanged_by_cache(pairs):
    plain, cached = pairs["qwen2_vl"]
    requests = fixed_reference_requests(8, 3, 2)
    assert cached.generate(requests, max_new_tokens=3) == plain.generate(requests, max_new_tokens=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_eviction_keeps_memory_under_the_bound(pairs, family):
    plain, cached = pairs[family]
    cache = cached.vision_cache
    saved = cache.max_bytes
    try:
        cache.clear()
        requests = fixed_reference_requests(21, 6, 4)
        cached.score_options(requests[:1])
        entry = cache.nbytes // len(cache)
        cache.clear()
        cache.max_bytes = 3 * entry  # room for three images out of ten
        evictions = cache.evictions
        assert_close(cached.score_options(requests), plain.score_options(requests))
        assert cache.nbytes <= cache.max_bytes
        assert len(cache) <= 3
        assert cache.evictions > evictions
    finally:
        cache.max_bytes = saved
        cache.clear()


def test_gradients_bypass_the_cache(pairs):
    _, cached = pairs["qwen2_vl"]
    cache = cached.vision_cache
    encoded = cached._encode([cached.prompt_text(r) for r in fixed_reference_requests(4, 1, 1)],
                             [r.images for r in fixed_reference_requests(4, 1, 1)], "right")
    before = (cache.hits, cache.misses)
    with torch.enable_grad():
        out = cached.model.model.get_image_features(encoded["pixel_values"], encoded["image_grid_thw"])
    assert (cache.hits, cache.misses) == before
    assert len(out.pooler_output) == 2


def test_lru_order_and_oversized_entries():
    cache = VisionFeatureCache(max_bytes=3 * 16)  # three float32 tensors of 4 values
    values = {name: torch.full((4,), float(i)) for i, name in enumerate("abcd")}
    for name in "abc":
        cache.put(name, values[name])
    assert cache.get("a") is values["a"]  # a is now the most recent
    cache.put("d", values["d"])  # evicts b, the least recent
    assert "b" not in cache and all(n in cache for n in "acd")
    assert cache.nbytes == 48 and cache.evictions == 1
    cache.put("big", torch.zeros(100))  # larger than the bound: not cached, nothing evicted
    assert "big" not in cache and len(cache) == 3


def test_key_covers_content_shape_and_identity():
    a = VisionFeatureCache(1024, identity="m1")
    b = VisionFeatureCache(1024, identity="m2")
    x = torch.arange(12, dtype=torch.float32)
    assert a.key(x) == a.key(x.clone())
    assert a.key(x) != a.key(x.reshape(3, 4))
    assert a.key(x) != a.key(x + 1)
    assert a.key(x) != b.key(x)
    assert a.key(x.to(torch.bfloat16)) != a.key(x)


def test_install_and_uninstall(tiny_models):
    backend = HFBackend(tiny_models["qwen2_vl"], device="cpu")
    cache = install_vision_cache(backend.model, 2**20)
    assert cache is not None and "get_image_features" in vars(backend.model.model)
    uninstall_vision_cache(backend.model)
    assert "get_image_features" not in vars(backend.model.model)


def test_every_tiny_family_is_registered_or_has_a_reason():
    assert set(TINY_FAMILIES.list_names()) <= set(VISION_FAMILIES) | set(UNSUPPORTED_FAMILIES)
    assert not set(VISION_FAMILIES) & set(UNSUPPORTED_FAMILIES)
    assert all(UNSUPPORTED_FAMILIES.values())


def varied_requests() -> list[Request]:
    """Repeated references, varied sizes and reference counts, one- and multi-token options."""
    rng = np.random.default_rng(17)
    requests = fixed_reference_requests(3, 3, 2) + [make_request(rng, k) for k in (0, 1, 3)]
    return requests + [make_request(rng, 2, ("normal", "abnormal opacity"))]


@pytest.mark.parametrize("family", TINY_FAMILIES.list_names())
def test_each_registered_family_is_cached_equal_to_uncached(tiny_models, family):
    if family in UNSUPPORTED_FAMILIES:
        pytest.skip(UNSUPPORTED_FAMILIES[family])
    plain = HFBackend(tiny_models[family], device="cpu", batch_size=4)
    cached = HFBackend(tiny_models[family], device="cpu", batch_size=4, vision_cache_mb=16)
    assert cached.vision_cache is not None and cached.vision_cache_note is None
    requests = varied_requests()
    reference = plain.score_options(requests)
    assert_close(cached.score_options(requests), reference)
    assert_close(cached.score_options(requests[::-1]), reference[::-1])
    stats = cached.vision_cache.stats()
    assert stats["hits"] > stats["misses"] > 0


@pytest.mark.parametrize("unregistered", sorted(set(UNSUPPORTED_FAMILIES) & set(TINY_FAMILIES.list_names())))
def test_an_unregistered_family_runs_uncached_and_records_why(tiny_models, unregistered):
    plain = HFBackend(tiny_models[unregistered], device="cpu", batch_size=4)
    with pytest.warns(UserWarning, match=f"not registered for {unregistered}"):
        cached = HFBackend(tiny_models[unregistered], device="cpu", batch_size=4, vision_cache_mb=16)
    assert cached.vision_cache is None
    reason = vision_cache_reason(cached.model)
    assert reason == f"vision-cache: not registered for {unregistered} ({UNSUPPORTED_FAMILIES[unregistered]})"
    requests = varied_requests()[:2]
    scored = cached.score(requests)
    assert_close([s.log_likelihoods for s in scored], plain.score_options(requests))
    assert [s.how["notes"] for s in scored] == [[reason]] * len(requests)
