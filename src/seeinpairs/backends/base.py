"""The backend contract: score closed-set options and generate text, batched.

A backend receives :class:`~seeinpairs.prompts.Request` objects and returns,
for ``score_options``, the log-likelihood of each option's tokens after the
assistant turn starts (summed over the option's tokens), and for ``generate``,
the decoded answer. Identical inputs must give identical outputs.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from ..backend_options import BACKEND_OPTIONS, option_problem
from ..errors import BackendError
from ..prompts import Request
from ..registry import Registry


class Backend(ABC):
    """A vision-language model behind a uniform, batched interface."""

    #: registry name of the backend type
    kind: str = "base"

    @abstractmethod
    def score_options(self, requests: Sequence[Request]) -> list[list[float]]:
        """Per request, the summed log-probability of each option (same order as ``request.options``)."""

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


def create_backend(name: str, **kwargs: Any) -> Backend:
    """Create a registered backend by name (``hf``, ...).

    Options are checked against the backend's declared ones first, so a misspelt option is a
    one-line :class:`BackendError` naming it and the allowed names, not a constructor's TypeError.
    """
    factory = BACKENDS.get(name)
    options = {key: value for key, value in kwargs.items() if key not in _CONSTRUCTION_ARGUMENTS}
    problem = option_problem(name, options) if name in BACKEND_OPTIONS else _signature_problem(factory, options)
    if problem is not None:
        option, message = problem
        raise BackendError(f"backend '{name}': option '{option}': {message}")
    return factory(**kwargs)


#: constructor arguments a backend gets from the model config's own fields (or from code), not ``options``
_CONSTRUCTION_ARGUMENTS = ("model", "dtype", "device", "batch_size", "transport")


def _signature_problem(factory: Any, options: dict[str, Any]) -> tuple[str, str] | None:
    """For a backend without declared options: an option its constructor does not take."""
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    allowed = [n for n in parameters if n not in ("self", *_CONSTRUCTION_ARGUMENTS)]
    unknown = sorted(set(options) - set(parameters))
    return (unknown[0], f"unknown option (allowed: {', '.join(allowed)})") if unknown else None
