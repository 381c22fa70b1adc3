"""Training one model of a comparison, or reusing it: the entry point studies and experiments share.

A study (and the site-shift experiment built on its settings) trains several models that differ
only in how they see references (k, selector) and a few overrides (subset size, seed,
augmentation), on settings they share: task, data, bank, base model, tiny-model spec and the
training fields. :func:`train_condition` turns those into a :class:`TrainConfig` and trains,
unless ``output_dir`` holds a finished run with the same settings, which is reused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pydantic import ValidationError

from ..cases import CaseTable
from ..configfile import validation_message
from ..errors import ConfigError
from ..stages import stage_done
from .balance import resolve_class_balance
from .config import TrainConfig
from .sft import train

log = logging.getLogger(__name__)


class SharedTrainSettings(Protocol):
    """What every model of a comparison is trained on (a study config has these fields)."""

    task: Any
    data: Any
    bank: Any
    model: Any
    tiny_spec: dict[str, Any]
    #: TrainConfig fields shared by every training run (max_steps, batch_size, lr, ...)
    train: dict[str, Any]


class TrainedModel(NamedTuple):
    """A finished training run: its checkpoint and its ``train_summary.json`` contents."""

    checkpoint: Path
    summary: dict[str, Any]


def condition_train_config(shared: SharedTrainSettings, output_dir: Path, k: int | list[int], selector: str = "none",
                           selector_params: dict[str, Any] | None = None,
                           overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The training config of one model: the shared settings, then ``overrides``, then its references."""
    raw = {"name": output_dir.name, "task": shared.task.model_dump(), "data": shared.data.model_dump(mode="json"),
           "bank": shared.bank.model_dump(mode="json"), "model": shared.model.model_dump(mode="json"),
           "tiny_spec": shared.tiny_spec, **shared.train, **(overrides or {}),
           "k": k, "selector": selector if k else "none", "selector_params": (selector_params or {}) if k else {},
           "output_dir": str(output_dir)}
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "study train settings")) from None


def train_condition(shared: SharedTrainSettings, output_dir: Path, k: int | list[int], selector: str = "none",
                    selector_params: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                    progress: bool = True, table: CaseTable | None = None) -> TrainedModel:
    """Train one model of a comparison into ``output_dir`` (k=0: single-image), or reuse the finished
    run there when its settings are the same; changed settings train again from scratch.

    ``table``: the cases ``shared.data`` describes, when the caller has read them already.
    """
    config = condition_train_config(shared, output_dir, k, selector, selector_params, overrides)
    summary_path = output_dir / "train_summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        checkpoint = Path(summary.get("checkpoint", ""))
        if (checkpoint.exists() and summary.get("config") == config.model_dump(mode="json")
                and same_class_balance(summary, config.class_balance)):
            stage_done("model reused", f"{output_dir} ({summary.get('steps')} steps, trained before)")
            return TrainedModel(checkpoint, summary)
        log.info("%s: settings changed since the last run; training again", output_dir)
        result = train(config, progress=progress, resume=False, table=table)
    else:
        result = train(config, progress=progress, resume=True, table=table)
    stage_done("model trained", f"{output_dir} (k={k}): {result.steps} steps", result.seconds)
    return TrainedModel(Path(result.checkpoint), result.summary)


def same_class_balance(summary: dict[str, Any], mode: str) -> bool:
    """Whether a finished run applied the class balancing ``mode`` applies now to its training labels
    (a run made before class balancing existed applied none; ``auto`` is left out of the config dump)."""
    applied = (summary.get("class_balance") or {}).get("applied", "none")
    labels = [label for label, n in (summary.get("train_label_counts") or {}).items() for _ in range(int(n))]
    return applied == resolve_class_balance(mode, labels)
