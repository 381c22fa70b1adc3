"""Model backends, registered by name (``hf``, ``openai_compat``, ...) in :data:`BACKENDS`, built by
:func:`create_backend` from a model config.

The entries are lazy: importing this package does not import transformers; the first
``create_backend({"backend": "hf", ...})`` does.
"""

from .base import (BACKENDS, Backend, Scored, content_identity, create_backend, local_backend,
                   option_probabilities, require_local_weights)
from .sources import concrete_model

__all__ = ["BACKENDS", "Backend", "Scored", "concrete_model", "content_identity", "create_backend",
           "local_backend", "option_probabilities", "require_local_weights"]
