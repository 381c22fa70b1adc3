"""references.index: exact vs approximate faiss indexes, persistence and recall."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from seeinpairs.references import ReferenceBank
from seeinpairs.references.index import (
    AUTO_FLAT_LIMIT,
    build_index,
    choose_kind,
    index_kind,
    load_embeddings,
    load_index,
    recall_at_k,
    save_embeddings,
    save_index,
)


def _clustered(n: int, dim: int, seed: int, clusters: int = 200, noise: float = 0.08) -> np.ndarray:
    rng = np.random.default_rng(1234)  # same centres for bank and queries
    centers = rng.standard_normal((clusters, dim)).astype(np.float32) / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32) * noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bank = _clustered(20_000, 64, seed=1)
    queries = _clustered(200, 64, seed=2)
    exact = np.argsort(-(queries @ bank.T), axis=1, kind="stable")[:, :5]
    return bank, queries, exact


def test_flat_equals_brute_force(data):
    bank, queries, exact = data
    index = build_index(bank, "flat")
    assert index_kind(index) == "flat" and index.ntotal == len(bank)
    scores, ids = index.search(queries, 5)
    brute = queries @ bank.T
    np.testing.assert_allclose(scores, np.take_along_axis(brute, ids, axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, -np.sort(-brute, axis=1)[:, :5], rtol=1e-5, atol=1e-5)
    assert recall_at_k(ids, exact, 5) >= 0.999  # only float ties could differ


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_at_5(data, kind):
    bank, queries, exact = data
    index = build_index(bank, kind)
    assert index_kind(index) == kind and index.ntotal == len(bank)
    _, ids = index.search(queries, 5)
    assert recall_at_k(ids, exact, 5) >= 0.95


def test_ivf_uses_about_4_sqrt_n_lists(data):
    bank, _, _ = data
    index = faiss.downcast_index(build_index(bank[:2_500], "ivf", nprobe=7))
    assert index.nlist == 200 and index.nprobe == 7


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(data, kind, tmp_path):
    bank, queries, _ = data
    vectors_path = save_embeddings(bank[:5_000], tmp_path / "bank.npy")
    vectors = load_embeddings(vectors_path)
    assert isinstance(vectors, np.memmap) and vectors.dtype == np.float32
    np.testing.assert_array_equal(np.load(vectors_path, mmap_mode="r"), bank[:5_000])
    index = build_index(vectors, kind)
    path = save_index(index, tmp_path / f"{kind}.faiss")
    scores, ids = index.search(queries, 5)
    for mmap in (True, False):
        loaded = load_index(path, mmap=mmap)
        assert index_kind(loaded) == kind and loaded.ntotal == index.ntotal
        again_scores, again_ids = loaded.search(queries, 5)
        np.testing.assert_array_equal(again_ids, ids)
        np.testing.assert_array_equal(again_scores, scores)
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "missing.faiss")


def test_auto_is_flat_below_the_limit():
    assert choose_kind(10) == "flat" and choose_kind(AUTO_FLAT_LIMIT - 1) == "flat"
    assert choose_kind(AUTO_FLAT_LIMIT) in ("ivf", "hnsw")
    assert choose_kind(AUTO_FLAT_LIMIT, "flat") == "flat"
    assert index_kind(build_index(_clustered(100, 16, seed=3))) == "flat"
    with pytest.raises(ValueError, match="unknown index kind"):
        choose_kind(10, "lsh")


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(exact, exact, 3) == 1.0
    assert recall_at_k(np.array([[3, 2, 9], [-1, -1, -1]]), exact, 3) == pytest.approx(2 / 6)
    assert recall_at_k(np.array([[1, 9, 9], [4, 9, 9]]), exact, 1) == 1.0


def test_bank_index_kind_option():
    from seeinpairs.errors import BankError

    with pytest.raises(BankError, match="index_kind"):
        ReferenceBank([], index_kind="lsh")
    assert ReferenceBank([]).index_kind == "auto"
