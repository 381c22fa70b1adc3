"""faiss indexes for reference retrieval: exact for small banks, approximate for large ones.

Bank vectors are L2-normalised float32, so cosine similarity is the inner
product and every index here uses ``METRIC_INNER_PRODUCT``.

Kinds
-----
``flat``
    ``IndexFlatIP``: exact brute force. Fast enough below ~50,000 vectors.
``ivf``
    ``IndexIVFFlat`` with ``nlist ~ 4*sqrt(n)`` lists, k-means trained on a
    sample of the bank; ``nprobe`` lists are scanned per query.
``hnsw``
    ``IndexHNSWFlat`` (M=32, inner product); ``efSearch`` sets the search beam.
``auto``
    ``flat`` below :data:`AUTO_FLAT_LIMIT` vectors, else ``ivf``. Why IVF and
    not HNSW: on 1,000,000 x 512 clustered vectors (``benchmarks/bench_retrieval.py``,
    ``benchmarks/RESULTS.md``, CPU, 2 cores) IVF (nlist=4000, nprobe=32) reached
    recall@5 1.000 at 0.56 ms/query, built in 71 s and took 1.01x the raw
    vectors' memory; HNSW (M=32, efConstruction=40, efSearch=128) was faster per
    query (0.21 ms) but reached only recall@5 0.81, built in 130 s and took
    1.13x the memory (2*M int32 links per vector). IVF is the kind that meets
    recall@5 >= 0.95 at its defaults, with the lower build time and memory.
    HNSW needs a larger ``ef_construction``/``ef_search`` (slower build and
    query) to reach that recall at this scale.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..atomic import atomic_path

import faiss
import numpy as np

__all__ = [
    "AUTO_FLAT_LIMIT",
    "INDEX_KINDS",
    "build_index",
    "choose_kind",
    "index_kind",
    "index_nbytes",
    "load_embeddings",
    "load_index",
    "recall_at_k",
    "save_embeddings",
    "save_index",
]

#: Below this many vectors ``kind="auto"`` builds an exact flat index.
AUTO_FLAT_LIMIT = 50_000
#: The kind ``auto`` picks at or above :data:`AUTO_FLAT_LIMIT` (see the module docstring).
AUTO_LARGE_KIND = "ivf"
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")

DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128
HNSW_M = 32


def choose_kind(n: int, kind: str = "auto") -> str:
    """The concrete kind ``build_index`` uses for ``n`` vectors."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind '{kind}' (expected one of {', '.join(INDEX_KINDS)})")
    if kind != "auto":
        return kind
    return "flat" if n < AUTO_FLAT_LIMIT else AUTO_LARGE_KIND


def default_nlist(n: int) -> int:
    """About ``4*sqrt(n)`` inverted lists, at least 1 and never more than ``n``."""
    return max(1, min(n, int(round(4 * math.sqrt(max(n, 1))))))


def _as_matrix(embeddings: np.ndarray) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d (n, dim) array, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _add_in_chunks(index: faiss.Index, vectors: np.ndarray, chunk: int) -> None:
    # Chunks keep a memory-mapped bank from being copied into RAM all at once.
    for start in range(0, len(vectors), chunk):
        index.add(np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32))


def build_index(
    embeddings: np.ndarray,
    kind: str = "auto",
    *,
    nlist: int | None = None,
    nprobe: int = DEFAULT_NPROBE,
    train_size: int | None = None,
    niter: int = 10,
    M: int = HNSW_M,
    ef_construction: int = 40,
    ef_search: int = DEFAULT_EF_SEARCH,
    seed: int = 0,
    chunk: int = 100_000,
) -> faiss.Index:
    """An inner-product faiss index over ``embeddings`` (``(n, dim)``, L2-normalised float32).

    ``kind`` is ``"flat"``, ``"ivf"``, ``"hnsw"`` or ``"auto"`` (see the module
    docstring). IVF options: ``nlist`` (default ``~4*sqrt(n)``), ``nprobe``,
    ``train_size`` (k-means sample, default ``min(n, 32*nlist)``), ``niter``.
    HNSW options: ``M``, ``ef_construction``, ``ef_search``. ``embeddings`` may be
    a memory-mapped array; it is added in chunks of ``chunk`` rows.
    """
    vectors = embeddings if isinstance(embeddings, np.memmap) else _as_matrix(embeddings)
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d (n, dim) array, got shape {vectors.shape}")
    n, dim = vectors.shape
    kind = choose_kind(n, kind)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        _add_in_chunks(index, vectors, chunk)
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(M), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.efSearch = int(ef_search)
        _add_in_chunks(index, vectors, chunk)
        return index
    # ivf
    if n == 0:
        raise ValueError("an IVF index needs at least one vector to train on")
    nlist = default_nlist(n) if nlist is None else max(1, min(int(nlist), n))
    train_size = min(n, max(nlist, 32 * nlist) if train_size is None else int(train_size))
    rng = np.random.default_rng(seed)
    sample_ids = np.sort(rng.choice(n, size=train_size, replace=False)) if train_size < n else slice(None)
    sample = np.ascontiguousarray(vectors[sample_ids], dtype=np.float32)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = int(niter)
    index.cp.seed = int(seed)
    index.cp.min_points_per_centroid = 1  # a deliberate, small sample: no "too few points" warning
    index.cp.max_points_per_centroid = max(256, -(-train_size // nlist))
    index.cp.spherical = True  # centroids on the unit sphere suit cosine similarity
    index.train(sample)
    index.nprobe = min(int(nprobe), nlist)
    _add_in_chunks(index, vectors, chunk)
    _keep_quantizer(index, quantizer)
    return index


def _keep_quantizer(index: faiss.Index, quantizer: faiss.Index) -> None:
    # The Python wrapper of ``quantizer`` would delete the C++ object it owns
    # while ``index`` still points at it; hand ownership to ``index``.
    quantizer.this.disown()
    index.own_fields = True


def index_kind(index: faiss.Index) -> str:
    """``"flat"``, ``"ivf"``, ``"hnsw"`` or the faiss class name for anything else."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexFlat):
        return "flat"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    return type(index).__name__


def set_search_params(index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None) -> faiss.Index:
    """Set ``nprobe`` (IVF) or ``efSearch`` (HNSW) on an existing index; other kinds ignore them."""
    index = faiss.downcast_index(index)
    if nprobe is not None and isinstance(index, faiss.IndexIVF):
        index.nprobe = min(int(nprobe), index.nlist)
    if ef_search is not None and isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(ef_search)
    return index


def index_nbytes(index: faiss.Index) -> int:
    """The index's serialised size in bytes (close to its in-memory footprint)."""
    return int(faiss.serialize_index(index).nbytes)


def save_index(index: faiss.Index, path: str | Path) -> Path:
    """Write ``index`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return path


def load_index(path: str | Path, mmap: bool = True) -> faiss.Index:
    """Read an index written by :func:`save_index`.

    With ``mmap`` the file is opened with ``faiss.IO_FLAG_MMAP | IO_FLAG_READ_ONLY``
    (faiss 1.15 maps flat, IVF and HNSW indexes); where a faiss build cannot map
    an index type it raises, and the index is read into memory instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no faiss index at {path}")
    if mmap:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            pass
    return faiss.read_index(str(path))


def save_embeddings(embeddings: np.ndarray, path: str | Path) -> Path:
    """Save ``(n, dim)`` float32 embeddings as ``.npy`` (loadable with ``np.load(mmap_mode="r")``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        np.save(tmp, np.ascontiguousarray(embeddings, dtype=np.float32))
    return path


def load_embeddings(path: str | Path, mmap: bool = True) -> np.ndarray:
    """Embeddings saved by :func:`save_embeddings`, memory-mapped read-only by default."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean fraction of each query's exact top-``k`` ids found in its approximate top-``k``.

    Both arguments are ``(n_queries, >=k)`` id arrays as returned by ``index.search``;
    ``-1`` (no result) never counts as a hit.
    """
    approx = np.asarray(approx_ids)[:, :k]
    exact = np.asarray(exact_ids)[:, :k]
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"{approx.shape[0]} approximate rows but {exact.shape[0]} exact rows")
    if k <= 0 or exact.shape[0] == 0:
        return 1.0
    hits = 0
    for a, e in zip(approx, exact):
        hits += len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist()))
    return hits / (exact.shape[0] * k)
