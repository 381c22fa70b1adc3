"""A backend around weights already in memory: the one door to a backend besides
:func:`~seeinpairs.backends.create_backend`.

A model being trained (validation), or just trained (the multi-image QA demo, the set-difference
benchmark's attribute VLM), is scored by the same code as a checkpoint loaded from disk; reloading it
from disk would cost time and, in half precision, could change the scores a training run validated.
"""

from __future__ import annotations

from typing import Any

from .base import Backend
from .hf import HFBackend


def loaded_backend(model: Any, processor: Any, name: str, batch_size: int = 8, vision_cache_mb: int = 0) -> Backend:
    """The ``hf`` backend around ``model`` and ``processor``; ``name`` stands for the weights in its identity."""
    return HFBackend.from_components(model, processor, name=name, batch_size=batch_size,
                                     vision_cache_mb=vision_cache_mb)
