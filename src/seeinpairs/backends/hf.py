"""Hugging Face backend: any ``AutoModelForImageTextToText`` checkpoint, by hub id or folder.

Option scoring runs one forward pass per batch of (request, option) pairs: the
processor expands each prompt with its images, the option's tokens are
appended after the assistant turn starts, and the summed log-probability of
those tokens is the option's score. Right padding keeps every real token at
the same position as in an unbatched call, so batched and one-at-a-time
scores agree.

The encoding (prompt + answer tokens, right padded) and the answer-token
log-probabilities are module functions shared with fine-tuning
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

import hashlib
import inspect
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText

from ..errors import BackendError
from ..prompts import Request
from .base import Backend
from .chat_layout import labelled_messages
from .modeling import base_model, last_position_mask
from .processors import load_processor
from .resolution import resolution_records
from .shared_prompt import score_prompt_options, shared_prompt_ready
from .vision_cache import VisionFeatureCache, install_vision_cache, vision_cache_reason

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_fingerprint(name_or_path: str) -> str:
    """Identity of a checkpoint's content: a local folder is hashed (name, size, head and tail of
    each file), so a re-trained model at the same path gets a new identity; a hub id is its own."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix not in (".json", ".safetensors", ".bin", ".jinja", ".model", ".txt"):
            continue
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


# ----- shared encoding: used by HFBackend.score_options and by fine-tuning --------------------------
def chat_prompt(processor, request: Request) -> str:
    """The request rendered with the checkpoint's chat template, ending where the assistant answers.

    Under a template that renders a message's images before its text, each image gets its own turn,
    so every label still stands right before its image (:mod:`.chat_layout`)."""
    return processor.apply_chat_template(labelled_messages(processor, request.messages), add_generation_prompt=True,
                                         tokenize=False)


def continuation(prompt: str, option: str) -> str:
    """The option as the assistant would write it: after a colon comes a space."""
    return option if not prompt or prompt[-1].isspace() else " " + option


def answer_token_ids(tokenizer, prompt: str, option: str) -> list[int]:
    """The token ids of ``option`` written as the answer to ``prompt`` (what is scored and trained on)."""
    ids = tokenizer(continuation(prompt, option), add_special_tokens=False)["input_ids"]
    if not ids:
        raise BackendError(f"option '{option}' tokenizes to nothing")
    return list(ids)


def template_adds_bos(tokenizer, texts: list[str]) -> bool:
    """True when the rendered prompts already start with the BOS token (Gemma 3, Llama templates emit it):
    tokenizing them must not add a second one."""
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and bool(texts) and all(text.startswith(bos) for text in texts)


def encode_prompts(processor, texts: list[str], images: list[list], padding_side: str,
                   name: str = "model") -> dict[str, torch.Tensor]:
    """Run the processor on prompts and their images with the given padding side.

    Prompts whose chat template already wrote the BOS token are tokenized without special tokens,
    as transformers' own ``apply_chat_template(tokenize=True)`` does, so they start with one BOS."""
    tokenizer = processor.tokenizer
    special = {"add_special_tokens": False} if template_adds_bos(tokenizer, texts) else {}
    previous = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        # text-only prompts (a language-model judge, a proposer reading captions): no image input at all,
        # since processors cannot concatenate an empty image list
        # padding_side is passed too: some processors (InternVL) default to left padding in their own kwargs
        encoded = processor(text=texts, images=images if any(len(i) for i in images) else None, padding=True,
                            padding_side=padding_side, return_tensors="pt", **special)
    except Exception as exc:  # processors raise ValueError/TypeError/IndexError on mismatched inputs
        raise BackendError(f"{name}: the processor rejected the request ({str(exc).splitlines()[0]})") from None
    finally:
        tokenizer.padding_side = previous
    return dict(encoded)


@dataclass
class AnswerBatch:
    """Prompts with answer tokens appended, right padded, ready for one forward pass.

    ``inputs`` are the model's keyword arguments; row ``i`` holds its prompt in
    positions ``[0, prompt_lengths[i])`` and ``answer_ids[i]`` right after it.
    """

    inputs: dict[str, Any]
    prompt_lengths: list[int]
    answer_ids: list[list[int]]

    @property
    def labels(self) -> torch.Tensor:
        """Causal-LM labels: the answer tokens at their positions, -100 everywhere else."""
        input_ids = self.inputs["input_ids"]
        labels = torch.full_like(input_ids, -100)
        for row, (length, ids) in enumerate(zip(self.prompt_lengths, self.answer_ids)):
            labels[row, length:length + len(ids)] = input_ids[row, length:length + len(ids)]
        return labels

    def to(self, device: torch.device | str) -> "AnswerBatch":
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        return AnswerBatch(inputs, self.prompt_lengths, self.answer_ids)


def _per_token(encoded: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The processor outputs with one integer entry per token (ids, mask, mm_token_type_ids, ...)."""
    shape = encoded["input_ids"].shape
    return {k: v for k, v in encoded.items()
            if isinstance(v, torch.Tensor) and v.shape == shape and not torch.is_floating_point(v)}


def append_answers(encoded: dict[str, Any], answer_ids: list[list[int]], pad_id: int) -> AnswerBatch:
    """Append each row's answer tokens after its last real token (rows must be right padded).

    Per-token tensors other than ids and mask (e.g. ``mm_token_type_ids``) are extended with zeros.
    Per-token masks over images (Mllama's ``cross_attention_mask``, batch x seq x images x tiles) are
    extended with the row's last prompt position, as generation does: answer tokens see the images
    the end of the prompt sees.
    """
    input_ids, attention = encoded["input_ids"], encoded["attention_mask"]
    lengths = attention.sum(dim=1).tolist()
    width = max(length + len(ids) for length, ids in zip(lengths, answer_ids))
    rows = len(answer_ids)
    per_token = _per_token(encoded)
    grown = {k: torch.zeros((rows, width), dtype=v.dtype) for k, v in per_token.items()}
    grown["input_ids"].fill_(pad_id)
    for row, (length, ids) in enumerate(zip(lengths, answer_ids)):
        for key, value in per_token.items():
            grown[key][row, :length] = value[row, :length]
        grown["input_ids"][row, length:length + len(ids)] = torch.tensor(ids, dtype=input_ids.dtype)
        grown["attention_mask"][row, :length + len(ids)] = 1
    result = dict(encoded)
    result.update(grown)
    for key, value in encoded.items():
        if isinstance(value, torch.Tensor) and value.ndim > 2 and value.shape[:2] == input_ids.shape \
                and not torch.is_floating_point(value):
            wide = torch.zeros((rows, width, *value.shape[2:]), dtype=value.dtype)
            for row, (length, ids) in enumerate(zip(lengths, answer_ids)):
                wide[row, :length] = value[row, :length]
                wide[row, length:length + len(ids)] = value[row, length - 1]
            result[key] = wide
    return AnswerBatch(result, [int(n) for n in lengths], [list(ids) for ids in answer_ids])


def encode_answers(processor, prompts: list[str], images: list[list], answer_ids: list[list[int]],
                   name: str = "model") -> AnswerBatch:
    """Encode prompts with their images and append the answer tokens: the one encoding that both
    option scoring and fine-tuning use."""
    encoded = encode_prompts(processor, prompts, images, "right", name)
    pad_id = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else 0
    return append_answers(encoded, answer_ids, pad_id)


def _accepts_logits_to_keep(model) -> bool:
    """True when the model's forward takes a boolean (batch, seq) ``logits_to_keep`` mask."""
    if not hasattr(transformers.modeling_utils, "slice_logits_to_keep"):
        return False  # older transformers: only an int or a 1-D tensor
    try:
        return "logits_to_keep" in inspect.signature(base_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _logits_at(model, inputs: dict[str, Any], keep: torch.Tensor) -> torch.Tensor:
    """The logits at the positions where the boolean (batch, seq) ``keep`` is set, row-major.

    Only those positions are projected to the vocabulary when the model supports
    ``logits_to_keep``; otherwise the full logits are computed and indexed.
    """
    if _accepts_logits_to_keep(model):
        sliced = model(**inputs, logits_to_keep=keep, use_cache=False).logits
        if sliced.ndim == 2 and sliced.shape[0] == int(keep.sum()):
            return sliced
        if sliced.ndim == 3 and sliced.shape[:2] == keep.shape:  # the mask was ignored
            return sliced[keep]
    return model(**inputs, use_cache=False).logits[keep]


def next_token_log_probs(model, encoded: dict[str, Any]) -> torch.Tensor:
    """Per row of right-padded prompts, the log-probabilities (batch, vocab) of the token that
    follows the prompt: the log-softmax at each row's last real position, from one forward pass."""
    keep = last_position_mask(encoded["attention_mask"])
    return torch.log_softmax(_logits_at(model, encoded, keep).float(), dim=-1)


def answer_log_probs(model, batch: AnswerBatch) -> list[torch.Tensor]:
    """Per row, the log-probability of each answer token given everything before it.

    Logits are computed only where an answer token is predicted (when the model
    supports ``logits_to_keep``), which keeps memory small for large vocabularies.
    Gradients flow when called outside ``torch.inference_mode``/``no_grad``.
    """
    labels = batch.labels.to(batch.inputs["input_ids"].device)
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100  # position t predicts token t + 1
    targets = labels[:, 1:][labels[:, 1:] != -100]  # row-major, the order of hidden_states[keep]
    log_probs = torch.log_softmax(_logits_at(model, batch.inputs, keep).float(), dim=-1)
    picked = log_probs.gather(1, targets[:, None]).squeeze(1)
    return list(torch.split(picked, [len(ids) for ids in batch.answer_ids]))


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
    #: per request of the last ``score_options`` call, how it was scored when a cache was asked for
    last_score_records: list[dict[str, Any] | None] = []

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
        if dtype not in _DTYPES:
            raise BackendError(f"unknown dtype '{dtype}' (use {', '.join(_DTYPES)})")
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
        self.model = AutoModelForImageTextToText.from_pretrained(source, dtype=_DTYPES[dtype], **model_kwargs)
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
    def score_options(self, requests: Sequence[Request]) -> list[list[float]]:
        # recorded with each prediction: the query's resolution where it depends on the image count
        self.last_score_records = resolution_records(self.processor, list(requests))
        prompts = [self.prompt_text(r) for r in requests]
        scores: list[list[float]] = [[0.0] * len(r.options) for r in requests]
        option_ids = [[answer_token_ids(self.tokenizer, prompt, o) for o in r.options]
                      for prompt, r in zip(prompts, requests)]
        one_token = [self.single_pass and bool(ids) and all(len(i) == 1 for i in ids) for ids in option_ids]
        single = [ri for ri, flag in enumerate(one_token) if flag]
        methods = ["single-pass" if flag else "per-option" for flag in one_token]
        notes: list[str | None] = [None if flag else "prefix-cache: options of several tokens" for flag in one_token]
        if self.prefix_cache and single:  # groups sharing a reference prefix: the prefix's KV is computed once
            from .prefix_cache import score_with_prefix_cache

            single_notes: list[str | None] = [None] * len(single)
            cached = score_with_prefix_cache(self, [requests[ri] for ri in single], [prompts[ri] for ri in single],
                                             [option_ids[ri] for ri in single], notes=single_notes)
            for ri, note in zip(single, single_notes):
                notes[ri] = note
            if cached is not None:
                for ri, values in zip(list(single), cached):
                    if values is not None:
                        scores[ri], methods[ri] = values, "prefix-cache"
                single = [ri for ri, values in zip(single, cached) if values is None]
        self.last_score_records = self._score_records(methods, notes)
        # one forward pass per request whose options are all one token: the next-token distribution
        for start in range(0, len(single), self.batch_size):
            chunk = single[start:start + self.batch_size]
            encoded = self._encode([prompts[ri] for ri in chunk], [requests[ri].images for ri in chunk], "right")
            encoded = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}
            log_probs = next_token_log_probs(self.model, encoded)
            for row, ri in enumerate(chunk):
                scores[ri] = [float(log_probs[row, ids[0]]) for ids in option_ids[ri]]
        rest = [ri for ri, flag in enumerate(one_token) if not flag]
        probe = next((ri for ri in rest if option_ids[ri]), None)  # a request to check an unverified family on
        if probe is not None and self.single_pass and self.shared_prompt and shared_prompt_ready(
                self, lambda: self._shared_prompt_difference(requests[probe], prompts[probe], option_ids[probe])):
            for start in range(0, len(rest), self.batch_size):
                chunk = rest[start:start + self.batch_size]
                for ri, values in zip(chunk, self._score_shared(chunk, requests, prompts, option_ids)):
                    scores[ri] = values
                    if self.last_score_records[ri] is not None:
                        self.last_score_records[ri]["method"] = "shared-prompt"
            return scores
        for ri, values in zip(rest, self._score_per_option(rest, requests, prompts, option_ids)):
            scores[ri] = values
        return scores

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
