"""The backend contract: score closed-set options and generate text, batched.

A backend receives :class:`~seeinpairs.prompts.Request` objects and returns,
for ``score_options``, the log-likelihood of each option's tokens after the
assistant turn starts (summed over the option's tokens), and for ``generate``,
the decoded answer. Identical inputs must give identical outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

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


BACKENDS: Registry[Backend] = Registry("backend")


def create_backend(name: str, **kwargs: Any) -> Backend:
    """Create a registered backend by name (``hf``, ...)."""
    return BACKENDS.create(name, **kwargs)
