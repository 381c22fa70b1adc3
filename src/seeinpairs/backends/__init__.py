"""Model backends, registered by name (``hf``, ...)."""

from . import hf  # noqa: F401  (registers the "hf" backend)
from .base import BACKENDS, Backend, create_backend, option_probabilities

__all__ = ["BACKENDS", "Backend", "create_backend", "option_probabilities"]
