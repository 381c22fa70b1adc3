"""Multi-image SFT: Med-MIM-format items as (interleaved request, gold answer) training examples.

The generic training path (:func:`seeinpairs.training.train_on_examples`) does
the rest: full training for tiny models, LoRA for pretrained ones, the best
checkpoint by validation loss, resumable. Multiple-choice items are trained on
their canonical answer ``"C: option text"`` (what option scoring compares);
open-ended items on their reference answer.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from typing import Any

from ..training import LabelledRequest, SFTSettings, TrainResult, train_on_examples
from .format import MimDataset
from .prompts import build_request


class MimExamples(SequenceABC):
    """The items of a data set as training examples; images are read when an example is fetched."""

    def __init__(self, dataset: MimDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.items)

    def __getitem__(self, index: int) -> LabelledRequest:  # type: ignore[override]
        item = self.dataset.items[index]
        return LabelledRequest(build_request(item, self.dataset.images(item)), item.gold_answer, item.uid)


def train_mim(settings: SFTSettings, train: MimDataset, val: MimDataset | None = None,
              **options: Any) -> TrainResult:
    """Fine-tune on multi-image QA items (``options`` go to :func:`train_on_examples`)."""
    return train_on_examples(settings, MimExamples(train), MimExamples(val) if val is not None else (), **options)
