"""Default LoRA targets, read from the model's module tree: the language model's attention projections.

An adapter on the vision tower or the projector changes the image features that
every fast path caches and that the frozen-vision comparison relies on, and a
list of per-family patterns typed by hand misses each new family (peft's
``all-linear`` fallback then adapts the vision tower too). The language model is
what ``get_decoder()`` returns, for every transformers VLM; its attention modules
are the submodules whose class name ends in ``Attention`` (self- and, for Mllama,
cross-attention), and their linear layers are the targets.
"""

from __future__ import annotations

import re

import torch

from .modeling import base_model


def language_model_name(model) -> str | None:
    """The dotted name of the language model inside ``model`` ("" for the model itself), or None
    when the model has no ``get_decoder``."""
    model = base_model(model)
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    return next((name for name, module in model.named_modules() if module is decoder), None)


def attention_projections(model) -> list[str]:
    """Full names of the linear layers directly inside the language model's attention modules."""
    model = base_model(model)
    prefix = language_model_name(model)
    if prefix is None:
        return []
    decoder = model.get_submodule(prefix)
    found = []
    for name, module in decoder.named_modules():
        if type(module).__name__.endswith("Attention"):
            found += [".".join(filter(None, (prefix, name, child))) for child, layer in module.named_children()
                      if isinstance(layer, torch.nn.Linear)]
    return found


def language_model_targets(model) -> str | list[str] | None:
    """A peft ``target_modules`` value for the language model's attention projections and nothing else,
    or None where none are found: a pattern (peft full-matches a string against each module name), or
    the full names where no pattern of the attention and layer names picks out exactly those."""
    names = attention_projections(model)
    if not names:
        return None
    prefix = language_model_name(model)
    head = re.escape(prefix) + r"\.(?:.*\.)?" if prefix else r"(?:.*\.)?"
    pattern = head + _one_of(n.split(".")[-2] for n in names) + r"\." + _one_of(n.split(".")[-1] for n in names)
    matched = [name for name, _ in base_model(model).named_modules() if re.fullmatch(pattern, name)]
    return pattern if matched == names else names


def _one_of(words) -> str:
    return "(?:" + "|".join(map(re.escape, sorted(set(words)))) + ")"


def adapted_modules(model) -> list[str]:
    """Names (relative to the transformers model) of the modules that carry a LoRA adapter."""
    model = base_model(model)
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
