"""Benchmark option scoring on the tiny Qwen2-VL (CPU): single-pass vs per-option vs generate-and-parse,
and the cost of comparative prompts (k references per query) relative to single-image prompts.

    .venv/bin/python benchmarks/bench_scoring.py [--n 16] [--repeats 3]

Prints one line per figure.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import RequestFactory, random_image, timed, tiny_model

from seeinpairs.backends.hf import HFBackend, answer_token_ids


def requests_with_fresh_references(factory: RequestFactory, rng: np.random.Generator, n: int, k: int):
    """n queries, each with its own k references (per-query selection)."""
    return [factory.request(random_image(rng), [random_image(rng) for _ in range(k)]) for _ in range(n)]


def parse(text: str, options: list[str]) -> str | None:
    """Map generated text to an option: the longest option the text starts with (case-insensitive)."""
    lowered = text.strip().lower().rstrip(".")
    hits = [o for o in options if lowered == o.lower() or lowered.startswith(o.lower() + " ")
            or lowered.startswith(o.lower() + ".") or lowered.startswith(o.lower() + ",")]
    return max(hits, key=len) if hits else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16, help="queries per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (the best is kept)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    backend = HFBackend(tiny_model("qwen2_vl"), device="cpu", batch_size=args.batch_size)
    factory = RequestFactory()
    print(f"setup: tiny qwen2_vl, CPU, torch threads {torch.get_num_threads()}, N={args.n}, "
          f"batch_size={args.batch_size}, repeats={args.repeats} (best kept)")

    # (a) three ways to get a closed-set answer, same N requests (k=1, two one-token options)
    requests = requests_with_fresh_references(factory, np.random.default_rng(0), args.n, 1)
    prompt = backend.prompt_text(requests[0])
    lengths = [len(answer_token_ids(backend.tokenizer, prompt, o)) for o in requests[0].options]
    print(f"(a) options {requests[0].options} -> answer tokens {lengths}")
    backend.score_options(requests[:2])  # warm-up
    t_fast, fast = timed(lambda: backend.score_options(requests), args.repeats)
    backend.single_pass = False
    t_slow, slow = timed(lambda: backend.score_options(requests), args.repeats)
    backend.single_pass = True
    t_gen, texts = timed(lambda: backend.generate(requests, max_new_tokens=args.max_new_tokens), args.repeats)
    n = len(requests)
    pred_fast = [r.options[int(np.argmax(s))] for r, s in zip(requests, fast)]
    pred_slow = [r.options[int(np.argmax(s))] for r, s in zip(requests, slow)]
    parsed = [parse(t, r.options) for t, r in zip(texts, requests)]
    diff = max(abs(a - b) for f, s in zip(fast, slow) for a, b in zip(f, s))
    print(f"(a) single-pass scoring: {t_fast / n * 1e3:.1f} ms/query")
    print(f"(a) per-option scoring: {t_slow / n * 1e3:.1f} ms/query")
    print(f"(a) generate-and-parse ({args.max_new_tokens} new tokens): {t_gen / n * 1e3:.1f} ms/query")
    print(f"(a) per-option / single-pass: {t_slow / t_fast:.2f}x")
    print(f"(a) generate-and-parse / single-pass: {t_gen / t_fast:.2f}x")
    print(f"(a) predictions identical single-pass vs per-option: {pred_fast == pred_slow} "
          f"(max abs score diff {diff:.2e})")
    n_parsed = sum(p is not None for p in parsed)
    agree = sum(p == q for p, q in zip(parsed, pred_fast) if p is not None)
    print(f"(a) generate-and-parse parse rate: {n_parsed}/{n} ({n_parsed / n:.0%}); "
          f"agreeing with scoring where parsed: {agree}/{n_parsed}; sample outputs {texts[:3]!r}")

    # (b) comparative cost: k per-query references vs the single-image prompt (k=0), single-pass scoring
    sets = {k: requests_with_fresh_references(factory, np.random.default_rng(100 + k), args.n, k) for k in (0, 1, 4)}
    image_token = backend.model.config.image_token_id
    tokens, seconds = {}, {}
    for k, reqs in sets.items():
        encoded = backend.processor(text=[backend.prompt_text(reqs[0])], images=[reqs[0].images], return_tensors="pt")
        ids = encoded["input_ids"][0]
        tokens[k] = (len(ids), int((ids == image_token).sum()) // (k + 1))
        backend.score_options(reqs[:1])
        seconds[k], _ = timed(lambda reqs=reqs: backend.score_options(reqs), args.repeats)
    prompt0, image_tokens = tokens[0]
    print(f"(b) k=0: {prompt0} prompt tokens, {image_tokens} tokens per image, "
          f"{seconds[0] / args.n * 1e3:.1f} ms/query")
    for k in (1, 4):
        bound = 1 + k * image_tokens / prompt0
        print(f"(b) k={k}: {tokens[k][0]} prompt tokens ({tokens[k][0] / prompt0:.2f}x k=0), "
              f"{seconds[k] / args.n * 1e3:.1f} ms/query, paired/single cost {seconds[k] / seconds[0]:.2f}x, "
              f"token bound 1+k*image_tokens/prompt_tokens = {bound:.2f}")


if __name__ == "__main__":
    main()
