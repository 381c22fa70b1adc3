"""Benchmark option scoring on the tiny Qwen2-VL (CPU), each comparison measured side by side:

(a) one-token options: single-pass vs per-option scoring vs generate-and-parse (untrained model);
(b) the cost of comparative prompts (k per-query references) against single-image prompts, beside
    the token-count bound, at the tiny model's image size and at a larger one;
(c) multi-token options (five "grade N"-style labels): shared-prompt vs per-option scoring;
(d) scoring vs generate-and-parse on a model fine-tuned for a few steps to answer with an option and
    end its turn, so that generated answers parse and stop: identical predictions and the time ratio,
    with the fewest new tokens that can hold an answer and with typical harness settings.

    .venv/bin/python benchmarks/bench_scoring.py [--n 16] [--repeats 3] [--train-steps 60]

Prints one line per figure.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import (
    GRADES,
    RequestFactory,
    comparative_cost,
    random_image,
    requests_with_fresh_references,
    timed,
    tiny_model,
)
from PIL import Image

from seeinpairs.backends.encoding import answer_token_ids
from seeinpairs.backends.hf import HFBackend
from seeinpairs.cases import Case
from seeinpairs.prompts import PromptBuilder
from seeinpairs.training import SFTSettings, train_on_examples


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
    parser.add_argument("--large-image", type=int, default=224,
                        help="image side for the second comparative-cost run, on a tiny model whose processor "
                             "keeps that size (224: 64 tokens per image)")
    parser.add_argument("--train-steps", type=int, default=60, help="fine-tuning steps for (d); 0 skips it")
    parser.add_argument("--end-of-turn", action=argparse.BooleanOptionalAction, default=True,
                        help="(d): fine-tune the end-of-sequence token too, so that generation stops after the answer")
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
    comparative_cost(backend, factory, args.n, args.repeats, 56, "(b) 56px")
    large = HFBackend(tiny_model("qwen2_vl", max_image_size=args.large_image), device="cpu", batch_size=args.batch_size)
    comparative_cost(large, factory, args.n, args.repeats, args.large_image, f"(b) {args.large_image}px")

    # (c) multi-token options: every option of a prompt from one pass of the prompt
    grades = RequestFactory(GRADES)
    rng = np.random.default_rng(7)
    graded = [grades.request(random_image(rng), [random_image(rng)]) for _ in range(args.n)]
    lengths = [len(answer_token_ids(backend.tokenizer, backend.prompt_text(graded[0]), o)) for o in GRADES.classes]
    backend.score_options(graded[:2])
    t_shared, shared = timed(lambda: backend.score_options(graded), args.repeats)
    backend.shared_prompt = False
    t_each, each = timed(lambda: backend.score_options(graded), args.repeats)
    backend.shared_prompt = True
    diff = max(abs(a - b) for f, s in zip(shared, each) for a, b in zip(f, s))
    same = [int(np.argmax(a)) for a in shared] == [int(np.argmax(b)) for b in each]
    print(f"(c) k=1, {len(GRADES.classes)} options of {lengths} tokens: shared prompt {t_shared / args.n * 1e3:.1f} "
          f"ms/query | per-option {t_each / args.n * 1e3:.1f} ms/query | per-option / shared {t_each / t_shared:.2f}x "
          f"| identical predictions {same} (max abs score diff {diff:.2e})")

    # (d) scoring vs generate-and-parse on a model that answers with an option
    if args.train_steps:
        scoring_vs_generation(args)


def scoring_vs_generation(args) -> None:
    """Fine-tune a tiny model briefly on "grade N" answers, then time scoring vs greedy generation."""
    rng = np.random.default_rng(3)
    builder = PromptBuilder(GRADES, image_loader=lambda image: image)

    def example(i: int):
        grade = i % len(GRADES.classes)
        level = 40 + 45 * grade  # brightness encodes the grade: a learnable toy task
        image = Image.fromarray(np.clip(rng.normal(level, 20, (56, 56, 3)), 0, 255).astype(np.uint8))
        return builder.build(Case(case_id=f"q{i}", images=(image,)), []), GRADES.classes[grade]

    train = [example(i) for i in range(200)]
    test = [example(1000 + i)[0] for i in range(args.n)]
    out = Path(tempfile.mkdtemp(prefix="seeinpairs-bench-sft-"))
    settings = SFTSettings(name="bench", model={"tiny": "qwen2_vl", "device": "cpu", "batch_size": 16},
                           batch_size=16, lr=2e-3, max_steps=args.train_steps, eval_every=args.train_steps,
                           end_of_turn=args.end_of_turn, output_dir=out)
    result = train_on_examples(settings, train, progress=False)
    backend = HFBackend.from_components(result.model, result.processor, name="bench-sft", batch_size=args.batch_size)
    lengths = [len(answer_token_ids(backend.tokenizer, backend.prompt_text(test[0]), o)) for o in GRADES.classes]
    backend.score_options(test[:2])
    t_score, scores = timed(lambda: backend.score_options(test), args.repeats)
    predicted = [r.options[int(np.argmax(s))] for r, s in zip(test, scores)]
    print(f"(d) fine-tuned {args.train_steps} steps on 200 'grade N' answers (end_of_turn={args.end_of_turn}); "
          f"options of {lengths} tokens; "
          f"option scoring {t_score / args.n * 1e3:.1f} ms/query")
    for new_tokens in sorted({max(lengths), 16, 64}):
        t_gen, texts = timed(lambda n=new_tokens: backend.generate(test, max_new_tokens=n), args.repeats)
        parsed = [parse(t, r.options) for t, r in zip(texts, test)]
        n_parsed = sum(p is not None for p in parsed)
        print(f"(d) generate-and-parse, max_new_tokens={new_tokens}: {t_gen / args.n * 1e3:.1f} ms/query, "
              f"generate / scoring {t_gen / t_score:.2f}x, parsed {n_parsed}/{args.n}, identical predictions "
              f"{parsed == predicted} ({sum(p == q for p, q in zip(parsed, predicted))}/{args.n}); "
              f"sample {texts[0]!r}")


if __name__ == "__main__":
    main()
