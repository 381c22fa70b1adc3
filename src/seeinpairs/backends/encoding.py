"""The encoding and likelihood library of local (transformers) models.

A prompt is rendered with the checkpoint's chat template (:func:`chat_prompt`), an option
is tokenized as the assistant's answer to it (:func:`answer_token_ids`), prompts and
their images are encoded with right padding and the answer tokens appended
(:func:`encode_answers`), and the log-probability of each answer token is read from one
forward pass (:func:`answer_log_probs`). Option scoring (:class:`~.hf.HFBackend`),
fine-tuning (:mod:`seeinpairs.training`), attribution (:mod:`seeinpairs.explain`) and the
chat server (:mod:`seeinpairs.serve`) all use these functions, so the training loss, the
option scores, the maps and the served answers are computed on the same tokens.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import transformers

from ..errors import BackendError
from ..prompts import Request
from .chat_layout import labelled_messages
from .modeling import base_model, last_position_mask


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
