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

Each family is registered explicitly (:data:`VISION_FAMILIES`), by how its pixels split into images:

* ``grid`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4V): ``pixel_values`` is (total patches, patch dim)
  with ``image_grid_thw`` (images, 3); image *i* owns ``t*h*w`` consecutive patch rows and its
  features are ``pooler_output[i]`` (Qwen3-VL also ``deepstack_features[layer][i]``, cached with
  them). The vision tower attends within each image only, so one image's features do not depend
  on the other images in the call.
* ``rows`` (Gemma 3, LLaVA, InternVL): ``pixel_values`` is (images or tiles, C, H, W), each row
  encoded on its own; row *i*'s features are ``pooler_output[i]``.
* ``idefics`` (Idefics3 / SmolVLM, SmolVLM2): ``pixel_values`` is (batch, images, C, H, W), all-zero images are
  padding; an image's key also covers its ``pixel_attention_mask``. ``pooler_output[b]`` is the
  concatenation of row *b*'s real images' features.

Each registered family is tested equal to the uncached path; the others are listed with the
reason in :data:`UNSUPPORTED_FAMILIES` and left unwrapped (``install_vision_cache`` returns
``None``). The cache is bypassed (the original runs) when gradients are enabled (training) or when the call carries
extra keyword arguments (e.g. ``output_attentions``), since cached features carry neither.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .modeling import not_registered



@dataclass(frozen=True)
class VisionFamily:
    """How one family's ``get_image_features`` input splits into images (see the module docstring).
    ``deepstack``: the output also carries per-layer ``deepstack_features``; ``list_output``: the
    original returns its per-image features as a list rather than one tensor."""

    kind: str
    deepstack: bool = False
    list_output: bool = False


#: model type -> how its image features are cached; each one is tested equal to the uncached path
#: (tests/backends/test_vision_cache.py, parametrised over the tiny families)
VISION_FAMILIES: dict[str, VisionFamily] = {
    "qwen2_vl": VisionFamily("grid"),
    "qwen2_5_vl": VisionFamily("grid"),
    "glm4v": VisionFamily("grid"),
    "qwen3_vl": VisionFamily("grid", deepstack=True),
    "gemma3": VisionFamily("rows"),
    "llava": VisionFamily("rows", list_output=True),
    "internvl": VisionFamily("rows"),
    "idefics3": VisionFamily("idefics"),
    "smolvlm": VisionFamily("idefics"),
}

#: model type -> why its image features are not cached (it runs uncached)
UNSUPPORTED_FAMILIES: dict[str, str] = {
    "llava_onevision": "an image's features depend on how many images share its prompt (anyres patches when "
                       "alone, base features when several), not on its pixels only",
    "mllama": "the vision model runs inside the forward pass (no get_image_features to wrap) and its output "
              "depends on the tiles' aspect ratios",
}


def vision_cache_reason(model) -> str | None:
    """Why ``model`` gets no vision cache (one line), or None when its family is registered."""
    family = getattr(model.config, "model_type", None)
    return None if family in VISION_FAMILIES else not_registered("vision-cache", family, UNSUPPORTED_FAMILIES)


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
    """True when the call carries nothing but ``return_dict`` and ``use_cache`` (which the forward pass hands on
    and the vision tower ignores), and other modalities' inputs."""
    return all(k in _PASSED_ON or k.startswith("video_") or v is None for k, v in kwargs.items())


_PASSED_ON = ("return_dict", "use_cache")


def _finish(features, kwargs: dict[str, Any], deepstack: list | None = None):
    if deepstack is None:
        out = BaseModelOutputWithPooling(pooler_output=features)
    else:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        out = BaseModelOutputWithDeepstackFeatures(pooler_output=features, deepstack_features=deepstack)
    return out if kwargs.get("return_dict", True) is not False else out.to_tuple()


def _grid_wrapper(original, cache: VisionFeatureCache, family: VisionFamily):
    """Images as runs of patch rows sized by ``image_grid_thw``; with ``deepstack``, an entry stacks an image's
    features and its deepstack features (same shape) along a new first dimension."""
    def get_image_features(pixel_values, image_grid_thw=None, **kwargs):
        if image_grid_thw is None or torch.is_grad_enabled() or not _plain_kwargs(kwargs):
            return original(pixel_values, image_grid_thw, **kwargs)
        sizes = image_grid_thw.prod(-1).tolist()
        chunks = torch.split(pixel_values, sizes)
        keys = [cache.key(chunk, grid) for chunk, grid in zip(chunks, image_grid_thw)]

        def compute(indices: list[int]) -> list[torch.Tensor]:
            out = original(torch.cat([chunks[i] for i in indices]), image_grid_thw[indices], return_dict=True)
            if not family.deepstack:
                return list(out.pooler_output)
            return [torch.stack([pooled, *(layer[i] for layer in out.deepstack_features)])
                    for i, pooled in enumerate(out.pooler_output)]

        found = cache.lookup(keys, compute)
        if not family.deepstack:
            return _finish(tuple(found), kwargs)
        layers = [tuple(entry[1 + layer] for entry in found) for layer in range(found[0].shape[0] - 1)]
        return _finish(tuple(entry[0] for entry in found), kwargs, deepstack=layers)

    return get_image_features


def _rows_wrapper(original, cache: VisionFeatureCache, family: VisionFamily):
    """One image (or tile) per row of ``pixel_values``; the call's other arguments (feature layer, selection
    strategy) come from the model's config and go into every key."""
    def get_image_features(pixel_values, *args, **kwargs):
        if torch.is_grad_enabled() or args or not _plain_kwargs(_without_settings(kwargs)):
            return original(pixel_values, *args, **kwargs)
        settings = {k: v for k, v in kwargs.items() if k not in _PASSED_ON}
        tag = torch.tensor(list(repr(sorted(settings.items())).encode()), dtype=torch.uint8)
        keys = [cache.key(row, tag) for row in pixel_values]

        def compute(indices: list[int]) -> list[torch.Tensor]:
            return list(original(pixel_values[indices], **settings, return_dict=True).pooler_output)

        found = cache.lookup(keys, compute)
        return _finish(list(found) if family.list_output else torch.stack(found), kwargs)

    return get_image_features


def _without_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` less the config-derived settings the rows families pass (they are part of the key)."""
    return {k: v for k, v in kwargs.items() if k not in ("vision_feature_layer", "vision_feature_select_strategy")}


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
    model_type = getattr(model.config, "model_type", None)
    family = VISION_FAMILIES.get(model_type)
    if family is None:
        return None
    inner = _inner_model(model)
    uninstall_vision_cache(model)
    original = inner.get_image_features
    cache = VisionFeatureCache(max_bytes, identity=f"{model_type}|{identity}")
    if family.kind == "grid":
        wrapper = _grid_wrapper(original, cache, family)
    elif family.kind == "rows":
        wrapper = _rows_wrapper(original, cache, family)
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
