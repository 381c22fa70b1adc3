"""Task definitions: what is asked, which answers are allowed, which class is healthy.

The healthy class defines the reference bank (healthy controls); the ordered
class names are the closed answer set scored by log-likelihood.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError


class Task(BaseModel):
    """A closed-set diagnostic question over one image (plus optional references)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "diagnosis"
    question: str = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    healthy_class: str
    descriptions: dict[str, str] = Field(default_factory=dict)
    modality: str = "medical image"

    @model_validator(mode="after")
    def _check(self) -> "Task":
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes contain duplicates: {self.classes}")
        if any(not c.strip() for c in self.classes):
            raise ValueError("class names must not be empty")
        if self.healthy_class not in self.classes:
            raise ValueError(f"healthy_class '{self.healthy_class}' is not one of the classes {self.classes}")
        unknown = sorted(set(self.descriptions) - set(self.classes))
        if unknown:
            raise ValueError(f"descriptions given for unknown classes {unknown}")
        return self

    @property
    def abnormal_classes(self) -> list[str]:
        return [c for c in self.classes if c != self.healthy_class]

    def index(self, label: str) -> int:
        return self.classes.index(label)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "task") -> "Task":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "task"
            raise ConfigError(f"{source}: field '{where}': {first['msg']}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Task":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: task file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of task fields")
        return cls.from_dict(data, source=str(path))
