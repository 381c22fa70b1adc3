"""Hugging Face backend: any ``AutoModelForImageTextToText`` checkpoint, by hub id or folder.

Option scoring runs one forward pass per batch of (request, option) pairs: the
processor expands each prompt with its images, the option's tokens are
appended after the assistant turn starts, and the summed log-probability of
those tokens is the option's score. Right padding keeps every real token at
the same position as in an unbatched call, so batched and one-at-a-time
scores agree.

The encoding (prompt + answer tokens, right padded) and the answer-token
log-probabilities live in :mod:`.encoding`, shared with fine-tuning
(:mod:`seeinpairs.training`), so the training loss and the option scores are
computed by the same code on the same tokens.

Single-pass scoring: when every option of a request is one answer token, the
options' scores are the log-softmax at the prompt's last position, so such a
request costs one forward pass of its prompt instead of one per option
(:func:`next_token_log_probs`). Requests with a multi-token option run their
prompt once too, with its key/value cache, and all options' later tokens on top
of it (:mod:`.shared_prompt`). The per-option path stays as the reference
(``single_pass = False``); all give the same scores (a prompt position sees only
the prompt, whatever is appended after it).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText

from ..errors import BackendError
from ..prompts import Request
from ..settings import ModelConfig
from .base import Backend, Scored
from .encoding import (answer_log_probs, answer_token_ids, append_answers, chat_prompt, continuation,
                       encode_answers, encode_prompts, next_token_log_probs)
from .modeling import DTYPES, resolve_device
from .prefix_cache import score_with_prefix_cache
from .processors import load_processor
from .resolution import resolution_records
from .shared_prompt import score_prompt_options, shared_prompt_ready
from .sources import checkpoint_fingerprint
from .vision_cache import VisionFeatureCache, install_vision_cache, vision_cache_reason


def peft_adapter_base(path: str | Path) -> str | None:
    """The base model of a PEFT adapter folder (``adapter_config.json`` without ``config.json``), else None."""
    folder = Path(path)
    adapter_config = folder / "adapter_config.json"
    if not folder.is_dir() or not adapter_config.is_file() or (folder / "config.json").is_file():
        return None
    try:
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        base = None
    if not base:
        raise BackendError(f"{folder}: adapter_config.json names no base_model_name_or_path")
    return str(base)


class HFBackend(Backend):
    """A transformers VLM with its processor and chat template.

    ``model`` is a hub id, a checkpoint folder, or a PEFT (LoRA) adapter folder, whose
    base model (``base_model_name_or_path`` in ``adapter_config.json``) is loaded with
    its processor and the adapter merged in.
    """

    kind = "hf"
    local_weights = True
    #: score requests whose options are all one token from one forward pass of the prompt
    single_pass: bool = True
    #: requests with multi-token options run their prompt once and every option on its KV cache
    #: (:mod:`.shared_prompt`); False scores each (request, option) with its own full pass
    shared_prompt: bool = True
    #: single-pass requests sharing a prefix (instruction + the same references) reuse its KV cache
    #: (:mod:`.prefix_cache`; the families in its registry; others run uncached, with the reason recorded)
    prefix_cache: bool = False
    #: why a requested vision cache is not installed (recorded with every prediction), else None
    vision_cache_note: str | None = None

    def __init__(self, model: str | Path, dtype: str = "float32", device: str = "auto", batch_size: int = 8,
                 revision: str | None = None, vision_cache_mb: int = 0, prefix_cache: bool = False,
                 trust_remote_code: bool = False, cache_dir: str | None = None, local_files_only: bool = False,
                 attn_implementation: str | None = None) -> None:
        """The keyword parameters after ``batch_size`` are the config's ``options``
        (:class:`seeinpairs.backend_options.HFOptions`); the hub ones go to ``from_pretrained``."""
        self.prefix_cache = bool(prefix_cache)
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        self.name_or_path = str(model)
        if dtype not in DTYPES:
            raise BackendError(f"unknown dtype '{dtype}' (use {', '.join(DTYPES)})")
        if batch_size < 1:
            raise BackendError(f"batch_size must be >= 1, got {batch_size}")
        self.dtype_name = dtype
        self.batch_size = batch_size
        self.device = resolve_device(device)
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code,
               "local_files_only": local_files_only}
        kwargs: dict[str, Any] = {key: value for key, value in hub.items() if value}  # only what was set
        # A PEFT adapter folder loads its base model (processor included) and merges the adapter in.
        adapter_base = peft_adapter_base(self.name_or_path)
        source = adapter_base if adapter_base is not None else self.name_or_path
        try:
            AutoConfig.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load model '{source}': {str(exc).splitlines()[0]}") from None
        self.processor = load_processor(source, **kwargs)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        model_kwargs = {**kwargs, **({"attn_implementation": attn_implementation} if attn_implementation else {})}
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(source, dtype=DTYPES[dtype], **model_kwargs)
        except (OSError, ValueError) as exc:  # no weights file, a config no image-text class reads, ...
            raise BackendError(f"cannot load model '{source}': {str(exc).splitlines()[0]}") from None
        if adapter_base is not None:
            from peft import PeftModel

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # peft probes deprecated transformers attributes
                self.model = PeftModel.from_pretrained(self.model, self.name_or_path).merge_and_unload()
        self.model.to(self.device).eval()
        self.revision = revision
        self._fingerprint = checkpoint_fingerprint(self.name_or_path)
        self._install_vision_cache(vision_cache_mb)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "HFBackend":
        """The checkpoint ``config.name`` with the config's dtype, device, batch size and options."""
        return cls(str(config.name), dtype=config.dtype, device=config.device, batch_size=config.batch_size,
                   **config.options)

    @classmethod
    def from_components(cls, model, processor, name: str = "in-memory", batch_size: int = 8,
                        vision_cache_mb: int = 0) -> "HFBackend":
        """Wrap an already loaded model and processor (e.g. right after training)."""
        self = cls.__new__(cls)
        self.name_or_path = name
        self.dtype_name = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model = model.eval()
        self.revision = None
        self._fingerprint = name
        self._install_vision_cache(vision_cache_mb)
        return self

    def _install_vision_cache(self, vision_cache_mb: int) -> None:
        """``vision_cache_mb`` > 0 caches each image's vision features (by pixel content) up to that many
        MiB, LRU (:mod:`.vision_cache`); 0 leaves the model as it is. Unsupported families warn and run uncached."""
        self.vision_cache: VisionFeatureCache | None = None
        if vision_cache_mb < 0:
            raise BackendError(f"vision_cache_mb must be >= 0, got {vision_cache_mb}")
        if vision_cache_mb:
            identity = f"{self._fingerprint}|{self.dtype_name}|{self.revision}"
            self.vision_cache = install_vision_cache(self.model, int(vision_cache_mb * 2**20), identity)
            if self.vision_cache is None:
                self.vision_cache_note = vision_cache_reason(self.model)
                warnings.warn(f"vision_cache_mb: {self.vision_cache_note}; running uncached", stacklevel=3)

    def identity(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.name_or_path, "fingerprint": self._fingerprint,
                "dtype": self.dtype_name, "revision": self.revision}

    # ----- prompt construction -------------------------------------------------------------
    def prompt_text(self, request: Request) -> str:
        return chat_prompt(self.processor, request)

    @staticmethod
    def continuation(prompt: str, option: str) -> str:
        """The option as the assistant would write it: after a colon comes a space."""
        return continuation(prompt, option)

    def _encode(self, texts: list[str], images: list[list], padding_side: str) -> dict[str, torch.Tensor]:
        return encode_prompts(self.processor, texts, images, padding_side, self.name_or_path)

    def _with_options(self, encoded: dict[str, torch.Tensor], option_ids: list[list[int]]):
        """Append each row's option tokens after its last real token (rows are right-padded)."""
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch = append_answers(encoded, option_ids, pad_id)
        return batch.inputs, batch.prompt_lengths

    # ----- backend API -----------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, requests: Sequence[Request]) -> list[Scored]:
        """Every path gives the exact summed log-likelihoods; ``path`` names the one each request took:
        ``prefix-cache``, ``next-token`` (one-token options, one pass), ``shared-prompt`` or ``per-option``.
        ``how`` holds the query's resolution where it depends on the image count (:mod:`.resolution`) and,
        when a cache was asked for, the method and why a requested fast path did not serve the request."""
        resolutions = resolution_records(self.processor, list(requests)) or [None] * len(requests)
        prompts = [self.prompt_text(r) for r in requests]
        scores: list[list[float]] = [[0.0] * len(r.options) for r in requests]
        paths = ["per-option"] * len(requests)
        option_ids = [[answer_token_ids(self.tokenizer, prompt, o) for o in r.options]
                      for prompt, r in zip(prompts, requests)]
        one_token = [self.single_pass and bool(ids) and all(len(i) == 1 for i in ids) for ids in option_ids]
        single = [ri for ri, flag in enumerate(one_token) if flag]
        why_not = "options of several tokens" if self.single_pass else "single-pass scoring is off"
        notes: list[str | None] = [None if flag else f"prefix-cache: {why_not}" for flag in one_token]
        if self.prefix_cache and single:  # groups sharing a reference prefix: the prefix's KV is computed once
            single_notes: list[str | None] = [None] * len(single)
            cached = score_with_prefix_cache(self, [requests[ri] for ri in single], [prompts[ri] for ri in single],
                                             [option_ids[ri] for ri in single], notes=single_notes)
            for ri, note in zip(single, single_notes):
                notes[ri] = note
            if cached is not None:
                for ri, values in zip(list(single), cached):
                    if values is not None:
                        scores[ri], paths[ri] = values, "prefix-cache"
                single = [ri for ri, values in zip(single, cached) if values is None]
        # one forward pass per request whose options are all one token: the next-token distribution
        for start in range(0, len(single), self.batch_size):
            chunk = single[start:start + self.batch_size]
            encoded = self._encode([prompts[ri] for ri in chunk], [requests[ri].images for ri in chunk], "right")
            encoded = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}
            log_probs = next_token_log_probs(self.model, encoded)
            for row, ri in enumerate(chunk):
                scores[ri], paths[ri] = [float(log_probs[row, ids[0]]) for ids in option_ids[ri]], "next-token"
        rest = [ri for ri, flag in enumerate(one_token) if not flag]
        probe = next((ri for ri in rest if option_ids[ri]), None)  # a request to check an unverified family on
        if probe is not None and self.single_pass and self.shared_prompt and shared_prompt_ready(
                self, lambda: self._shared_prompt_difference(requests[probe], prompts[probe], option_ids[probe])):
            for start in range(0, len(rest), self.batch_size):
                chunk = rest[start:start + self.batch_size]
                for ri, values in zip(chunk, self._score_shared(chunk, requests, prompts, option_ids)):
                    scores[ri], paths[ri] = values, "shared-prompt"
        else:
            for ri, values in zip(rest, self._score_per_option(rest, requests, prompts, option_ids)):
                scores[ri] = values
        records = self._score_records(paths, notes)
        return [Scored(values, _joined(how, record), path)
                for values, how, record, path in zip(scores, resolutions, records, paths)]

    def _score_records(self, methods: list[str], notes: list[str | None]) -> list[dict[str, Any] | None]:
        """Per request, how it was scored (``{"method", "notes"}``, the shape openai_compat records) when a cache
        was asked for, with why a requested fast path did not serve it; None where nothing was asked."""
        if not self.prefix_cache and not self.vision_cache_note:
            return [None] * len(methods)
        extra = [self.vision_cache_note] if self.vision_cache_note else []
        return [{"method": method, "notes": [*([note] if note and self.prefix_cache else []), *extra]}
                for method, note in zip(methods, notes)]

    def _score_per_option(self, indices: list[int], requests: Sequence[Request], prompts: list[str],
                          option_ids: list[list[list[int]]]) -> list[list[float]]:
        """Scores of the given requests with one row per (request, option): the summed log-probability
        of the option's tokens after the full prompt (the reference path)."""
        scores = {ri: [0.0] * len(option_ids[ri]) for ri in indices}
        pairs = [(ri, oi) for ri in indices for oi in range(len(option_ids[ri]))]
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            batch = encode_answers(self.processor, [prompts[ri] for ri, _ in chunk],
                                   [requests[ri].images for ri, _ in chunk],
                                   [option_ids[ri][oi] for ri, oi in chunk], self.name_or_path)
            token_log_probs = answer_log_probs(self.model, batch.to(self.device))
            for (ri, oi), values in zip(chunk, token_log_probs):
                scores[ri][oi] = float(values.sum())
        return [scores[ri] for ri in indices]

    def _score_shared(self, chunk: list[int], requests: Sequence[Request], prompts: list[str],
                      option_ids: list[list[list[int]]]) -> list[list[float]]:
        """Scores of the chunk's requests from one pass of their prompts (:mod:`.shared_prompt`)."""
        encoded = self._encode([prompts[ri] for ri in chunk], [requests[ri].images for ri in chunk], "right")
        encoded = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return score_prompt_options(self.model, encoded, [option_ids[ri] for ri in chunk], pad_id,
                                    rows_per_pass=self.batch_size)

    def _shared_prompt_difference(self, request: Request, prompt: str, ids: list[list[int]]) -> float | None:
        """Max abs difference between shared-prompt and per-option scores of one request (None on error)."""
        try:
            shared = self._score_shared([0], [request], [prompt], [ids])[0]
        except Exception:  # an architecture the shared path cannot drive: use the per-option path
            return None
        reference = self._score_per_option([0], [request], [prompt], [ids])[0]
        return max(abs(a - b) for a, b in zip(shared, reference))

    @torch.inference_mode()
    def generate(self, requests: Sequence[Request], max_new_tokens: int = 32) -> list[str]:
        answers: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            encoded = self._encode([self.prompt_text(r) for r in chunk], [r.images for r in chunk], "left")
            encoded = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}
            output = self.model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id)
            new_tokens = output[:, encoded["input_ids"].shape[1]:]
            answers.extend(t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return answers


def _joined(*records: dict[str, Any] | None) -> dict[str, Any] | None:
    """One record of how a request was scored from several partial ones (resolution, method and notes)."""
    merged = {key: value for record in records if record for key, value in record.items()}
    return merged or None
