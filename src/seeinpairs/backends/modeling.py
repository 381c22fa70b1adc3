"""Small helpers on transformers models and right-padded batches, shared by the scoring
paths (:mod:`.hf`, :mod:`.shared_prompt`, :mod:`.prefix_cache`)."""

from __future__ import annotations

import torch


def base_model(model):
    """The transformers model under a PEFT and/or DistributedDataParallel wrapper (the model itself
    when unwrapped), e.g. to read its ``forward`` signature."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def last_position_mask(attention: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, seq) mask of each right-padded row's last real token: where the next token is predicted."""
    keep = torch.zeros_like(attention, dtype=torch.bool)
    keep[torch.arange(keep.shape[0], device=keep.device), attention.sum(dim=1) - 1] = True
    return keep
