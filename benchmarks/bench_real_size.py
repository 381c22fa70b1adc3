"""Comparative-prompt cost on a real-size Qwen2-VL architecture (random weights), measured side by side.

The tiny models of the other benchmarks have 4-9 tokens per image and a vision tower that is a small
share of a pass, so their ratios say little about real checkpoints. Here the model has the layer sizes
of a published checkpoint (random weights: timing only; the vocabulary is the local tokenizer's, and the
LM head runs only at scored positions) and images of real token counts. Figures:

(a) per-query references: paired/single cost per query at k = 1, 4 against the token bound
    ``1 + k * image_tokens / prompt_tokens`` (image tokens only) and the all-token ratio;
(b) a fixed reference set with the prefix cache (warm: the prefix computed by an earlier call): paired/single;
(c) five multi-token options: shared-prompt vs per-option scoring;
(d) option scoring vs greedy generation of ``--new-tokens`` tokens (time only: random weights cannot answer).

    .venv/bin/python benchmarks/bench_real_size.py [--preset qwen2_vl_2b] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--image-size 224] [--n 2] [--repeats 1]

On a GPU use ``--device cuda --dtype bfloat16`` and a larger ``--n``; ``qwen2_vl_7b`` needs about 17 GB
in bfloat16.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import transformers
from _common import (
    GRADES,
    TASK,
    TEXTS,
    RequestFactory,
    comparative_cost,
    random_image,
    timed,
)

from seeinpairs.backends.encoding import answer_token_ids
from seeinpairs.backends.hf import HFBackend
from seeinpairs.backends.tiny import TINY_FAMILIES, TinySpec

#: layer sizes of published Qwen2-VL checkpoints (their config.json); vision tower shared by both
PRESETS = {
    "qwen2_vl_2b": dict(text=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                  num_attention_heads=12, num_key_value_heads=2), mrope=[16, 24, 24]),
    "qwen2_vl_7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                  num_attention_heads=28, num_key_value_heads=4), mrope=[16, 24, 24]),
    # a scaled-down check that the script runs (not a published size)
    "qwen2_vl_check": dict(text=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2), mrope=[8, 12, 12],
                           vision=dict(depth=2, embed_dim=128, num_heads=4)),
}
VISION = dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4)


def build(preset: str, image_size: int, dtype: torch.dtype, device: str) -> HFBackend:
    """A Qwen2-VL with the preset's sizes, random weights, and the tiny family's processor and tokenizer."""
    tiny, processor = TINY_FAMILIES.get("qwen2_vl")(TinySpec(image_size=image_size, max_image_size=image_size),
                                                    list(TEXTS) + list(GRADES.classes) + [GRADES.question])
    sizes = PRESETS[preset]
    config = tiny.config
    text = config.text_config
    for key, value in sizes["text"].items():
        setattr(text, key, value)
    text.head_dim = text.hidden_size // text.num_attention_heads
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    text.rope_parameters = {**text.rope_parameters, "mrope_section": sizes["mrope"]}
    vision = config.vision_config
    for key, value in {**VISION, **sizes.get("vision", {})}.items():
        setattr(vision, key, value)
    vision.hidden_size = text.hidden_size
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.Qwen2VLForConditionalGeneration(config).to(dtype)
    backend = HFBackend.from_components(model, processor, name=preset, batch_size=8)
    return backend


def fixed_reference_cost(backend: HFBackend, args) -> None:
    factory = RequestFactory(TASK)
    rng = np.random.default_rng(7)
    queries = [random_image(rng, args.image_size) for _ in range(args.n)]
    single = [factory.request(q) for q in queries]
    t_single, _ = timed(lambda: backend.score_options(single), args.repeats)
    for k in (1, 4):
        references = [random_image(rng, args.image_size) for _ in range(k)]
        requests = [factory.request(q, references) for q in queries]
        backend.prefix_cache = False
        t_plain, plain = timed(lambda requests=requests: backend.score_options(requests), args.repeats)
        backend.prefix_cache = True
        backend.score_options(requests[:2])  # stores the prefix
        t_warm, warm = timed(lambda requests=requests: backend.score_options(requests), args.repeats)
        backend.prefix_cache = False
        diff = max(abs(a - b) for xs, ys in zip(plain, warm) for a, b in zip(xs, ys))
        print(f"(b) fixed k={k}: uncached {t_plain / t_single:.2f}x single | prefix cache warm {t_warm / t_single:.2f}x "
              f"single | max abs score diff {diff:.1e}")


def option_costs(backend: HFBackend, args) -> None:
    factory = RequestFactory(GRADES)
    rng = np.random.default_rng(11)
    requests = [factory.request(random_image(rng, args.image_size), [random_image(rng, args.image_size)])
                for _ in range(args.n)]
    lengths = [len(answer_token_ids(backend.tokenizer, backend.prompt_text(requests[0]), o)) for o in GRADES.classes]
    t_shared, shared = timed(lambda: backend.score_options(requests), args.repeats)
    backend.shared_prompt = False
    t_each, each = timed(lambda: backend.score_options(requests), args.repeats)
    backend.shared_prompt = True
    same = [int(np.argmax(a)) for a in shared] == [int(np.argmax(b)) for b in each]
    print(f"(c) k=1, 5 options of {lengths} tokens: per-option / shared-prompt {t_each / t_shared:.2f}x, "
          f"identical predictions {same}")
    start = time.perf_counter()
    for _ in range(args.repeats):
        backend.generate(requests, max_new_tokens=args.new_tokens)
    t_gen = (time.perf_counter() - start) / args.repeats
    print(f"(d) greedy generation of {args.new_tokens} tokens / shared-prompt scoring: {t_gen / t_shared:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="qwen2_vl_2b", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--image-size", type=int, default=224, help="image side (224: 64 tokens per image)")
    parser.add_argument("--n", type=int, default=2, help="queries per measurement")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    started = time.perf_counter()
    backend = build(args.preset, args.image_size, getattr(torch, args.dtype), args.device)
    parameters = sum(p.numel() for p in backend.model.parameters())
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"setup: {args.preset} ({parameters / 1e9:.2f}B parameters, random weights), {args.dtype}, {where}, "
          f"image {args.image_size}px, N={args.n}, repeats={args.repeats} (best kept); built in "
          f"{time.perf_counter() - started:.0f} s")
    with torch.inference_mode():
        comparative_cost(backend, RequestFactory(TASK), args.n, args.repeats, args.image_size, "(a)")
        fixed_reference_cost(backend, args)
        option_costs(backend, args)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
