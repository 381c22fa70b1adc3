"""Benchmark the vision-feature cache on the tiny Qwen2-VL (CPU): per-query scoring time for comparative
prompts with k fixed references (the same k images in every query) and a fresh query image each, with and
without ``HFBackend(vision_cache_mb=...)``.

    .venv/bin/python benchmarks/bench_vision_cache.py [--n 16] [--k 4] [--repeats 3] [--image-size 56] [--threads 2]

Steady state: the references are cached by a warm-up batch; every timed repeat uses new query images, so
the cached backend computes the query's features only. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from seeinpairs.backends.hf import HFBackend  # noqa: E402
from seeinpairs.backends.tiny import build_tiny_vlm  # noqa: E402
from seeinpairs.prompts import Request  # noqa: E402

TEXTS = ["normal", "abnormal", "pneumonia", "Is there an abnormal opacity in the query image?"]
QUESTION = "Is there an abnormal opacity in the query image?\nOptions: normal, abnormal.\nAnswer with one option."


def image(rng, size: int) -> Image.Image:
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def request(references: list, query) -> Request:
    k = len(references)
    content = [{"type": "text", "text": f"The first {k} images are references. The last image is the query."}]
    for i in range(k):
        content += [{"type": "text", "text": f"Reference {i + 1}:"}, {"type": "image"}]
    content += [{"type": "text", "text": "Query:"}, {"type": "image"}, {"type": "text", "text": QUESTION}]
    return Request([{"role": "user", "content": content}], [*references, query], ["normal", "abnormal"])


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
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_vlm("qwen2_vl", f"{tmp}/qwen2_vl", texts=TEXTS, seed=0)
        plain = HFBackend(folder, device="cpu", batch_size=args.batch_size)
        cached = HFBackend(folder, device="cpu", batch_size=args.batch_size, vision_cache_mb=args.cache_mb)
    rng = np.random.default_rng(0)
    references = [image(rng, args.image_size) for _ in range(args.k)]
    encoded = plain.processor(text=[plain.prompt_text(request(references, references[0]))],
                              images=[[*references, references[0]]], return_tensors="pt")
    n_tokens = encoded["input_ids"].shape[1]
    n_image = int((encoded["input_ids"][0] == plain.model.config.image_token_id).sum()) // (args.k + 1)
    print(f"setup: tiny qwen2_vl, CPU, torch threads {torch.get_num_threads()}, k={args.k} fixed references, "
          f"N={args.n} fresh queries per repeat, batch_size={args.batch_size}, image {args.image_size}px "
          f"({n_image} tokens/image, {n_tokens} prompt tokens), repeats={args.repeats} (best kept)")

    warm = [request(references, image(rng, args.image_size)) for _ in range(2)]
    plain.score_options(warm)
    cached.score_options(warm)  # caches the references
    best = {"uncached": float("inf"), "cached": float("inf")}
    diff = 0.0
    for _ in range(args.repeats):
        requests = [request(references, image(rng, args.image_size)) for _ in range(args.n)]
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
