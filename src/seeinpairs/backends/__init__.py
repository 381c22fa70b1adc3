"""Model backends, registered by name (``hf``, ``openai_compat``, ...)."""

from . import hf  # noqa: F401  (registers the "hf" backend)
from . import openai_compat  # noqa: F401  (registers the "openai_compat" backend)
from .base import BACKENDS, Backend, create_backend, option_probabilities

__all__ = ["BACKENDS", "Backend", "create_backend", "option_probabilities"]
