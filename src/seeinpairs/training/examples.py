"""Where training examples come from: an :class:`ExampleSource` yields answer-labelled batches.

The training loop (:mod:`.sft`) only needs, per step, a batch of prompts with
their gold answer tokens, and, per evaluation, a validation loss. Two sources
exist: :class:`CaseExamples` (a case with healthy references from a bank, the
gold class name as the answer: comparative SFT) and :class:`RequestExamples`
(any :class:`~seeinpairs.prompts.Request` with a gold answer string, e.g. a
multi-image QA item). Both encode with the same code as option scoring, so the
loss is what evaluation scores.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..backends.base import option_probabilities
from ..backends.encoding import AnswerBatch, answer_log_probs, answer_token_ids, chat_prompt
from ..backends.in_memory import loaded_backend
from ..cases import Case
from ..errors import ConfigError
from ..prompts import Request
from .data import ExampleBuilder, encode_targets, end_of_turn_id


@dataclass
class LabelledRequest:
    """One generic training example: a request (messages, images, options) and its gold answer.

    ``options`` may be empty (open-ended); when present, the gold answer should be one of them,
    and validation then also reports option-scored accuracy.
    """

    request: Request
    answer: str
    example_id: str = ""


ExampleLike = LabelledRequest | tuple[Request, str] | tuple[Request, str, str]


def as_labelled(example: ExampleLike, index: int) -> LabelledRequest:
    """A :class:`LabelledRequest` from one of the accepted shapes; the id defaults to the position."""
    if isinstance(example, LabelledRequest):
        return example if example.example_id else LabelledRequest(example.request, example.answer, str(index))
    if isinstance(example, tuple) and len(example) in (2, 3) and isinstance(example[0], Request):
        return LabelledRequest(example[0], str(example[1]), str(example[2]) if len(example) == 3 else str(index))
    raise ConfigError(f"training example {index}: expected (Request, answer) or LabelledRequest, "
                      f"got {type(example).__name__}")


class ExampleSource(Protocol):
    """What the training loop consumes: indexable examples that encode into answer-labelled batches."""

    def __len__(self) -> int: ...

    @property
    def ids(self) -> list[str]: ...

    @property
    def labels(self) -> list[str]:
        """Each example's class (what ``class_balance`` balances over), in index order."""
        ...

    def batch(self, indices: Sequence[int], epoch: int) -> AnswerBatch: ...

    def summary(self) -> dict[str, Any]: ...

    #: whether ``class_balance: auto`` may balance these examples' classes
    auto_balance: bool


class CaseExamples:
    """Comparative examples: each case with references drawn per (seed, epoch, case), the class as answer."""

    #: ``class_balance: auto`` balances classification cases when their classes are imbalanced
    auto_balance = True

    def __init__(self, cases: Sequence[Case], builder: ExampleBuilder, classes: Sequence[str]) -> None:
        self.cases = list(cases)
        self.builder = builder
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    @property
    def labels(self) -> list[str]:
        """The gold class of each case."""
        return [str(c.label) for c in self.cases]

    def batch(self, indices: Sequence[int], epoch: int) -> AnswerBatch:
        return self.builder.train_batch([self.cases[int(i)] for i in indices], epoch)

    def summary(self) -> dict[str, Any]:
        return {"n_train": len(self.cases), "train_case_ids": self.ids,
                "train_label_counts": {c: sum(case.label == c for case in self.cases) for c in self.classes}}


class RequestExamples:
    """Generic examples given as (request, gold answer) pairs.

    ``examples`` may be any sequence; items are fetched by index when a batch is
    built, so a lazy sequence keeps images out of memory between steps.
    """

    #: ``class_balance: auto`` leaves generic examples as they are: their answers (option letters,
    #: free text) are not classes whose shares a model could collapse to; ask for loss/sampler explicitly
    auto_balance = False

    def __init__(self, examples: Sequence[ExampleLike], processor, end_of_turn: bool = False) -> None:
        self.examples = examples
        self.processor = processor
        self.end_of_turn = end_of_turn
        if end_of_turn:
            end_of_turn_id(processor.tokenizer)  # fail before training, not at the first batch
        self._ids = [as_labelled(examples[i], i).example_id for i in range(len(examples))]
        if len(set(self._ids)) != len(self._ids):
            duplicate = next(i for i, c in Counter(self._ids).items() if c > 1)
            raise ConfigError(f"training examples: example id '{duplicate}' is not unique")

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def labels(self) -> list[str]:
        """The gold answer of each example (its class, for class balancing)."""
        return [self.get(i).answer for i in range(len(self))]

    def get(self, index: int) -> LabelledRequest:
        return as_labelled(self.examples[int(index)], int(index))

    def batch(self, indices: Sequence[int], epoch: int) -> AnswerBatch:
        examples = [self.get(i) for i in indices]
        return encode_examples(self.processor, examples, self.end_of_turn)

    def summary(self) -> dict[str, Any]:
        answers = Counter(self.get(i).answer for i in range(len(self)))
        return {"n_train": len(self), "train_example_ids": self.ids, "n_distinct_answers": len(answers)}


def encode_examples(processor, examples: Sequence[LabelledRequest], end_of_turn: bool = False) -> AnswerBatch:
    """Prompt + gold answer tokens (+ end-of-sequence when ``end_of_turn``), right padded (the encoding
    option scoring uses)."""
    return encode_targets(processor, [e.request for e in examples], [e.answer for e in examples], end_of_turn)


def examples_digest(examples: Sequence[ExampleLike]) -> str:
    """A short hash of ids, answers and options: resuming refuses a run whose examples changed."""
    digest = hashlib.sha256()
    for i in range(len(examples)):
        e = as_labelled(examples[i], i)
        digest.update(json.dumps([e.example_id, e.answer, list(e.request.options), e.request.n_images]).encode())
    return digest.hexdigest()[:16]


def example_texts(examples: Iterable[LabelledRequest]) -> list[str]:
    """The texts of prompts, options and answers (what a tiny model's tokenizer is trained on)."""
    texts: list[str] = []
    for e in examples:
        for message in e.request.messages:
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            else:
                texts.extend(part["text"] for part in content or [] if part.get("type") == "text")
        texts.extend(e.request.options)
        texts.append(e.answer)
    return texts


class ExampleValidator:
    """Validation of generic examples: answer NLL per gold token (the training objective) for all,
    and option-scored accuracy for those whose gold answer is one of their options.

    The NLL of an example with options is read from the gold option's score (the same number:
    the summed log-probability of the gold tokens), so those examples cost one scoring pass.
    """

    headline = "accuracy"

    def __init__(self, examples: Sequence[ExampleLike], processor, batch_size: int = 8) -> None:
        self.examples = [as_labelled(examples[i], i) for i in range(len(examples))]
        self.processor = processor
        self.batch_size = batch_size
        self.gold_tokens = [len(answer_token_ids(processor.tokenizer, chat_prompt(processor, e.request), e.answer))
                            for e in self.examples]
        self.scored = [i for i, e in enumerate(self.examples) if e.request.options and e.answer in e.request.options]
        scored = set(self.scored)
        self.open = [i for i in range(len(self.examples)) if i not in scored]

    def __call__(self, model) -> dict[str, float]:
        backend = loaded_backend(model, self.processor, name="training", batch_size=self.batch_size)
        nll, correct = 0.0, 0
        try:
            scores = backend.score_options([self.examples[i].request for i in self.scored])
            for i, option_scores in zip(self.scored, scores):
                e = self.examples[i]
                gold = e.request.options.index(e.answer)
                nll -= option_scores[gold]
                probabilities = option_probabilities(option_scores)
                correct += int(int(probabilities.argmax()) == gold)
            with torch.inference_mode():
                for start in range(0, len(self.open), self.batch_size):
                    chunk = [self.examples[i] for i in self.open[start:start + self.batch_size]]
                    batch = encode_examples(self.processor, chunk).to(backend.device)
                    nll -= float(sum(values.sum() for values in answer_log_probs(model, batch)))
        finally:
            model.train()
        result = {"val_loss": nll / max(1, sum(self.gold_tokens)), "val_n": float(len(self.examples))}
        if self.scored:
            result["val_accuracy"] = correct / len(self.scored)
        return result
