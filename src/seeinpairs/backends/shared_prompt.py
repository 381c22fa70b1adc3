"""Score all the options of a prompt from one pass of the prompt (options of several tokens).

The generic path scores option ``o`` of a prompt ``p`` by running ``p + o`` through the
model: with ``m`` options that is ``m`` full passes over the prompt, images included,
which on a comparative prompt means ``m`` times ``(1 + k)`` images. Here the prompt runs
once, with its key/value cache kept; the first token of every option is read from the
prompt's next-token distribution, and the remaining tokens of all options run as one
small batch on top of the cached prompt (the cache rows selected per option), with
explicit positions that continue each row's prompt:

* 1-D positions (Llama/Qwen2/... language models, e.g. Idefics3, SmolVLM,
  LLaVA-OneVision): ``prompt length + j``;
* Qwen2-VL/Qwen2.5-VL 3-D M-RoPE: ``max(prompt positions) + 1 + j`` on all three axes
  (text after the last image), with the prompt's own positions from ``get_rope_index``.

Prompts are right padded exactly as in the generic path, so the prompt pass is the same
computation; the padding slots stay in the cache and are masked out.

Families whose behaviour the tests pin (:data:`VERIFIED_MODEL_TYPES`) use the path
directly. Any other family is checked once per backend on its first request against the
generic path (max abs difference of log-probabilities under :data:`VERIFY_TOLERANCE`);
a mismatch warns and keeps that backend on the generic path, so an architecture with
unusual attention (e.g. bidirectional image blocks) never gets silently different scores.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from transformers import DynamicCache

from .modeling import base_model, last_position_mask

VERIFIED_MODEL_TYPES = ("qwen2_vl", "idefics3")
VERIFY_TOLERANCE = 1e-3


def _uses_mrope(base) -> bool:
    return hasattr(getattr(base, "model", None), "get_rope_index")


def prompt_positions(base, encoded: dict[str, Any]) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(position ids to pass with the prompt or None for the model's default, the next free position per row).

    Rows are right padded, so with 1-D positions the prompt occupies ``0 .. length - 1``.
    """
    lengths = encoded["attention_mask"].sum(dim=1)
    if not _uses_mrope(base) or encoded.get("image_grid_thw") is None:
        return None, lengths
    kwargs = {"image_grid_thw": encoded["image_grid_thw"], "attention_mask": encoded["attention_mask"]}
    if "mm_token_type_ids" in encoded:
        kwargs["mm_token_type_ids"] = encoded["mm_token_type_ids"]
    positions, _ = base.model.get_rope_index(encoded["input_ids"], **kwargs)
    masked = positions.masked_fill(encoded["attention_mask"][None].to(positions.device) == 0, -1)
    return positions, masked.amax(dim=(0, 2)) + 1


def _select_rows(cache, rows: torch.Tensor, config) -> DynamicCache:
    """A new cache holding the given batch rows of ``cache`` (copied; ``cache`` is left as it is)."""
    selected = DynamicCache(config=config)
    for layer, entry in enumerate(cache.layers):
        selected.update(entry.keys.index_select(0, rows), entry.values.index_select(0, rows), layer)
    return selected


def score_prompt_options(model, encoded: dict[str, Any], option_ids: Sequence[Sequence[Sequence[int]]],
                         pad_id: int, rows_per_pass: int) -> list[list[float]]:
    """Summed log-probabilities of every option of every (right padded) prompt in ``encoded``.

    ``option_ids[i][j]`` are the tokens of option ``j`` after prompt ``i``. One forward pass of
    the prompts; then the options' later tokens in passes of at most ``rows_per_pass`` rows.
    """
    base = base_model(model)
    device = encoded["input_ids"].device
    attention = encoded["attention_mask"]
    positions, next_position = prompt_positions(base, encoded)
    keep = last_position_mask(attention)
    inputs = dict(encoded, use_cache=True, logits_to_keep=keep)
    if positions is not None:
        inputs["position_ids"] = positions
    output = model(**inputs)
    logits = output.logits if output.logits.ndim == 2 else output.logits[keep]
    first = torch.log_softmax(logits.float(), dim=-1)  # (rows, vocab): each prompt's next token
    cache = output.cache if hasattr(output, "cache") else output.past_key_values
    scores = [[float(first[i, ids[0]]) for ids in options] for i, options in enumerate(option_ids)]
    later = [(i, j) for i, options in enumerate(option_ids) for j, ids in enumerate(options) if len(ids) > 1]
    mrope = _uses_mrope(base)
    for start in range(0, len(later), rows_per_pass):
        chunk = later[start:start + rows_per_pass]
        tokens = [list(option_ids[i][j][:-1]) for i, j in chunk]  # inputs that predict tokens 2..n
        span = max(len(t) for t in tokens)
        input_ids = torch.full((len(chunk), span), pad_id, dtype=encoded["input_ids"].dtype)
        option_mask = torch.zeros((len(chunk), span), dtype=attention.dtype)
        for row, t in enumerate(tokens):
            input_ids[row, :len(t)] = torch.tensor(t, dtype=input_ids.dtype)
            option_mask[row, :len(t)] = 1
        source = torch.tensor([i for i, _ in chunk], device=device)
        steps = next_position.to(device)[source][:, None] + torch.arange(span, device=device)[None]
        position_ids = steps[None].expand(3, -1, -1) if mrope else steps
        continued = model(input_ids=input_ids.to(device),
                          attention_mask=torch.cat([attention.index_select(0, source), option_mask.to(device)], 1),
                          position_ids=position_ids, cache=_select_rows(cache, source, base.config), use_cache=True)
        log_probs = torch.log_softmax(continued.logits.float(), dim=-1)
        for row, (i, j) in enumerate(chunk):
            targets = torch.tensor(option_ids[i][j][1:], device=device)
            picked = log_probs[row, torch.arange(len(targets), device=device), targets]
            scores[i][j] += float(picked.sum())
    return scores


def shared_prompt_ready(backend, check) -> bool:
    """Whether ``backend`` may use shared-prompt scoring: always for verified families; otherwise after
    ``check()`` (max abs difference against the generic path on one request) passed once."""
    state = getattr(backend, "_shared_prompt_state", None)
    if state is not None:
        return state
    model_type = getattr(base_model(backend.model).config, "model_type", None)
    if model_type in VERIFIED_MODEL_TYPES:
        state = True
    else:
        difference = check()
        state = difference is not None and difference < VERIFY_TOLERANCE
        if not state:
            why = ("could not run" if difference is None
                   else f"differs from the per-option path (max abs difference {difference:.2e})")
            warnings.warn(f"shared-prompt option scoring {why} on model type '{model_type}'; "
                          f"using the per-option path", stacklevel=3)
    backend._shared_prompt_state = state
    return state
