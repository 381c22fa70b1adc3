"""Training memory and step time on a real-size Qwen2-VL architecture (random weights), measured side by side:
with and without gradient checkpointing, at k = 0, 1, 2, 4 references per example.

One LoRA training step (the default targets: the language model's attention projections, as
``lora.enabled: auto`` trains pretrained checkpoints) on a batch of comparative examples encoded by the
training code itself (:class:`~seeinpairs.training.examples.RequestExamples`, the answer-only loss).
Figures per setting:

* ``saved MB``: bytes of the tensors autograd keeps for the backward pass (counted once per storage
  by a ``saved_tensors_hooks`` pack hook): the activation memory that checkpointing trades for compute,
  measured the same way on any device;
* ``peak MB`` (CUDA only): ``torch.cuda.max_memory_allocated`` over the step, weights included;
* ``step s``: forward + backward, the best of ``--repeats``.

    .venv/bin/python benchmarks/bench_train_memory.py [--preset qwen2_vl_2b] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--image-size 224] [--batch 2] [--repeats 1]

On a GPU use ``--device cuda --dtype bfloat16``; on a CPU ``--preset qwen2_vl_check`` runs in seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import TASK, RequestFactory, random_image
from bench_real_size import PRESETS, build

from seeinpairs.backends.encoding import answer_log_probs
from seeinpairs.backends.lora_targets import language_model_targets
from seeinpairs.training.balance import answer_loss
from seeinpairs.training.examples import RequestExamples
from seeinpairs.training.sft import set_activation_checkpointing

KS = (0, 1, 2, 4)


def saved_bytes_of(step) -> int:
    """Bytes autograd saves for backward while ``step`` runs its forward pass (each storage once)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = step()
    loss.backward()
    return sum(seen.values())


def measure(model, batch, device: str, repeats: int) -> dict[str, float]:
    def forward() -> torch.Tensor:
        return answer_loss(answer_log_probs(model, batch))

    model.zero_grad(set_to_none=True)
    saved = saved_bytes_of(forward)  # also a warm-up step
    times, peak = [], float("nan")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        forward().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        times.append(time.perf_counter() - start)
    return {"saved": saved / 2**20, "peak": peak, "seconds": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="qwen2_vl_2b", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--image-size", type=int, default=224, help="image side (224: 64 tokens per image)")
    parser.add_argument("--batch", type=int, default=2, help="examples per step")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    backend = build(args.preset, args.image_size, getattr(torch, args.dtype), args.device)
    model = get_peft_model(backend.model, LoraConfig(r=16, lora_alpha=32, target_modules=language_model_targets(backend.model)))
    model.train()
    parameters = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"setup: {args.preset} ({parameters / 1e6:.0f}M parameters, random weights, LoRA r=16), {args.dtype}, "
          f"{where}, image {args.image_size}px, batch {args.batch}, repeats={args.repeats} (best kept)")
    factory, rng = RequestFactory(TASK), np.random.default_rng(5)
    rows = []
    for k in KS:
        examples = [(factory.request(random_image(rng, args.image_size),
                                     [random_image(rng, args.image_size) for _ in range(k)]), TASK.classes[i % 2])
                    for i in range(args.batch)]
        batch = RequestExamples(examples, backend.processor).batch(list(range(args.batch)), 0).to(args.device)
        tokens = int(batch.inputs["input_ids"].shape[1])
        figures = {}
        for checkpointing in (False, True):
            set_activation_checkpointing(model.base_model.model, checkpointing)
            figures[checkpointing] = measure(model, batch, args.device, args.repeats)
        rows.append((k, tokens, figures))
    print(f"{'k':>2} {'tokens':>6} | {'saved MB':>9} {'+ckpt':>8} {'ratio':>6} | {'peak MB':>8} {'+ckpt':>8} "
          f"{'ratio':>6} | {'step s':>7} {'+ckpt':>7} {'ratio':>6}")
    for k, tokens, figures in rows:
        plain, ckpt = figures[False], figures[True]
        print(f"{k:>2} {tokens:>6} | {plain['saved']:>9.1f} {ckpt['saved']:>8.1f} {ckpt['saved'] / plain['saved']:>6.2f} | "
              f"{plain['peak']:>8.0f} {ckpt['peak']:>8.0f} {ckpt['peak'] / plain['peak']:>6.2f} | "
              f"{plain['seconds']:>7.2f} {ckpt['seconds']:>7.2f} {ckpt['seconds'] / plain['seconds']:>6.2f}")
    base = rows[0][2][False]
    print("without checkpointing, against k=0: " + ", ".join(
        f"k={k} saved {f[False]['saved'] / base['saved']:.2f}x time {f[False]['seconds'] / base['seconds']:.2f}x"
        for k, _, f in rows[1:]))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
