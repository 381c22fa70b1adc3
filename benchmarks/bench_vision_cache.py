"""Benchmark the vision-feature cache on the tiny Qwen2-VL (CPU): per-query scoring time for comparative
prompts with k fixed references (the same k images in every query) and a fresh query image each, with and
without ``HFBackend(vision_cache_mb=...)``.

    .venv/bin/python benchmarks/bench_vision_cache.py [--n 16] [--k 4] [--repeats 3] [--image-size 56] [--threads 2]

Steady state: the references are cached by a warm-up batch; every timed repeat uses new query images, so
the cached backend computes the query's features only. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import RequestFactory, random_image, tiny_model

from seeinpairs.backends.hf import HFBackend


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16, help="queries per measurement")
    parser.add_argument("--k", type=int, default=4, help="fixed references per query")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (the best is kept)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=56, help="image side in pixels (tiny model caps at 84)")
    parser.add_argument("--cache-mb", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = tiny_model("qwen2_vl")
    plain = HFBackend(folder, device="cpu", batch_size=args.batch_size)
    cached = HFBackend(folder, device="cpu", batch_size=args.batch_size, vision_cache_mb=args.cache_mb)
    factory = RequestFactory()
    rng = np.random.default_rng(0)
    references = [random_image(rng, args.image_size) for _ in range(args.k)]

    def request(query):
        return factory.request(query, references)

    encoded = plain.processor(text=[plain.prompt_text(request(references[0]))],
                              images=[[*references, references[0]]], return_tensors="pt")
    n_tokens = encoded["input_ids"].shape[1]
    n_image = int((encoded["input_ids"][0] == plain.model.config.image_token_id).sum()) // (args.k + 1)
    print(f"setup: tiny qwen2_vl, CPU, torch threads {torch.get_num_threads()}, k={args.k} fixed references, "
          f"N={args.n} fresh queries per repeat, batch_size={args.batch_size}, image {args.image_size}px "
          f"({n_image} tokens/image, {n_tokens} prompt tokens), repeats={args.repeats} (best kept)")

    warm = [request(random_image(rng, args.image_size)) for _ in range(2)]
    plain.score_options(warm)
    cached.score_options(warm)  # caches the references
    best = {"uncached": float("inf"), "cached": float("inf")}
    diff = 0.0
    for _ in range(args.repeats):
        requests = [request(random_image(rng, args.image_size)) for _ in range(args.n)]
        start = time.perf_counter()
        a = plain.score_options(requests)
        best["uncached"] = min(best["uncached"], time.perf_counter() - start)
        start = time.perf_counter()
        b = cached.score_options(requests)
        best["cached"] = min(best["cached"], time.perf_counter() - start)
        diff = max(diff, max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys)))
    t_plain, t_cached = best["uncached"] / args.n * 1e3, best["cached"] / args.n * 1e3
    stats = cached.vision_cache.stats()
    print(f"k={args.k}: uncached {t_plain:.1f} ms/query | cached {t_cached:.1f} ms/query | "
          f"uncached/cached {t_plain / t_cached:.2f}x")
    print(f"max abs score diff cached vs uncached: {diff:.2e}; cache {stats}")


if __name__ == "__main__":
    main()
