"""A per-image cache of vision features (vision tower + merger/connector output) for HF VLMs.

Comparative prompts repeat the same reference images across many queries; their image
embeddings, i.e. what the model scatters into the image-token positions, depend only on the
image's preprocessed pixels (and the model), so they are computed once and reused.

:func:`install_vision_cache` replaces the inner model's ``get_image_features`` *on the
instance* with a wrapper that splits the batch's pixels into images, looks each one up by a
content hash (the image's preprocessed pixel bytes, dtype and shape/grid, plus the model
identity), computes only the misses in one call of the original method (an image repeated
within a call is computed once), and reassembles the features in order in the structure the
original returns (``BaseModelOutputWithPooling`` whose ``pooler_output`` holds the features).
The cache is bounded in bytes (the cached tensors' storage) with least-recently-used eviction.

Supported families:

* ``qwen2_vl`` / ``qwen2_5_vl``: ``pixel_values`` is (total patches, patch dim) with
  ``image_grid_thw`` (images, 3); image *i* owns ``t*h*w`` consecutive patch rows and its
  features are ``pooler_output[i]``. The vision tower attends within each image only, so one
  image's features do not depend on the other images in the call.
* ``idefics3`` (SmolVLM): ``pixel_values`` is (batch, images, C, H, W), all-zero images are
  padding; an image's key also covers its ``pixel_attention_mask``. ``pooler_output[b]`` is the
  concatenation of row *b*'s real images' features.

Other families are left unwrapped (``install_vision_cache`` returns ``None``). The cache is
bypassed (the original runs) when gradients are enabled (training) or when the call carries
extra keyword arguments (e.g. ``output_attentions``), since cached features carry neither.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Callable

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
IDEFICS_FAMILIES = ("idefics3",)
SUPPORTED_FAMILIES = QWEN_FAMILIES + IDEFICS_FAMILIES


def _update(digest, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes (any dtype, bfloat16 included) to ``digest``, without a copy
    where the tensor is already contiguous on the CPU."""
    digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel():
        digest.update(memoryview(flat.view(torch.uint8).cpu().numpy()))


class VisionFeatureCache:
    """LRU map from an image's content key to its feature tensor, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int, identity: str = "") -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.identity = identity
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def key(self, *tensors: torch.Tensor) -> str:
        digest = hashlib.sha256(self.identity.encode())  # sha256 is hardware-accelerated on most CPUs
        for tensor in tensors:
            _update(digest, tensor)
        return digest.hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return  # never fits: not cached
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.numel() * old.element_size()
        self._entries[key] = value
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.numel() * evicted.element_size()
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "bytes": self.nbytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}

    # ----- lookup with one batched computation of the misses --------------------------------
    def lookup(self, keys: list[str], compute: Callable[[list[int]], list[torch.Tensor]]) -> list[torch.Tensor]:
        """Features for ``keys`` in order; ``compute(indices)`` returns the features of the images at
        ``indices`` (one per distinct missing key) from one call of the model."""
        found: list[torch.Tensor | None] = [self.get(k) for k in keys]
        first: dict[str, int] = {}
        for i, (k, f) in enumerate(zip(keys, found)):
            if f is None and k not in first:
                first[k] = i
        self.misses += len(first)
        self.hits += len(keys) - len(first)
        if first:
            computed = compute(list(first.values()))
            fresh = {}
            for k, value in zip(first, computed):
                value = value.detach().clone()  # own storage: a view would pin the whole batch output
                fresh[k] = value
                self.put(k, value)
            found = [f if f is not None else fresh[k] for k, f in zip(keys, found)]
        return found  # type: ignore[return-value]


def _inner_model(model) -> Any:
    """The module whose ``get_image_features`` the forward pass calls (the base model)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "get_image_features"):
        return inner
    return model


def _plain_kwargs(kwargs: dict[str, Any]) -> bool:
    """True when the call carries nothing but ``return_dict`` (and other modalities' inputs)."""
    return all(k == "return_dict" or k.startswith("video_") or v is None for k, v in kwargs.items())


def _finish(features, kwargs: dict[str, Any]):
    out = BaseModelOutputWithPooling(pooler_output=features)
    return out if kwargs.get("return_dict", True) is not False else out.to_tuple()


def _qwen_wrapper(original, cache: VisionFeatureCache):
    def get_image_features(pixel_values, image_grid_thw=None, **kwargs):
        if image_grid_thw is None or torch.is_grad_enabled() or not _plain_kwargs(kwargs):
            return original(pixel_values, image_grid_thw, **kwargs)
        sizes = image_grid_thw.prod(-1).tolist()
        chunks = torch.split(pixel_values, sizes)
        keys = [cache.key(chunk, grid) for chunk, grid in zip(chunks, image_grid_thw)]

        def compute(indices: list[int]) -> list[torch.Tensor]:
            out = original(torch.cat([chunks[i] for i in indices]), image_grid_thw[indices], return_dict=True)
            return list(out.pooler_output)

        return _finish(tuple(cache.lookup(keys, compute)), kwargs)

    return get_image_features


def _idefics_wrapper(original, cache: VisionFeatureCache, inner):
    def get_image_features(pixel_values, pixel_attention_mask=None, **kwargs):
        if torch.is_grad_enabled() or not _plain_kwargs(kwargs) or pixel_values.dim() != 5:
            return original(pixel_values, pixel_attention_mask, **kwargs)
        batch, n_images = pixel_values.shape[:2]
        flat = pixel_values.to(dtype=inner.dtype).reshape(batch * n_images, *pixel_values.shape[2:])
        masks = (None if pixel_attention_mask is None
                 else pixel_attention_mask.reshape(batch * n_images, *pixel_attention_mask.shape[2:]))
        per_image = flat.shape[1:].numel()
        real = ((flat == 0.0).sum(dim=(-1, -2, -3)) != per_image).tolist()  # all-zero images are padding
        positions = [i for i, r in enumerate(real) if r]
        keys = [cache.key(flat[i]) if masks is None else cache.key(flat[i], masks[i]) for i in positions]

        def compute(indices: list[int]) -> list[torch.Tensor]:
            chosen = [positions[j] for j in indices]
            pixels = flat[chosen].unsqueeze(0)
            mask = None if masks is None else masks[chosen].unsqueeze(0)
            features = original(pixels, mask, return_dict=True).pooler_output[0]
            return list(features.reshape(len(chosen), -1, features.shape[-1]).unbind(0))

        found = dict(zip(positions, cache.lookup(keys, compute)))
        rows = []
        for b in range(batch):
            row = [found[i] for i in range(b * n_images, (b + 1) * n_images) if i in found]
            if row:
                rows.append(torch.cat(row, dim=0))
            else:
                hidden = inner.config.text_config.hidden_size
                rows.append(flat.new_zeros((0, hidden)))
        return _finish(rows, kwargs)

    return get_image_features


def install_vision_cache(model, max_bytes: int, identity: str = "") -> VisionFeatureCache | None:
    """Wrap ``model``'s image-feature method with a cache of ``max_bytes``; ``None`` where the family is
    not supported (the model is then left as it is). Installing twice replaces the earlier cache."""
    family = getattr(model.config, "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        return None
    inner = _inner_model(model)
    uninstall_vision_cache(model)
    original = inner.get_image_features
    cache = VisionFeatureCache(max_bytes, identity=f"{family}|{identity}")
    if family in QWEN_FAMILIES:
        wrapper = _qwen_wrapper(original, cache)
    else:
        wrapper = _idefics_wrapper(original, cache, inner)
    wrapper.vision_cache = cache  # type: ignore[attr-defined]
    wrapper.original = original  # type: ignore[attr-defined]
    inner.get_image_features = wrapper
    return cache


def uninstall_vision_cache(model) -> None:
    """Restore the class's ``get_image_features`` on ``model``'s inner module (no-op if not wrapped)."""
    inner = _inner_model(model)
    if "get_image_features" in vars(inner) and hasattr(vars(inner)["get_image_features"], "vision_cache"):
        del inner.get_image_features
