"""The ``options`` each model backend accepts, declared without importing the backends.

A config's ``models[i].options`` are keyword arguments of the backend's constructor.
They are checked when the config is read (a misspelt ``prefix_cach`` is a one-line
error naming the field and the allowed names, before torch is imported and before any
data is prepared) and again by :func:`seeinpairs.backends.base.create_backend` for
options given in code. The backends themselves import torch or httpx, so their option
lists live here; a test keeps each list equal to its constructor's keyword parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError


class BackendOptions(BaseModel):
    """Base of a backend's options: unknown names are refused, values are not coerced
    (``prefix_cache: "no"`` is an error, not ``True``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    #: options that change how a backend runs (where it reaches, how fast, with which credentials) but
    #: not what it predicts: left out of the run key, so changing them reuses stored predictions, and
    #: never written to ``runs.json`` (an API key among them)
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset()
    #: options keyed with their default value even when not given, because the default decides how
    #: predictions are made (a run keyed before such an option existed is then recomputed, not mixed)
    KEYED_DEFAULTS: ClassVar[frozenset[str]] = frozenset()


class HFOptions(BackendOptions):
    """Options of the ``hf`` backend (``model``, ``dtype``, ``device`` and ``batch_size`` are model fields)."""

    OPERATIONAL = frozenset({"vision_cache_mb", "cache_dir", "local_files_only"})

    revision: str | None = None
    vision_cache_mb: int = Field(0, ge=0)
    prefix_cache: bool = False
    trust_remote_code: bool = False
    cache_dir: str | None = None
    local_files_only: bool = False
    attn_implementation: str | None = None


class OpenAICompatOptions(BackendOptions):
    """Options of the ``openai_compat`` backend (the served model name is the model's ``name``)."""

    OPERATIONAL = frozenset({"base_url", "api_key", "api_key_env", "timeout", "max_retries", "backoff",
                             "concurrency"})
    KEYED_DEFAULTS = frozenset({"scoring"})

    base_url: str = "http://localhost:8000/v1"
    api_key: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff: float = Field(0.5, ge=0)
    concurrency: int = Field(4, ge=1)
    top_logprobs: int = Field(20, ge=1)
    fallback: bool = True
    generation_tokens: int = Field(8, ge=1)
    extra_body: dict[str, Any] | None = None
    scoring: Literal["auto", "first_token", "prompt_logprobs"] = "auto"
    image_turns: bool = False


#: backend name -> its options; a new backend declares its options here
BACKEND_OPTIONS: dict[str, type[BackendOptions]] = {"hf": HFOptions, "openai_compat": OpenAICompatOptions}


def option_problem(backend: str, options: dict[str, Any]) -> tuple[str, str] | None:
    """The first problem of ``options`` for ``backend`` as (option name, message), or None when valid.

    An unknown backend is not judged here (the backend registry names the known ones).
    """
    schema = BACKEND_OPTIONS.get(backend)
    if schema is None:
        return None
    try:
        schema.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "options"
        allowed = ", ".join(schema.model_fields)
        if first["type"] == "extra_forbidden":
            return name, f"unknown option of the '{backend}' backend (allowed: {allowed})"
        return name, " ".join(str(first["msg"]).split())
    return None


def prediction_options(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options that decide a backend's predictions (its operational ones and secrets left out)."""
    schema = BACKEND_OPTIONS.get(backend)
    if schema is None:
        return dict(options)
    defaults = {name: schema.model_fields[name].default for name in sorted(schema.KEYED_DEFAULTS)}
    return {**defaults, **{name: value for name, value in options.items() if name not in schema.OPERATIONAL}}


def known_backend(backend: str) -> str:
    """A config field validator: ``backend`` names a backend with declared options."""
    if backend not in BACKEND_OPTIONS:
        raise ValueError(f"unknown backend '{backend}' (known: {', '.join(BACKEND_OPTIONS)})")
    return backend


def checked_options(options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """A config field validator: ``options`` are valid for the config's ``backend`` (checked when the
    config is read, not when the model loads). The error names the option as a sub-field, so the
    one-line message reads ``field 'models.0.options.prefix_cach': ...``; the dict is kept as written."""
    if "backend" not in info.data:  # the backend itself is invalid; that error is reported
        return options
    problem = option_problem(info.data["backend"], options)
    if problem is not None:
        name, message = problem
        raise PydanticCustomError("backend_option", "{message}", {"message": message, "subfield": name})
    return options
