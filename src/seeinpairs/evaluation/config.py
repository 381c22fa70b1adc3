"""Experiment configs: a declarative spec of data x model x selector x k x seed.

Read from YAML and validated with pydantic; every error names the file and the
field path, in one line. Relative paths resolve against the config's folder so
a config and its data travel together.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from ..configfile import ConfigFile, resolve_path
from ..errors import ConfigError
from ..settings import (BankConfig, ConditionConfig, ConfigTask, DataConfig, ModelConfig, StrictModel,
                        check_partial_task, partial_task_input)


class EvalConfig(StrictModel):
    split: str = "test"
    conditions: list[ConditionConfig] = Field(default_factory=lambda: [ConditionConfig()], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    max_cases: int | None = Field(None, ge=1)
    n_boot: int = Field(1000, ge=1)
    metrics: list[str] | None = None
    #: model label whose single-image (k=0) condition every paired condition is tested against;
    #: by default each model's own k=0 condition
    baseline_model: str | None = None


class ExperimentConfig(ConfigFile):
    name: str = "experiment"
    #: with ``data.dataset``, the fields left out (classes, healthy class, question) are the adapter's
    task: ConfigTask
    data: DataConfig
    bank: BankConfig = Field(default_factory=BankConfig)
    models: list[ModelConfig] = Field(min_length=1)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output_dir: Path = Path("runs/experiment")

    _partial_task = model_validator(mode="before")(partial_task_input)

    @model_validator(mode="after")
    def _check_models(self) -> "ExperimentConfig":
        check_partial_task(self.task, self.data)
        labels = [m.display for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"models need distinct labels, got {labels}")
        if self.eval.baseline_model is not None and self.eval.baseline_model not in labels:
            raise ValueError(f"eval.baseline_model '{self.eval.baseline_model}' is not one of the model labels {labels}")
        return self

    def resolve_paths(self, base: Path) -> "ExperimentConfig":
        output_dir = resolve_path(self.output_dir, base)
        if output_dir.exists() and not output_dir.is_dir():
            raise ConfigError(f"field 'output_dir': {output_dir} exists and is not a folder")
        return self.model_copy(update={
            "data": self.data.resolved(base), "bank": self.bank.resolved(base),
            "models": [m.resolved(base) for m in self.models],
            "output_dir": output_dir})
