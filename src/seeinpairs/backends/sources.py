"""Where a model config's model comes from, settled before a backend loads it.

A config names a checkpoint (``name``: a hub id, a folder, a served model's name) or a tiny
offline model (``tiny``: a family and a seed). :func:`concrete_model` turns the second into
the first: the tiny model is built once into a folder (its tokenizer learning the task's
words) and the config then names that folder under the same label. For one process of a
data-parallel launch it also picks that process's GPU. :func:`checkpoint_fingerprint` is the
content identity that run keys store. Nothing here imports torch until a tiny model is built
or a GPU is looked for, so configs are settled without loading a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from ..settings import ModelConfig

#: the files whose content identifies a checkpoint (weights, configs, tokenizer, chat template)
_CHECKPOINT_SUFFIXES = (".json", ".safetensors", ".bin", ".jinja", ".model", ".txt")


def checkpoint_fingerprint(name_or_path: str) -> str:
    """Identity of a checkpoint's content: a local folder is hashed (name, size, head and tail of
    each file), so a re-trained model at the same path gets a new identity; a hub id is its own."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix not in _CHECKPOINT_SUFFIXES:
            continue
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def tiny_folder(root: Path, model: ModelConfig) -> Path:
    """The folder a tiny model of ``model`` is built into under ``root`` (one per family and seed)."""
    return Path(root) / f"tiny-{model.tiny}-s{model.tiny_seed}"


def concrete_model(model: ModelConfig, tiny_root: Path, texts: Sequence[str] = (),
                   local_rank: int | None = None) -> ModelConfig:
    """``model`` as a backend loads it: a tiny model built (once) under ``tiny_root`` with ``texts``
    in its tokenizer, the config naming its folder and keeping its label; with ``local_rank`` (one
    process of a data-parallel launch), that process's GPU when the config asks for ``auto`` or
    ``cuda`` and one is present."""
    if model.tiny is not None:
        from .tiny import build_tiny_vlm, built_tiny_vlm, tiny_marker

        folder = tiny_folder(tiny_root, model)
        if not built_tiny_vlm(folder, tiny_marker(model.tiny, model.tiny_seed)):
            build_tiny_vlm(model.tiny, folder, texts=list(texts), seed=model.tiny_seed)
        model = model.model_copy(update={"name": str(folder), "tiny": None, "label": model.display})
    if local_rank is not None:
        model = model.model_copy(update={"device": process_device(model.device, local_rank)})
    return model


def process_device(device: str, local_rank: int) -> str:
    """The device of one process of a data-parallel launch: GPU ``local_rank`` (one GPU per process)
    where ``device`` is ``auto`` or ``cuda`` and CUDA is available, else ``device`` itself."""
    if device.split(":")[0] not in ("auto", "cuda"):
        return device
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else device
