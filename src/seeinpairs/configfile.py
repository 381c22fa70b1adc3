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


def validation_message(exc: ValidationError, source: str) -> str:
    """The first problem of a validation error as one line naming the field path."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not _UNION_MEMBER.match(str(p))) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    message = " ".join(str(first["msg"]).split())
    return f"{source}: field '{where}': {message}{more}"


class ConfigFile(BaseModel):
    """A config that is read from YAML or a dict."""

    model_config = ConfigDict(extra="forbid")

    def resolve_paths(self: C, base: Path) -> C:
        """Resolve relative paths against ``base`` (the config file's folder); none by default."""
        return self

    @classmethod
    def from_dict(cls: type[C], data: Any, source: str = "config", base: Path | None = None) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(validation_message(exc, source)) from None
        return config.resolve_paths(base) if base is not None else config

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config ({type(exc).__name__})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data, source=str(path), base=path.resolve().parent)
