"""Exact (flat) vs approximate (IVF, HNSW) retrieval over a large synthetic reference bank.

Generates an ``n x dim`` bank of clustered, L2-normalised float32 vectors in
chunks (1,000,000 x 512 is ~2 GB), builds each index, and prints one line per
figure: build time, ms/query for a batch of queries, recall@5 vs exact, and the
index size (serialised bytes), with approximate/exact ratios side by side.

    python benchmarks/bench_retrieval.py                 # 1,000,000 x 512
    python benchmarks/bench_retrieval.py --n 200000 --kinds ivf
"""

from __future__ import annotations

import argparse
import os
import time

import faiss
import numpy as np

from seeinpairs.references.index import (
    AUTO_LARGE_KIND,
    build_index,
    default_nlist,
    index_nbytes,
    recall_at_k,
)


def clustered(n: int, dim: int, centers: np.ndarray, noise: float, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors around random cluster centres, generated chunk by chunk."""
    out = np.empty((n, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        which = rng.integers(0, len(centers), stop - start)
        block = centers[which] + rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(noise)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    _, ids = index.search(queries, k)
    return ids, (time.perf_counter() - start) * 1000 / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=0.04, help="per-dimension noise around a unit-scale centre")
    parser.add_argument("--kinds", default=f"{AUTO_LARGE_KIND}", help="comma-separated approximate kinds: ivf,hnsw")
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--ef-search", type=int, default=None)
    args = parser.parse_args()

    threads = faiss.omp_get_max_threads()
    print(f"bank: {args.n} x {args.dim} float32 ({args.n * args.dim * 4 / 2**30:.2f} GiB), "
          f"{args.clusters} clusters, {args.queries} queries, k={args.k}")
    print(f"threads: faiss omp={threads}, os.cpu_count={os.cpu_count()}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((args.clusters, args.dim), dtype=np.float32) / np.float32(np.sqrt(args.dim))
    t0 = time.perf_counter()
    bank = clustered(args.n, args.dim, centers, args.noise, seed=1)
    queries = clustered(args.queries, args.dim, centers, args.noise, seed=2)
    print(f"generate: {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    flat = build_index(bank, "flat")
    flat_build = time.perf_counter() - t0
    exact, flat_ms = timed_search(flat, queries, args.k)
    flat_bytes = args.n * args.dim * 4  # IndexFlat stores exactly the raw vectors
    print(f"flat build: {flat_build:.2f} s")
    print(f"flat latency: {flat_ms:.3f} ms/query (batch of {args.queries})")
    print(f"flat recall@{args.k}: 1.000 (exact)")
    print(f"flat memory: {flat_bytes / 2**20:.1f} MiB")
    del flat

    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        options = {}
        if kind == "ivf" and args.nprobe is not None:
            options["nprobe"] = args.nprobe
        if kind == "hnsw" and args.ef_search is not None:
            options["ef_search"] = args.ef_search
        t0 = time.perf_counter()
        index = build_index(bank, kind, **options)
        build = time.perf_counter() - t0
        ids, ms = timed_search(index, queries, args.k)
        recall = recall_at_k(ids, exact, args.k)
        nbytes = index_nbytes(index)
        if kind == "ivf":
            detail = f"nlist={default_nlist(args.n)}, nprobe={faiss.downcast_index(index).nprobe}"
        else:
            detail = f"M={faiss.downcast_index(index).hnsw.nb_neighbors(1)}, efSearch={faiss.downcast_index(index).hnsw.efSearch}"
        print(f"{kind} ({detail}) build: {build:.2f} s  (x{build / max(flat_build, 1e-9):.1f} flat)")
        print(f"{kind} latency: {ms:.3f} ms/query  (flat {flat_ms:.3f}; speed-up x{flat_ms / ms:.1f})")
        print(f"{kind} recall@{args.k}: {recall:.3f}  (flat 1.000)")
        print(f"{kind} memory: {nbytes / 2**20:.1f} MiB  (flat {flat_bytes / 2**20:.1f}; x{nbytes / flat_bytes:.2f})")
        del index


if __name__ == "__main__":
    main()
