"""Task definitions: what is asked, which answers are allowed, which class is healthy.

The healthy class defines the reference bank (healthy controls); the ordered
class names are the closed answer set scored by log-likelihood.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .configfile import read_yaml
from .errors import ConfigError


class UnknownClassError(ConfigError, ValueError):
    """A label outside a task's classes (a ValueError too, as ``list.index`` raised before)."""


class Task(BaseModel):
    """A closed-set diagnostic question over one image (plus optional references)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "diagnosis"
    question: str = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    healthy_class: str
    descriptions: dict[str, str] = Field(default_factory=dict)
    modality: str = "medical image"

    # Field validators (not one model validator) so that an error names its field.
    @field_validator("classes")
    @classmethod
    def _check_classes(cls, classes: list[str]) -> list[str]:
        if any(not c.strip() for c in classes):
            raise ValueError("class names must not be empty")
        duplicates = sorted({c for c in classes if classes.count(c) > 1})
        if duplicates:
            raise ValueError(f"classes contain duplicates: {duplicates}")
        return classes

    @field_validator("question")
    @classmethod
    def _check_question(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("question must not be blank")
        return question

    @field_validator("healthy_class")
    @classmethod
    def _check_healthy(cls, healthy_class: str, info: ValidationInfo) -> str:
        classes = info.data.get("classes")
        if classes is not None and healthy_class not in classes:
            raise ValueError(f"healthy_class '{healthy_class}' is not one of the classes {classes}")
        return healthy_class

    @field_validator("descriptions")
    @classmethod
    def _check_descriptions(cls, descriptions: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        classes = info.data.get("classes")
        if classes is not None:
            unknown = sorted(set(descriptions) - set(classes))
            if unknown:
                raise ValueError(f"descriptions given for unknown classes {unknown}")
        return descriptions

    @property
    def abnormal_classes(self) -> list[str]:
        return [c for c in self.classes if c != self.healthy_class]

    def index(self, label: str) -> int:
        try:
            return self.classes.index(label)
        except ValueError:
            raise UnknownClassError(f"task '{self.name}': '{label}' is not one of the classes {self.classes}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "task") -> "Task":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of task fields, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            # every problem, each naming its field, on one line
            problems = []
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"]) or "task"
                message = _one_line(error["msg"]).removeprefix("Value error, ")
                problems.append(f"field '{where}': {message}")
            raise ConfigError(f"{source}: " + "; ".join(problems)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Task":
        path = Path(path)
        data = read_yaml(path, what="task")
        if not isinstance(data, dict):
            found = "an empty file" if data is None else f"a {type(data).__name__}"
            raise ConfigError(f"{path}: expected a mapping of task fields (question, classes, healthy_class), found {found}")
        return cls.from_dict(data, source=str(path))


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
