"""Reference prefix KV cache for single-pass scoring.

Comparative prompts put the instruction and the reference images before the query
(:mod:`seeinpairs.prompts`), so requests that share a fixed reference set share every
token up to the query image's marker (the text that starts an image in the rendered
prompt, e.g. ``<|vision_start|>`` for Qwen2-VL, ``<start_of_image>`` for Gemma 3, the
processor's image token for 1-D families). For such a group the prefix (its text
and its reference images) is run through the model once with ``use_cache=True``; each
query then runs only its suffix (query image + question + assistant turn) on top of
the cached keys/values. Positions continue the prefix: for the multimodal-rotary
families the full sequence's 3-D positions (``get_rope_index`` on prefix + suffix ids)
sliced to the suffix; for 1-D positions ``prefix length + j``. Suffixes are batched
(right padded) on a fresh cache seeded with the prefix's keys/values (broadcast over the
batch; the cache's concatenation copies, so the stored prefix is never written to;
sliding-window layers keep their true length, so their window mask stays right).

Each family is registered explicitly (:data:`PREFIX_FAMILIES`) with how its positions
continue, its marker, and whether its attention mask reads token types by absolute
position (Gemma 3's bidirectional image blocks: the suffix then carries the token types
of prefix + suffix). Families that cannot be served exactly are listed with the reason in
:data:`UNSUPPORTED_FAMILIES` and run uncached; :func:`prefix_cache_reason` says why.

When a prefix is first computed it is checked on its first query: the prefix tokens and
the suffix tokens must concatenate to that query's full encoding, and the cached
next-token log-probabilities must equal those of one full pass of the query's prompt
(max abs difference under :func:`tolerance`). A prefix that fails either check is kept
as unusable, and its requests run uncached with the reason in their notes, so a wrong
mask or position scheme never gives silently different scores.

Computed prefixes are kept across calls in a small LRU on the backend
(:class:`PrefixStore`, ``backend.prefix_cache_entries`` entries, default 4), keyed by
prefix text and reference pixel content, and invalidated whenever any model
parameter is modified in place (e.g. a training step), so a fixed reference set
costs its prefix once per evaluation, not once per call.

Only requests whose options are all one token (single-pass scoring) are handled, and
only in groups of at least two requests; everything else is left to the ordinary path
(``None`` entries).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import DynamicCache

from ..prompts import Request
from .encoding import answer_token_ids, next_token_log_probs, template_adds_bos
from .modeling import base_model, last_position_mask, not_registered

VISION_START = "<|vision_start|>"


@dataclass(frozen=True)
class PrefixFamily:
    """How one family's prompts split and continue after a cached prefix.

    ``positions``: "mrope" (3-D positions from the model's ``get_rope_index`` on prefix + suffix) or
    "linear" (1-D, ``prefix length + j``). ``marker``: the rendered-prompt text that starts an image
    (None: the processor's ``image_token``). ``full_token_types``: the mask reads ``token_type_ids`` by
    absolute position, so the suffix pass gets those of prefix + suffix."""

    positions: str
    marker: str | None = None
    full_token_types: bool = False


#: model type -> its prefix-cache entry; each one is tested equal to the uncached path
#: (tests/backends/test_prefix_cache.py, parametrised over the tiny families). SmolVLM v1
#: checkpoints are model type "idefics3", SmolVLM2 ones "smolvlm".
PREFIX_FAMILIES: dict[str, PrefixFamily] = {
    "qwen2_vl": PrefixFamily("mrope", VISION_START),
    "qwen2_5_vl": PrefixFamily("mrope", VISION_START),
    "qwen3_vl": PrefixFamily("mrope", VISION_START),
    "glm4v": PrefixFamily("mrope", "<|begin_of_image|>"),
    "idefics3": PrefixFamily("linear"),
    "smolvlm": PrefixFamily("linear"),
    "llava": PrefixFamily("linear"),
    "internvl": PrefixFamily("linear"),
    "gemma3": PrefixFamily("linear", "<start_of_image>", full_token_types=True),
}

#: model type -> why the prefix cache does not serve it (its requests run uncached)
UNSUPPORTED_FAMILIES: dict[str, str] = {
    "llava_onevision": "an image's resolution depends on how many images its prompt holds (base features when "
                       "several, anyres when one), so the query encoded apart from its references changes its tokens",
    "mllama": "its cross-attention layers read all of a request's images through a per-token image mask that a "
              "suffix pass on a cached prefix does not carry over (the split check rejects it)",
}


def prefix_family(model) -> PrefixFamily | None:
    """The registered entry of ``model``'s family, or None when the prefix cache does not handle it."""
    base = base_model(model)
    family = PREFIX_FAMILIES.get(getattr(base.config, "model_type", None))
    if family is not None and family.positions == "mrope" and not hasattr(getattr(base, "model", None),
                                                                          "get_rope_index"):
        return None
    return family


def position_kind(model) -> str | None:
    """"mrope", "linear", or None when the prefix cache does not handle this model."""
    family = prefix_family(model)
    return family.positions if family is not None else None


def supports_prefix_cache(model) -> bool:
    return prefix_family(model) is not None


def prefix_cache_reason(model) -> str | None:
    """Why the prefix cache does not serve ``model`` (one line), or None when it does."""
    if supports_prefix_cache(model):
        return None
    return not_registered("prefix-cache", getattr(base_model(model).config, "model_type", None), UNSUPPORTED_FAMILIES)


def query_marker(processor, model) -> str:
    """The text that starts an image in a rendered prompt: where the query's suffix begins."""
    family = prefix_family(model)
    if family is not None and family.marker:
        return family.marker
    return getattr(processor, "image_token", None) or "<image>"


def tolerance(model) -> float:
    """Largest max abs difference of next-token log-probabilities between the cached and the full pass
    that counts as equal: 1e-4 in float32 (the tests' bound), 5e-2 in half precision, whose rounding
    differs between a one-pass and a two-pass computation."""
    dtype = next(base_model(model).parameters()).dtype
    return 1e-4 if dtype in (torch.float32, torch.float64) else 5e-2


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


def _encode(processor, texts: list[str], images: list[list] | None, add_special_tokens: bool | None = None
            ) -> dict[str, Any]:
    """Right-padded processor outputs; special tokens are added unless told (or unless the template already
    wrote the BOS token, as the uncached path decides)."""

    tokenizer = processor.tokenizer
    if add_special_tokens is None:
        add_special_tokens = not template_adds_bos(tokenizer, texts)
    previous = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        kwargs = {"images": images} if images else {}
        if not add_special_tokens:
            kwargs["add_special_tokens"] = False
        return dict(processor(text=texts, padding=True, padding_side="right", return_tensors="pt", **kwargs))
    finally:
        tokenizer.padding_side = previous


def _to(inputs: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _note(notes: list | None, indices, text: str) -> None:
    if notes is not None:
        for ri in indices:
            notes[ri] = notes[ri] or text


@torch.inference_mode()
def score_with_prefix_cache(backend, requests: Sequence[Request], prompts: Sequence[str] | None = None,
                            option_ids: Sequence[Sequence[Sequence[int]]] | None = None,
                            notes: list[str | None] | None = None) -> list[list[float] | None] | None:
    """Scores of the requests that the prefix cache can serve (one-token options, a registered family, a
    shared prefix with at least one other request); ``None`` entries for the rest. Returns None when the
    model is unsupported or no request qualifies. ``notes`` (one slot per request), when given, receives
    why each request that is not served runs uncached."""
    model = backend.model
    family = prefix_family(model)
    if family is None:
        _note(notes, range(len(requests)), prefix_cache_reason(model))
        return None
    processor, tokenizer = backend.processor, backend.tokenizer
    prompts = list(prompts) if prompts is not None else [backend.prompt_text(r) for r in requests]
    if option_ids is None:
        option_ids = [[answer_token_ids(tokenizer, p, o) for o in r.options] for p, r in zip(prompts, requests)]
    eligible = [ri for ri, ids in enumerate(option_ids) if ids and all(len(i) == 1 for i in ids)]
    _note(notes, sorted(set(range(len(requests))) - set(eligible)), "prefix-cache: options of several tokens")
    store = _store(backend)
    version = _weights_version(model)
    store.sync(version)  # a changed model drops every stored prefix
    groups = group_by_prefix(prompts, requests, eligible, known=set(store.entries),
                             marker=query_marker(processor, model))
    grouped = {ri for _, members in groups for ri in members}
    _note(notes, [ri for ri in eligible if ri not in grouped], "prefix-cache: no other request shares its prefix")
    if not groups:
        return None
    results: list[list[float] | None] = [None] * len(requests)
    for key, members in groups:
        entry = store.get(key, version)
        if entry is None:
            entry = _checked_prefix(backend, family, key[0], requests[members[0]], prompts[members[0]])
            store.put(key, entry)
        if entry["unusable"]:
            _note(notes, members, entry["unusable"])
            continue
        for start in range(0, len(members), backend.batch_size):
            chunk = members[start:start + backend.batch_size]
            log_probs = _suffix_log_probs(backend, family, entry, [prompts[ri][len(key[0]):] for ri in chunk],
                                          [requests[ri].images[-1] for ri in chunk])
            for row, ri in enumerate(chunk):
                results[ri] = [float(log_probs[row, ids[0]]) for ids in option_ids[ri]]
    return results


def _checked_prefix(backend, family: PrefixFamily, prefix_text: str, request: Request, prompt: str
                    ) -> dict[str, Any]:
    """The prefix entry, computed and checked on its first query: ``entry["unusable"]`` is "" when the split
    keeps the tokens and the cached scores equal one full pass, else why not (one line)."""

    model = backend.model
    entry = _compute_prefix(model, base_model(model), backend.processor, backend.device, prefix_text,
                            request.images[:-1], family)
    suffix_text = prompt[len(prefix_text):]
    full = _encode(backend.processor, [prompt], [list(request.images)])
    suffix = _encode(backend.processor, [suffix_text], [[request.images[-1]]], add_special_tokens=False)
    entry["unusable"] = ""
    if not _split_is_exact(entry["ids"], suffix["input_ids"], full["input_ids"]):
        entry["unusable"] = "prefix-cache: splitting the prompt changes its tokens"
        return entry
    cached = _suffix_log_probs(backend, family, entry, [suffix_text], [request.images[-1]])
    reference = next_token_log_probs(model, _to(full, backend.device))
    difference = float((cached - reference).abs().max())
    if difference >= tolerance(model):
        entry["unusable"] = f"prefix-cache: cached scores differ from the full pass (max abs {difference:.1e})"
    return entry


def _split_is_exact(prefix_ids: torch.Tensor, suffix_ids: torch.Tensor, full_ids: torch.Tensor) -> bool:
    """Whether prefix tokens + suffix tokens (encoded apart) are the full prompt's tokens."""
    return torch.equal(torch.cat([prefix_ids, suffix_ids], dim=1), full_ids)


def _suffix_log_probs(backend, family: PrefixFamily, entry: dict[str, Any], suffixes: list[str], queries: list
                      ) -> torch.Tensor:
    """Next-token log-probabilities (rows, vocab) of suffixes (with their query images) on top of ``entry``."""
    suffix = _encode(backend.processor, suffixes, [[image] for image in queries], add_special_tokens=False)
    inputs, keep = _suffix_inputs(base_model(backend.model), entry, suffix, family)
    inputs = _to(inputs, backend.device)
    keep = keep.to(backend.device)
    logits = backend.model(**inputs, logits_to_keep=keep).logits
    if logits.ndim == 3:
        logits = logits[keep]
    return torch.log_softmax(logits.float(), dim=-1)


def _seeded_cache(base, entry: dict[str, Any], rows: int) -> DynamicCache:
    """A fresh cache holding the prefix's keys/values for ``rows`` rows; sliding-window layers (which store
    only their window) are told the prefix's true length, which their window mask is computed from."""
    cache = DynamicCache(config=base.config)
    for layer, (keys, values, length) in enumerate(entry["kv"]):
        cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), layer)
        if length is not None:
            cache.layers[layer].cumulative_length = length
    return cache


def _suffix_inputs(base, entry: dict[str, Any], suffix: dict[str, Any], family: PrefixFamily
                   ) -> tuple[dict[str, Any], torch.Tensor]:
    """The model inputs of a batch of suffixes on top of a stored prefix, and the (rows, width) mask of
    each row's last real position."""
    prefix_ids = entry["ids"]
    n_prefix = prefix_ids.shape[1]
    rows, width = suffix["input_ids"].shape
    suffix_mask = suffix["attention_mask"]
    full_mask = torch.cat([torch.ones(rows, n_prefix, dtype=suffix_mask.dtype), suffix_mask], dim=1)
    if family.positions == "mrope":  # 3-D positions of prefix + suffix, sliced to the suffix
        full_ids = torch.cat([prefix_ids.expand(rows, -1), suffix["input_ids"]], dim=1)
        full_types = torch.cat([entry["types"].expand(rows, -1), suffix["mm_token_type_ids"]], dim=1)
        prefix_grid = entry["grid"]
        full_grid = torch.cat([g for row in range(rows) for g in
                               ([prefix_grid] if prefix_grid is not None else [])
                               + [suffix["image_grid_thw"][row:row + 1]]])
        positions, _ = base.model.get_rope_index(full_ids, mm_token_type_ids=full_types, image_grid_thw=full_grid,
                                                 attention_mask=full_mask)
        positions = positions[:, :, n_prefix:]
    else:  # 1-D positions continue after the prefix
        positions = (n_prefix + torch.arange(width)).expand(rows, -1)
    inputs = {k: v for k, v in suffix.items() if k not in ("input_ids", "attention_mask")}
    if family.full_token_types:  # the mask reads token types at absolute positions
        inputs["token_type_ids"] = torch.cat([entry["token_types"].expand(rows, -1), suffix["token_type_ids"]], 1)
    inputs.update(input_ids=suffix["input_ids"], attention_mask=full_mask, position_ids=positions,
                  cache=_seeded_cache(base, entry, rows), use_cache=True)
    return inputs, last_position_mask(suffix_mask)


def _compute_prefix(model, base, processor, device, prefix_text: str, references, family: PrefixFamily
                    ) -> dict[str, Any]:
    """One forward pass of the prefix (text + reference images) with a cache: its ids, token types, image
    grid and per-layer keys/values (with each layer's length). Its positions are the full sequence's first
    positions, which do not depend on what follows (``get_rope_index`` numbers left to right)."""
    mrope = family.positions == "mrope"
    prefix = _encode(processor, [prefix_text], [list(references)] if references else None)
    prefix_ids = prefix["input_ids"]
    prefix_types = prefix.get("mm_token_type_ids", torch.zeros_like(prefix_ids))
    token_types = prefix.get("token_type_ids", torch.zeros_like(prefix_ids))
    prefix_grid = prefix.get("image_grid_thw")
    if mrope and prefix_grid is not None:
        positions, _ = base.model.get_rope_index(prefix_ids, mm_token_type_ids=prefix_types,
                                                 image_grid_thw=prefix_grid)
    elif mrope:
        positions = torch.arange(prefix_ids.shape[1]).view(1, 1, -1).expand(3, 1, -1)
    else:
        positions = torch.arange(prefix_ids.shape[1]).view(1, -1)
    inputs = {k: v for k, v in prefix.items() if k != "attention_mask"}
    inputs.update(position_ids=positions, cache=DynamicCache(config=base.config), use_cache=True, logits_to_keep=1)
    if mrope and prefix_grid is None:
        inputs.pop("mm_token_type_ids", None)
    cache = model(**_to(inputs, device)).cache
    kv = [(layer.keys, layer.values, getattr(layer, "cumulative_length", None)) for layer in cache.layers]
    return {"ids": prefix_ids, "types": prefix_types, "token_types": token_types, "grid": prefix_grid, "kv": kv}
