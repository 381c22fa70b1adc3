"""Benchmark the reference prefix KV cache on a tiny Qwen2-VL or Idefics3 (CPU): per-query scoring time of
comparative prompts with k fixed references (the same k images in every query, a fresh query image each),
with ``HFBackend(prefix_cache=True)`` and without, relative to single-image prompts (k=0).

    .venv/bin/python benchmarks/bench_prefix_cache.py [--family qwen2_vl|idefics3] [--n 16] [--ks 1 4]
        [--repeats 5] [--threads 2] [--image-size 56] [--max-image-size 224]

One ``score_options`` call of N queries per measurement. "cold": the stored prefixes are dropped before
each call, so the prefix (instruction + references) runs once per call and its cost is amortised over the
N queries; "warm": the prefix was stored by an earlier call (a fixed reference set over an evaluation), so
only the queries' suffixes run. Prints one line per k.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import RequestFactory, random_image, tiny_model

from seeinpairs.backends.hf import HFBackend


def timed(backend, requests, repeats, cold=False):
    best, scores = float("inf"), None
    for _ in range(repeats):
        if cold:
            backend._prefix_store = None
        start = time.perf_counter()
        scores = backend.score_options(requests)
        best = min(best, time.perf_counter() - start)
    return best / len(requests) * 1e3, scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16, help="queries per score_options call")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4], help="fixed references per query")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (the best is kept)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "idefics3"])
    parser.add_argument("--max-image-size", type=int, default=None,
                        help="raise the tiny processor's size cap (qwen2_vl: 224 gives 64 tokens per 224px image)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = tiny_model(args.family, max_image_size=args.max_image_size)
    plain = HFBackend(folder, device="cpu", batch_size=args.batch_size)
    cached = HFBackend(folder, device="cpu", batch_size=args.batch_size, prefix_cache=True)
    factory = RequestFactory()

    def request(references, query):
        return factory.request(query, references)

    rng = np.random.default_rng(0)
    queries = [random_image(rng, args.image_size) for _ in range(args.n)]
    print(f"setup: tiny {args.family}, CPU, torch threads {torch.get_num_threads()}, N={args.n} queries per call, "
          f"batch_size={args.batch_size}, image {args.image_size}px, repeats={args.repeats} (best kept)")
    plain.score_options([request([], q) for q in queries])  # warm-up (first calls are slow)
    t_single, _ = timed(plain, [request([], q) for q in queries], args.repeats)
    print(f"k=0 single: {t_single:.2f} ms/query")
    for k in args.ks:
        references = [random_image(rng, args.image_size) for _ in range(k)]
        requests = [request(references, q) for q in queries]
        t_plain, a = timed(plain, requests, args.repeats)
        t_cold, b = timed(cached, requests, args.repeats, cold=True)
        t_warm, c = timed(cached, requests, args.repeats)
        diff = max(abs(x - y) for xs, ys, zs in zip(a, b, c) for x, y, z in zip(xs, ys, zs) for y in (y, z))
        print(f"k={k}: uncached {t_plain:.2f} ms/query ({t_plain / t_single:.2f}x single) | "
              f"prefix cold {t_cold:.2f} ms/query ({t_cold / t_single:.2f}x) | "
              f"prefix warm {t_warm:.2f} ms/query ({t_warm / t_single:.2f}x) | max abs diff {diff:.1e}")


if __name__ == "__main__":
    main()
