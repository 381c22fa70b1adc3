"""Supervised fine-tuning of VLMs: comparative (query + k healthy references) or on any (request, answer) pairs.

``train(TrainConfig.from_yaml(path))`` fine-tunes (LoRA or full) on the cases of a
manifest, validates, keeps the best checkpoint and writes ``output_dir/final``,
which loads with ``create_backend({"name": output_dir / "final"})`` like any checkpoint.
``train_on_examples(SFTSettings(...), train_examples, val_examples)`` runs the same
loop on examples given as (request, gold answer) pairs, e.g. multi-image QA.
``train_condition(study, output_dir, k, ...)`` trains one model of a study's comparison
(or reuses the finished run there).
"""

from .config import LoraConfig, SFTSettings, TrainConfig
from .data import ExampleBuilder, example_rng, select_train_cases, subset_order
from .examples import (
                       CaseExamples,
                       ExampleSource,
                       ExampleValidator,
                       LabelledRequest,
                       RequestExamples,
                       encode_examples,
)
from .runs import TrainedModel, same_class_balance, train_condition
from .sft import TrainResult, train, train_on_examples

__all__ = ["CaseExamples", "ExampleBuilder", "ExampleSource", "ExampleValidator",
           "LabelledRequest", "LoraConfig", "RequestExamples", "SFTSettings", "TrainConfig", "TrainResult",
           "TrainedModel", "encode_examples", "example_rng", "same_class_balance", "select_train_cases", "subset_order",
           "train", "train_condition", "train_on_examples"]
