"""Comparative supervised fine-tuning: train a VLM to answer with k healthy references beside the query.

``train(TrainConfig.from_yaml(path))`` fine-tunes (LoRA or full), validates,
keeps the best checkpoint and writes ``output_dir/final``, which loads with
``HFBackend(model=output_dir / "final")`` like any checkpoint.
"""

from .config import DEFAULT_LORA_TARGETS, LoraConfig, TrainConfig
from .data import ExampleBuilder, example_rng, select_train_cases, subset_order
from .sft import TrainResult, train

__all__ = ["DEFAULT_LORA_TARGETS", "ExampleBuilder", "LoraConfig", "TrainConfig", "TrainResult", "example_rng",
           "select_train_cases", "subset_order", "train"]
