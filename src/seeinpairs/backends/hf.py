"""Hugging Face backend: any ``AutoModelForImageTextToText`` checkpoint, by hub id or folder.

Option scoring runs one forward pass per batch of (request, option) pairs: the
processor expands each prompt with its images, the option's tokens are
appended after the assistant turn starts, and the summed log-probability of
those tokens is the option's score. Right padding keeps every real token at
the same position as in an unbatched call, so batched and one-at-a-time
scores agree.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import torch
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText

from ..errors import BackendError
from ..prompts import Request
from .base import BACKENDS, Backend
from .processors import load_processor

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


@BACKENDS.register("hf")
class HFBackend(Backend):
    """A transformers VLM with its processor and chat template."""

    kind = "hf"

    def __init__(self, model: str | Path, dtype: str = "float32", device: str = "auto", batch_size: int = 8,
                 revision: str | None = None, **load_kwargs: Any) -> None:
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
        kwargs = dict(load_kwargs)
        if revision is not None:
            kwargs["revision"] = revision
        try:
            AutoConfig.from_pretrained(self.name_or_path, **kwargs)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load model '{self.name_or_path}': {str(exc).splitlines()[0]}") from None
        self.processor = load_processor(self.name_or_path, **kwargs)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        self.model = AutoModelForImageTextToText.from_pretrained(self.name_or_path, dtype=_DTYPES[dtype], **kwargs)
        self.model.to(self.device).eval()
        self.revision = revision
        self._fingerprint = checkpoint_fingerprint(self.name_or_path)

    @classmethod
    def from_components(cls, model, processor, name: str = "in-memory", batch_size: int = 8) -> "HFBackend":
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
        return self

    def identity(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.name_or_path, "fingerprint": self._fingerprint,
                "dtype": self.dtype_name, "revision": self.revision}

    # ----- prompt construction -------------------------------------------------------------
    def prompt_text(self, request: Request) -> str:
        return self.processor.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)

    @staticmethod
    def continuation(prompt: str, option: str) -> str:
        """The option as the assistant would write it: after a colon comes a space."""
        return option if not prompt or prompt[-1].isspace() else " " + option

    def _encode(self, texts: list[str], images: list[list], padding_side: str) -> dict[str, torch.Tensor]:
        tokenizer = self.tokenizer
        previous = tokenizer.padding_side
        tokenizer.padding_side = padding_side
        try:
            encoded = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        except Exception as exc:  # processors raise ValueError/TypeError/IndexError on mismatched inputs
            raise BackendError(f"{self.name_or_path}: the processor rejected the request ({str(exc).splitlines()[0]})") from None
        finally:
            tokenizer.padding_side = previous
        return dict(encoded)

    def _with_options(self, encoded: dict[str, torch.Tensor], option_ids: list[list[int]]):
        """Append each row's option tokens after its last real token (rows are right-padded)."""
        input_ids, attention = encoded["input_ids"], encoded["attention_mask"]
        lengths = attention.sum(dim=1).tolist()
        width = max(length + len(ids) for length, ids in zip(lengths, option_ids))
        rows = len(option_ids)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        per_token = {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor) and v.shape == input_ids.shape}
        grown = {k: torch.zeros((rows, width), dtype=v.dtype) for k, v in per_token.items()}
        grown["input_ids"].fill_(pad_id)
        for row, (length, ids) in enumerate(zip(lengths, option_ids)):
            for key, value in per_token.items():
                grown[key][row, :length] = value[row, :length]
            grown["input_ids"][row, length:length + len(ids)] = torch.tensor(ids, dtype=input_ids.dtype)
            grown["attention_mask"][row, :length + len(ids)] = 1
        result = dict(encoded)
        result.update(grown)
        return result, lengths

    # ----- backend API -----------------------------------------------------------------------
    @torch.inference_mode()
    def score_options(self, requests: Sequence[Request]) -> list[list[float]]:
        prompts = [self.prompt_text(r) for r in requests]
        pairs = [(ri, oi) for ri, r in enumerate(requests) for oi in range(len(r.options))]
        scores: list[list[float]] = [[0.0] * len(r.options) for r in requests]
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            option_ids = []
            for ri, oi in chunk:
                ids = self.tokenizer(self.continuation(prompts[ri], requests[ri].options[oi]),
                                     add_special_tokens=False)["input_ids"]
                if not ids:
                    raise BackendError(f"option '{requests[ri].options[oi]}' tokenizes to nothing")
                option_ids.append(ids)
            encoded = self._encode([prompts[ri] for ri, _ in chunk], [requests[ri].images for ri, _ in chunk], "right")
            batch, prompt_lengths = self._with_options(encoded, option_ids)
            batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            logits = self.model(**batch).logits.float()
            log_probs = torch.log_softmax(logits, dim=-1)
            for row, ((ri, oi), ids, length) in enumerate(zip(chunk, option_ids, prompt_lengths)):
                positions = torch.arange(length - 1, length - 1 + len(ids), device=log_probs.device)
                targets = torch.tensor(ids, device=log_probs.device)
                scores[ri][oi] = float(log_probs[row, positions, targets].sum())
        return scores

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
