"""The shared base of YAML configs: strict fields, one-line errors, paths relative to the file.

Experiment, training and study configs all read the same way: unknown fields
are rejected, the first validation problem is reported as
``<file>: field '<a.b.c>': <message>`` on one line, and relative paths resolve
against the config file's folder so a config and its data travel together.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

#: pydantic names union members in error locations ("int", "list[int]"); they are not fields
_UNION_MEMBER = re.compile(r"^(bool|int|float|str|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-.*)$")

C = TypeVar("C", bound="ConfigFile")


def resolve_path(path: Path | None, base: Path) -> Path | None:
    """``path`` as given when absolute (or None), else relative to ``base``."""
    return path if path is None or path.is_absolute() else (base / path).resolve()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML text, where (1-based line and column), and in which construct.

    e.g. ``line 3, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)``.
    """
    if not isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(str(exc).split())
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = " ".join(str(exc.problem or "invalid syntax").split())
    context = f" ({' '.join(str(exc.context).split())})" if exc.context else ""
    return f"{where}{problem}{context}"


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The parsed YAML file (safe loader), or a one-line :class:`ConfigError` naming the file and,
    for a syntax error, the line and column."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
        raise ConfigError(f"{path}: cannot read {what} file ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML at {yaml_problem(exc)}") from None


def validation_message(exc: ValidationError, source: str) -> str:
    """The first problem of a validation error as one line naming the field path.

    A validator that judges a mapping entry by entry (a model's ``options``) names the entry
    in its error context as ``subfield``; it extends the path, e.g. ``models.0.options.prefix_cach``.
    """
    first = exc.errors()[0]
    loc = [*first["loc"], *([first["ctx"]["subfield"]] if "subfield" in first.get("ctx", {}) else [])]
    where = ".".join(str(p) for p in loc if not _UNION_MEMBER.match(str(p))) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    message = " ".join(str(first["msg"]).split()).removeprefix("Value error, ")
    return f"{source}: field '{where}': {message}{more}"


class ConfigFile(BaseModel):
    """A config that is read from YAML or a dict."""

    model_config = ConfigDict(extra="forbid")

    def resolve_paths(self: C, base: Path) -> C:
        """Resolve relative paths against ``base`` (the config file's folder); none by default.
        A :class:`ConfigError` raised here names the field; the file name is added by the caller."""
        return self

    @classmethod
    def from_dict(cls: type[C], data: Any, source: str = "config", base: Path | None = None) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(validation_message(exc, source)) from None
        if base is None:
            return config
        try:
            return config.resolve_paths(base)
        except ConfigError as exc:  # e.g. an output folder that is a file: the message gains the file name
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        return cls.from_dict(read_yaml(path), source=str(path), base=path.resolve().parent)
