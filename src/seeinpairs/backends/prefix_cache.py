"""Reference prefix KV cache for single-pass scoring.

Comparative prompts put the instruction and the reference images before the query
(:mod:`seeinpairs.prompts`), so requests that share a fixed reference set share every
token up to the query image's marker (``<|vision_start|>`` for Qwen2-VL, the
processor's ``<image>`` for Idefics3, SmolVLM v1 included). For such a group the prefix (its text
and its reference images) is run through the model once with ``use_cache=True``; each
query then runs only its suffix (query image + question + assistant turn) on top of
the cached keys/values. Positions continue the prefix: for Qwen2-VL the full
sequence's 3-D M-RoPE positions (``get_rope_index`` on prefix + suffix ids) sliced to
the suffix; for 1-D positions ``prefix length + j``. Suffixes are batched (right
padded) on a fresh cache seeded with the prefix's keys/values (broadcast over the
batch; the cache's concatenation copies, so the stored prefix is never written to).
When a prefix is first computed, its tokens and its first query's suffix tokens are
checked to concatenate to that query's full encoding; a prompt whose split changes
the tokens (e.g. a tokenizer that would add a BOS token to the suffix) runs uncached.

Computed prefixes are kept across calls in a small LRU on the backend
(:class:`PrefixStore`, ``backend.prefix_cache_entries`` entries, default 4), keyed by
prefix text and reference pixel content, and invalidated whenever any model
parameter is modified in place (e.g. a training step), so a fixed reference set
costs its prefix once per evaluation, not once per call.

Only requests whose options are all one token (single-pass scoring) are handled, only
for the families whose positions and image inputs are handled here
(:data:`SUPPORTED_MODEL_TYPES`), and only in groups of at least two requests;
everything else is left to the ordinary path (``None`` entries).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Sequence

import torch
from transformers import DynamicCache

from ..prompts import Request
from .encoding import answer_token_ids
from .modeling import base_model, last_position_mask

#: model type -> how positions continue after the prefix ("mrope": Qwen2-VL 3-D; "linear": 1-D).
#: Only families whose cached scores the tests compare with the uncached path (SmolVLM v1
#: checkpoints are model type "idefics3").
SUPPORTED_MODEL_TYPES = {"qwen2_vl": "mrope", "idefics3": "linear"}
VISION_START = "<|vision_start|>"


def position_kind(model) -> str | None:
    """"mrope", "linear", or None when the prefix cache does not handle this model."""
    base = base_model(model)
    kind = SUPPORTED_MODEL_TYPES.get(getattr(base.config, "model_type", None))
    if kind == "mrope" and not hasattr(getattr(base, "model", None), "get_rope_index"):
        return None
    return kind


def supports_prefix_cache(model) -> bool:
    return position_kind(model) is not None


def query_marker(processor, model) -> str:
    """The text that starts an image in a rendered prompt: where the query's suffix begins."""
    if position_kind(model) == "mrope":
        return VISION_START
    return getattr(processor, "image_token", None) or "<image>"


def _image_digest(images) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.mode}|{image.size}|".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def split_prompt(prompt: str, n_images: int, marker: str = VISION_START) -> tuple[str, str] | None:
    """(prefix, suffix) of a rendered prompt, split where the query image's ``marker`` starts; None when the
    prompt's image slots do not match the request's images."""
    if n_images < 1 or prompt.count(marker) != n_images:
        return None
    cut = prompt.rindex(marker)
    return prompt[:cut], prompt[cut:]


def group_by_prefix(prompts: Sequence[str], requests: Sequence[Request], eligible: Sequence[int],
                    min_size: int = 2, known=frozenset(), marker: str = VISION_START
                    ) -> list[tuple[tuple[str, str], list[int]]]:
    """Groups ((prefix text, reference digest), request indices) of eligible requests with identical prefix
    text and identical reference images (by pixel content): groups of >= ``min_size``, or any size when
    the key is in ``known`` (a prefix computed earlier)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for ri in eligible:
        parts = split_prompt(prompts[ri], len(requests[ri].images), marker)
        if parts is None:
            continue
        key = (parts[0], _image_digest(requests[ri].images[:-1]))
        groups.setdefault(key, []).append(ri)
    return [(key, members) for key, members in groups.items() if len(members) >= min_size or key in known]


def _weights_version(model) -> tuple[int, int]:
    """Changes whenever a parameter is replaced or modified in place (torch's version counters)."""
    return (sum(p._version for p in model.parameters()), sum(id(p) for p in model.parameters()))


class PrefixStore:
    """Computed prefixes (ids, token types, grid, per-layer keys/values), LRU, for one model state."""

    def __init__(self, max_entries: int = 4) -> None:
        self.max_entries = max_entries
        self.version: tuple[int, int] | None = None
        self.entries: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.hits = self.misses = 0

    def sync(self, version) -> None:
        """Drop every entry when the model's weights changed since they were computed."""
        if version != self.version:
            self.entries.clear()
            self.version = version

    def get(self, key, version):
        self.sync(version)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return entry

    def put(self, key, entry) -> None:
        if self.max_entries <= 0:
            return
        self.entries[key] = entry
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


def _store(backend) -> PrefixStore:
    store = getattr(backend, "_prefix_store", None)
    if store is None:
        store = PrefixStore(getattr(backend, "prefix_cache_entries", 4))
        backend._prefix_store = store
    return store


def _encode(processor, texts: list[str], images: list[list] | None, add_special_tokens: bool = True
            ) -> dict[str, Any]:
    tokenizer = processor.tokenizer
    previous = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        kwargs = {"images": images} if images else {}
        if not add_special_tokens:
            kwargs["add_special_tokens"] = False
        return dict(processor(text=texts, padding=True, return_tensors="pt", **kwargs))
    finally:
        tokenizer.padding_side = previous


@torch.inference_mode()
def score_with_prefix_cache(backend, requests: Sequence[Request], prompts: Sequence[str] | None = None,
                            option_ids: Sequence[Sequence[Sequence[int]]] | None = None
                            ) -> list[list[float] | None] | None:
    """Scores of the requests that the prefix cache can serve (one-token options, a supported family, a
    shared prefix with at least one other request); ``None`` entries for the rest. Returns None when the
    model is unsupported or no request qualifies."""
    model = backend.model
    kind = position_kind(model)
    if kind is None:
        return None
    processor, tokenizer, device = backend.processor, backend.tokenizer, backend.device
    prompts = list(prompts) if prompts is not None else [backend.prompt_text(r) for r in requests]
    if option_ids is None:
        option_ids = [[answer_token_ids(tokenizer, p, o) for o in r.options] for p, r in zip(prompts, requests)]
    eligible = [ri for ri, ids in enumerate(option_ids) if ids and all(len(i) == 1 for i in ids)]
    store = _store(backend)
    version = _weights_version(model)
    store.sync(version)  # a changed model drops every stored prefix
    marker = query_marker(processor, model)
    groups = group_by_prefix(prompts, requests, eligible, known=set(store.entries), marker=marker)
    if not groups:
        return None
    base = base_model(model)
    results: list[list[float] | None] = [None] * len(requests)
    for key, members in groups:
        prefix_text = key[0]
        entry = store.get(key, version)
        if entry is None:
            first = members[0]
            entry = _compute_prefix(model, base, processor, device, prefix_text, requests[first].images[:-1], kind)
            entry["usable"] = _split_is_exact(processor, prompts[first], requests[first].images, entry["ids"],
                                              prompts[first][len(prefix_text):])
            store.put(key, entry)
        if not entry["usable"]:
            continue
        for start in range(0, len(members), backend.batch_size):
            chunk = members[start:start + backend.batch_size]
            suffixes = [prompts[ri][len(prefix_text):] for ri in chunk]
            suffix = _encode(processor, suffixes, [[requests[ri].images[-1]] for ri in chunk],
                             add_special_tokens=False)
            inputs, keep = _suffix_inputs(base, entry, suffix, kind)
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            keep = keep.to(device)
            logits = model(**inputs, logits_to_keep=keep).logits
            if logits.ndim == 3:
                logits = logits[keep]
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            for row, ri in enumerate(chunk):
                results[ri] = [float(log_probs[row, ids[0]]) for ids in option_ids[ri]]
    return results


def _split_is_exact(processor, prompt: str, images, prefix_ids: torch.Tensor, suffix_text: str) -> bool:
    """Whether prefix tokens + suffix tokens (encoded apart) are the full prompt's tokens."""
    full = _encode(processor, [prompt], [list(images)])["input_ids"]
    suffix = _encode(processor, [suffix_text], [[images[-1]]], add_special_tokens=False)["input_ids"]
    return torch.equal(torch.cat([prefix_ids, suffix], dim=1), full)


def _suffix_inputs(base, entry: dict[str, Any], suffix: dict[str, Any], kind: str
                   ) -> tuple[dict[str, Any], torch.Tensor]:
    """The model inputs of a batch of suffixes on top of a stored prefix, and the (rows, width) mask of
    each row's last real position."""
    prefix_ids = entry["ids"]
    n_prefix = prefix_ids.shape[1]
    rows, width = suffix["input_ids"].shape
    suffix_mask = suffix["attention_mask"]
    full_mask = torch.cat([torch.ones(rows, n_prefix, dtype=suffix_mask.dtype), suffix_mask], dim=1)
    if kind == "mrope":  # 3-D M-RoPE positions of prefix + suffix, sliced to the suffix
        suffix_types = suffix["mm_token_type_ids"]
        full_ids = torch.cat([prefix_ids.expand(rows, -1), suffix["input_ids"]], dim=1)
        full_types = torch.cat([entry["types"].expand(rows, -1), suffix_types], dim=1)
        prefix_grid = entry["grid"]
        full_grid = torch.cat([g for row in range(rows) for g in
                               ([prefix_grid] if prefix_grid is not None else [])
                               + [suffix["image_grid_thw"][row:row + 1]]])
        positions, _ = base.model.get_rope_index(full_ids, mm_token_type_ids=full_types, image_grid_thw=full_grid,
                                                 attention_mask=full_mask)
        positions = positions[:, :, n_prefix:]
    else:  # 1-D positions continue after the prefix
        positions = (n_prefix + torch.arange(width)).expand(rows, -1)
    cache = DynamicCache(config=base.config)
    for layer, (keys, values) in enumerate(entry["kv"]):
        cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), layer)
    inputs = {k: v for k, v in suffix.items() if k not in ("input_ids", "attention_mask")}
    inputs.update(input_ids=suffix["input_ids"], attention_mask=full_mask, position_ids=positions, cache=cache,
                  use_cache=True)
    return inputs, last_position_mask(suffix_mask)


def _compute_prefix(model, base, processor, device, prefix_text: str, references, kind: str) -> dict[str, Any]:
    """One forward pass of the prefix (text + reference images) with a cache: its ids, token types, image
    grid and per-layer keys/values. Its positions are the full sequence's first positions, which do not
    depend on what follows (``get_rope_index`` numbers left to right)."""
    prefix = _encode(processor, [prefix_text], [list(references)] if references else None)
    prefix_ids = prefix["input_ids"]
    prefix_types = prefix.get("mm_token_type_ids", torch.zeros_like(prefix_ids))
    prefix_grid = prefix.get("image_grid_thw")
    if kind == "mrope" and prefix_grid is not None:
        positions, _ = base.model.get_rope_index(prefix_ids, mm_token_type_ids=prefix_types,
                                                 image_grid_thw=prefix_grid)
    elif kind == "mrope":
        positions = torch.arange(prefix_ids.shape[1]).view(1, 1, -1).expand(3, 1, -1)
    else:
        positions = torch.arange(prefix_ids.shape[1]).view(1, -1)
    inputs = {k: v for k, v in prefix.items() if k != "attention_mask"}
    inputs.update(position_ids=positions, cache=DynamicCache(config=base.config), use_cache=True, logits_to_keep=1)
    if kind == "mrope" and prefix_grid is None:
        inputs.pop("mm_token_type_ids", None)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    cache = model(**inputs).cache
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    return {"ids": prefix_ids, "types": prefix_types, "grid": prefix_grid, "kv": kv}
