"""The backend contract: score closed-set options and generate text, batched; and the one door
that builds a backend, :func:`create_backend`, from a :class:`~seeinpairs.settings.ModelConfig`.

A backend receives :class:`~seeinpairs.prompts.Request` objects and returns, for
:meth:`Backend.score`, the log-likelihood of each option's tokens after the assistant turn
starts (summed over the option's tokens) together with how they were obtained, and for
``generate``, the decoded answer. Identical inputs must give identical outputs.

Each registered backend builds itself from a model config (:meth:`Backend.from_config`), so
evaluation, serving, explanation, studies and the command line build every model the same
way, and a model served elsewhere (``openai_compat``) can stand wherever a local one does,
except where local weights are needed (:attr:`Backend.local_weights`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pydantic import ValidationError

from ..backend_options import option_problem
from ..configfile import validation_message
from ..errors import BackendError
from ..prompts import Request
from ..registry import Registry
from ..settings import ModelConfig
from .sources import checkpoint_fingerprint


@dataclass(frozen=True)
class Scored:
    """One request's option scores and how they were obtained."""

    #: the summed log-probability of each option's tokens (same order as ``request.options``)
    log_likelihoods: list[float]
    #: what a prediction records about how its scores came about (as ``scoring``): a server's method and
    #: notes (first-token scores, bounds, a generation fallback), or the query's resolution where it
    #: depends on the image count; None when there is nothing to record
    how: dict[str, Any] | None = None
    #: the computation that produced them (e.g. ``prefix-cache``, ``next-token``, ``shared-prompt``,
    #: ``per-option``, ``logprobs``): for logs and tests; a backend's paths agree on the scores
    path: str = ""


class Backend(ABC):
    """A vision-language model behind a uniform, batched interface."""

    #: registry name of the backend type
    kind: str = "base"
    #: whether the model's weights are in this process (gradients, hidden states, training need them)
    local_weights: bool = False

    @classmethod
    def from_config(cls, config: ModelConfig) -> "Backend":
        """The backend of ``config`` (its ``name``, ``dtype``, ``device``, ``batch_size`` and ``options``)."""
        raise BackendError(f"backend '{cls.kind}' cannot be built from a model config")

    @classmethod
    def content_identity(cls, config: ModelConfig) -> str:
        """What identifies the model's content in run keys: a local folder's files are hashed (a model
        re-trained at the same path is a new model), any other name is its own identity."""
        return checkpoint_fingerprint(str(config.name))

    @abstractmethod
    def score(self, requests: Sequence[Request]) -> list[Scored]:
        """Per request, its options' log-likelihoods and how they were obtained."""

    def score_options(self, requests: Sequence[Request]) -> list[list[float]]:
        """Per request, the summed log-probability of each option (same order as ``request.options``)."""
        return [scored.log_likelihoods for scored in self.score(requests)]

    @abstractmethod
    def generate(self, requests: Sequence[Request], max_new_tokens: int = 32) -> list[str]:
        """Per request, the decoded greedy answer."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything about the model that determines its outputs (for store keys)."""


def option_probabilities(log_likelihoods: Sequence[float]) -> np.ndarray:
    """Normalise per-option log-likelihoods into a probability over the closed set."""
    scores = np.asarray(log_likelihoods, dtype=np.float64)
    scores = scores - scores.max()
    probs = np.exp(scores)
    return probs / probs.sum()


BACKENDS: Registry[Backend] = Registry("backend", expects=Backend, name_attribute="kind")
BACKENDS.register("hf", "seeinpairs.backends.hf:HFBackend",
                  description="a transformers VLM from the hub, a checkpoint folder or a LoRA adapter")
BACKENDS.register("openai_compat", "seeinpairs.backends.openai_compat:OpenAICompatBackend",
                  description="a model behind an OpenAI-compatible chat-completions server")


def create_backend(model: ModelConfig | Mapping[str, Any]) -> Backend:
    """The backend of a model config (or of a mapping of its fields, e.g. ``{"name": folder}``).

    Options are checked against the backend's declared ones first, so a misspelt option is a
    one-line :class:`BackendError` naming it and the allowed names, not a constructor's TypeError;
    so is any other invalid field of a mapping. A tiny model must be built first
    (:func:`~.sources.concrete_model`, which needs the data's texts for its tokenizer): its config then
    names the built folder; a config still asking for one is refused in one line.
    """
    fields = model.model_dump() if isinstance(model, ModelConfig) else dict(model)
    name = str(fields.get("backend", "hf"))
    factory = BACKENDS.get(name)
    problem = option_problem(name, dict(fields.get("options") or {}))
    if problem is not None:
        option, message = problem
        raise BackendError(f"backend '{name}': option '{option}': {message}")
    config = model if isinstance(model, ModelConfig) else model_config(fields)
    if config.tiny is not None:
        raise BackendError(f"model '{config.display}': a tiny model is built before its backend "
                           "(seeinpairs.backends.concrete_model names its folder)")
    return factory.from_config(config)


def model_config(fields: Mapping[str, Any]) -> ModelConfig:
    """A model config from its fields; an invalid field is a one-line :class:`BackendError` naming it."""
    try:
        return ModelConfig.model_validate(dict(fields))
    except ValidationError as exc:
        raise BackendError(validation_message(exc, "model")) from None


def content_identity(config: ModelConfig) -> str:
    """The identity of a (concrete) model config's content, as its backend defines it."""
    return BACKENDS.get(config.backend).content_identity(config)


def require_local_weights(model: ModelConfig, feature: str) -> None:
    """A one-line :class:`BackendError` when ``feature`` (e.g. "attribution", "training"), which needs
    the model's weights in this process, is asked of a model served elsewhere; checked before anything loads."""
    if not BACKENDS.get(model.backend).local_weights:
        raise BackendError(f"model '{model.display}': {feature} needs the model's weights in this process; "
                           f"backend '{model.backend}' only reaches a model served elsewhere (use 'hf')")


def local_backend(model: ModelConfig, feature: str) -> Backend:
    """The backend of ``model`` for ``feature``, which needs its weights (see :func:`require_local_weights`)."""
    require_local_weights(model, feature)
    return create_backend(model)
