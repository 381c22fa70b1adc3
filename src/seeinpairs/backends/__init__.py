"""Model backends, registered by name (``hf``, ``openai_compat``, ...) in :data:`BACKENDS`.

The entries are lazy: importing this package does not import transformers; the first
``create_backend("hf", ...)`` does.
"""

from .base import BACKENDS, Backend, create_backend, option_probabilities

__all__ = ["BACKENDS", "Backend", "create_backend", "option_probabilities"]
