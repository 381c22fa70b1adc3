"""Training examples: a case, its healthy references, the prompt, and the gold answer tokens.

References come from the same bank and selectors as evaluation, so a selector's
leakage guarantees (never the query itself, its patient or its image file) hold
for training too. Each example's random stream depends only on (seed, epoch,
case id): references may differ between epochs, but never between a run and
its resumption, or between batch orders.
"""

from __future__ import annotations

import hashlib
from collections import deque
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from ..backends.encoding import AnswerBatch, answer_token_ids, chat_prompt, encode_answers
from ..cases import Case, case_rng, stable_digest
from ..errors import ConfigError
from ..imaging import load_image
from ..prompts import PromptBuilder, Request
from ..references.bank import ReferenceBank
from ..references.selectors import Selection, create_selector
from ..siteshift.augment import AcquisitionAugment, augment_rng
from ..tasks import Task


def subset_order(cases: Iterable[Case], seed: int, balance_labels: bool = False,
                 classes: Sequence[str] = ()) -> list[Case]:
    """All cases in a seeded pseudo-random order that depends only on (seed, case id).

    Any prefix is the subset of that size, so subsets are identical across
    single/paired runs and nested across sizes. ``balance_labels`` interleaves
    the classes (in ``classes`` order) so every prefix is as balanced as the data allow.
    """
    ranked = sorted(cases, key=lambda c: (hashlib.sha256(f"{seed}:{c.case_id}".encode()).hexdigest(), c.case_id))
    if not balance_labels:
        return ranked
    labels = list(classes) + sorted({str(c.label) for c in ranked} - set(classes))
    queues = {label: deque(c for c in ranked if str(c.label) == label) for label in labels}
    order: list[Case] = []
    while any(queues.values()):
        for label in labels:
            if queues[label]:
                order.append(queues[label].popleft())
    return order


def select_train_cases(cases: Iterable[Case], n: int | None, seed: int, balance_labels: bool = False,
                       classes: Sequence[str] = ()) -> list[Case]:
    """The first ``n`` cases of :func:`subset_order` (all of them when ``n`` is None)."""
    order = subset_order(cases, seed, balance_labels, classes)
    if n is not None and n > len(order):
        raise ConfigError(f"n_train={n} but the training split has only {len(order)} labelled cases")
    return order if n is None else order[:n]


def example_rng(seed: int, epoch: int, case_id: str) -> np.random.Generator:
    """The random stream of one training example: depends on (seed, epoch, case id) only."""
    return np.random.default_rng([seed, epoch, stable_digest(case_id)])


def end_of_turn_id(tokenizer) -> int:
    """The token a generating model emits to end its turn (the tokenizer's end-of-sequence token)."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("end_of_turn: the tokenizer defines no end-of-sequence token (eos_token)")
    return int(tokenizer.eos_token_id)


def target_ids(tokenizer, prompt: str, answer: str, end_of_turn: bool = False) -> list[int]:
    """The gold answer's tokens after ``prompt``, then the end-of-sequence token when ``end_of_turn``
    (what a generating model must emit to stop after its answer)."""
    ids = answer_token_ids(tokenizer, prompt, answer)
    return [*ids, end_of_turn_id(tokenizer)] if end_of_turn else ids


def encode_targets(processor, requests: Sequence[Request], answers: Sequence[str],
                   end_of_turn: bool = False) -> AnswerBatch:
    """Prompt + gold answer tokens (+ end-of-sequence when ``end_of_turn``), right padded, with
    ``batch.labels`` masking all but the answer: the encoding option scoring uses."""
    prompts = [chat_prompt(processor, r) for r in requests]
    answer_ids = [target_ids(processor.tokenizer, p, a, end_of_turn) for p, a in zip(prompts, answers)]
    return encode_answers(processor, prompts, [r.images for r in requests], answer_ids)


class ExampleBuilder:
    """Turns cases into requests (with references) and requests into answer-labelled batches."""

    def __init__(self, task: Task, processor, bank: ReferenceBank | None, selector: str, ks: Sequence[int],
                 selector_params: dict | None = None, seed: int = 0,
                 image_loader: Callable[[str], Image.Image] | None = None,
                 augment: AcquisitionAugment | None = None, end_of_turn: bool = False) -> None:
        self.task = task
        self.end_of_turn = end_of_turn
        if end_of_turn:
            end_of_turn_id(processor.tokenizer)  # fail before training, not at the first batch
        self.processor = processor
        self.ks = [int(k) for k in ks]
        self.seed = seed
        paired = max(self.ks) > 0
        self.selector = create_selector(selector if paired else "none", bank if paired else None,
                                        **((selector_params or {}) if paired else {}))
        self.load = image_loader or lru_cache(maxsize=2048)(load_image)
        self.prompts = PromptBuilder(task, image_loader=self.load)
        #: acquisition augmentation of training requests (never of validation requests)
        self.augment = augment

    def select(self, case: Case, rng: np.random.Generator, k: int | None = None) -> Selection:
        if k is None:
            k = self.ks[int(rng.integers(len(self.ks)))] if len(self.ks) > 1 else self.ks[0]
        return self.selector.select(case, k, rng)

    def train_request(self, case: Case, epoch: int) -> Request:
        """A training example; with a list of k, its k is drawn from the example's own stream.

        With ``augment``, its images are re-acquired by transforms drawn from the example's
        augmentation stream (:func:`~seeinpairs.siteshift.augment.augment_rng`), which leaves the
        references exactly as without augmentation.
        """
        request = self.prompts.build(case, self.select(case, example_rng(self.seed, epoch, case.case_id)).references)
        if self.augment is not None:
            request.images = self.augment.apply(request.images, augment_rng(self.seed, epoch, case.case_id))
        return request

    def eval_request(self, case: Case, k: int) -> Request:
        """A validation request, with references chosen exactly as evaluation chooses them."""
        return self.prompts.build(case, self.select(case, case_rng(self.seed, case.case_id), k).references)

    def encode(self, requests: Sequence[Request], answers: Sequence[str]) -> AnswerBatch:
        """Prompt + gold answer tokens, right padded; ``batch.labels`` mask all but the answer."""
        return encode_targets(self.processor, requests, answers, self.end_of_turn)

    def train_batch(self, cases: Sequence[Case], epoch: int) -> AnswerBatch:
        return self.encode([self.train_request(c, epoch) for c in cases], [str(c.label) for c in cases])
