"""Small helpers on torch devices, dtypes, transformers models and right-padded batches, shared by
the scoring paths (:mod:`.hf`, :mod:`.shared_prompt`, :mod:`.prefix_cache`, :mod:`.vision_cache`) and by
fine-tuning."""

from __future__ import annotations

import torch

#: the dtypes a model config may name
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; any other name as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def not_registered(feature: str, model_type: str | None, reasons: dict[str, str]) -> str:
    """The one line a prediction records when a fast path is not registered for a family: the feature, the
    model type and why (from ``reasons``, the feature's list of families it deliberately leaves out)."""
    why = reasons.get(str(model_type), "no entry tested equal to the uncached path")
    return f"{feature}: not registered for {model_type} ({why})"
