"""Attribution maps for every image of a prompt toward one answer option.

Gradient methods differentiate the option's probability *within the closed
set* (log-softmax over the options' summed log-likelihoods) with respect to
the processor's pixel values, through the vision tower: what pushes the answer
toward this option rather than the others. ``grad_x_input`` is one backward
pass; ``integrated_gradients`` averages gradients along the straight path
from a black image (processed like the real ones) and satisfies
completeness up to its Riemann error.

Attention methods read the attention from the answer position (the last
prompt token, which predicts the first answer token) to each image's tokens:
``attention`` averages over heads and layers; ``rollout`` multiplies the
head-averaged, residual-mixed attention matrices through the layers.

Every map is returned on the original image grid (height, width) of the
image it belongs to, in prompt order (references first, then the query).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..backends.base import option_probabilities
from ..backends.encoding import (
    answer_log_probs,
    answer_token_ids,
    append_answers,
    chat_prompt,
    encode_prompts,
)
from ..prompts import Request
from .layouts import (
    ExplainError,
    ImageLayout,
    ImageSlot,
    layout_for,
    place_on_original,
    to_original,
)

GRADIENT_METHODS = ("grad_x_input", "integrated_gradients")
ATTENTION_METHODS = ("attention", "rollout")


@dataclass
class Explanation:
    """Maps for every image of one request toward ``option``.

    ``maps[method][i]`` is a float32 array with image ``i``'s original (height, width).
    ``image_mass[method][i]``: the share of the method's total absolute attribution that
    falls on image ``i``, measured in model space (before resizing), so shares sum to 1.
    """

    option: str
    options: list[str]
    probabilities: list[float]
    image_ids: list[str]
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    image_mass: dict[str, list[float]] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def reference_share(self, method: str) -> float:
        """Share of the attribution on the references (all images but the last, the query)."""
        return float(sum(self.image_mass[method][:-1]))


def _to_device(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@contextmanager
def _eager_attention(model) -> Iterator[None]:
    """Attention weights are only returned by the eager implementation; switch for the call."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(previous)


class RequestExplainer:
    """Computes attribution maps for requests on one HF model (float32 recommended)."""

    def __init__(self, model, processor, ig_steps: int = 16) -> None:
        if ig_steps < 1:
            raise ExplainError(f"ig_steps must be >= 1, got {ig_steps}")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.layout: ImageLayout = layout_for(model, processor)
        self.ig_steps = ig_steps
        self.device = next(model.parameters()).device

    @classmethod
    def from_backend(cls, backend, ig_steps: int = 16) -> RequestExplainer:
        if getattr(backend, "vision_cache", None) is not None:
            raise ExplainError("explanations need the vision tower's gradients: use a backend without vision_cache_mb")
        return cls(backend.model, backend.processor, ig_steps)

    # ----- scoring with gradients ---------------------------------------------------------------
    def _encode(self, request: Request) -> tuple[dict[str, Any], list[list[int]]]:
        if not request.images:
            raise ExplainError("the request has no images to explain")
        prompt = chat_prompt(self.processor, request)
        encoded = encode_prompts(self.processor, [prompt], [request.images], "right")
        option_ids = [answer_token_ids(self.tokenizer, prompt, o) for o in request.options]
        return encoded, option_ids

    def _option_log_probs(self, encoded: dict[str, Any], option_ids: list[list[int]],
                          pixel_values: torch.Tensor) -> torch.Tensor:
        """Log-probability of each option within the closed set (differentiable in ``pixel_values``)."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        if all(len(ids) == 1 for ids in option_ids):
            inputs = _to_device({**encoded, "pixel_values": pixel_values}, self.device)
            inputs["pixel_values"] = pixel_values
            logits = self.model(**inputs, use_cache=False).logits[0, -1].float()
            summed = torch.log_softmax(logits, dim=-1)[[ids[0] for ids in option_ids]]
        else:
            values = []
            for ids in option_ids:
                batch = append_answers(encoded, [ids], pad)
                inputs = _to_device(batch.inputs, self.device)
                inputs["pixel_values"] = pixel_values
                batch.inputs = inputs
                values.append(answer_log_probs(self.model, batch)[0].sum())
            summed = torch.stack(values)
        return torch.log_softmax(summed, dim=0)

    def _target(self, request: Request, option: str | None, log_probs: torch.Tensor) -> int:
        if option is None:
            return int(torch.argmax(log_probs))
        if option not in request.options:
            raise ExplainError(f"option '{option}' is not one of the request's options ({', '.join(request.options)})")
        return request.options.index(option)

    def _gradient(self, encoded, option_ids, pixels: torch.Tensor, target: int) -> torch.Tensor:
        pixels = pixels.detach().clone().requires_grad_(True)
        log_probs = self._option_log_probs(encoded, option_ids, pixels)
        (grad,) = torch.autograd.grad(log_probs[target], pixels)
        return grad

    # ----- the public call -----------------------------------------------------------------------
    def explain(self, request: Request, option: str | None = None,
                methods: Sequence[str] = ("grad_x_input", "attention")) -> Explanation:
        """Maps of ``methods`` for every image of ``request`` toward ``option`` (default: the predicted one)."""
        unknown = [m for m in methods if m not in GRADIENT_METHODS + ATTENTION_METHODS]
        if unknown:
            raise ExplainError(f"unknown attribution method(s) {', '.join(unknown)} "
                               f"(known: {', '.join(GRADIENT_METHODS + ATTENTION_METHODS)})")
        was_training = self.model.training
        self.model.eval()
        try:
            encoded, option_ids = self._encode(request)
            pixels = encoded["pixel_values"].to(self.device)

            with torch.no_grad():
                log_probs = self._option_log_probs(encoded, option_ids, pixels)
            target = self._target(request, option, log_probs)
            sizes = [(image.height, image.width) for image in request.images]
            slots = self.layout.slots(encoded, sizes)
            if len(slots) != len(request.images):
                raise ExplainError(f"the model inputs hold {len(slots)} images but the request has {len(request.images)}")
            explanation = Explanation(
                option=request.options[target], options=list(request.options),
                probabilities=option_probabilities(log_probs.tolist()).tolist(),
                image_ids=list(request.image_ids) or [f"image_{i}" for i in range(len(request.images))])
            for method in methods:
                if method in GRADIENT_METHODS:
                    per_element = self._gradient_attribution(method, request, encoded, option_ids, pixels, target)
                    model_maps = self.layout.pixel_maps(encoded, per_element, sizes)
                    masses = [float(np.abs(s.crop(m)).sum()) for m, s in zip(model_maps, slots)]
                else:
                    model_maps, masses = self._attention_maps(method, encoded, pixels, slots)
                total = sum(masses)
                explanation.image_mass[method] = [m / total if total > 0 else float("nan") for m in masses]
                explanation.maps[method] = [to_original(m, s, size) if method in GRADIENT_METHODS
                                            else place_on_original(m, s, size)
                                            for m, s, size in zip(model_maps, slots, sizes)]
            return explanation
        finally:
            self.model.train(was_training)

    def _black(self, request: Request) -> torch.Tensor:
        """Pixel values of all-black images of the request's sizes: the integrated-gradients baseline."""
        black = [Image.new(image.mode, image.size) for image in request.images]
        return encode_prompts(self.processor, [chat_prompt(self.processor, request)], [black], "right")["pixel_values"]

    def _gradient_attribution(self, method: str, request: Request, encoded, option_ids, pixels: torch.Tensor,
                              target: int) -> torch.Tensor:
        if method == "grad_x_input":
            return self._gradient(encoded, option_ids, pixels, target) * pixels
        baseline = self._black(request).to(pixels)
        total = torch.zeros_like(pixels)
        for step in range(self.ig_steps):
            alpha = (step + 0.5) / self.ig_steps
            total += self._gradient(encoded, option_ids, baseline + alpha * (pixels - baseline), target)
        return (pixels - baseline) * total / self.ig_steps

    @torch.no_grad()
    def _attention_maps(self, method: str, encoded, pixels: torch.Tensor,
                        slots: list[ImageSlot]) -> tuple[list[np.ndarray], list[float]]:
        """Per image, the answer position's attention on its tokens (as a map) and its total."""
        inputs = _to_device(encoded, self.device)
        inputs["pixel_values"] = pixels
        with _eager_attention(self.model):
            attentions = self.model(**inputs, use_cache=False, output_attentions=True).attentions
        if not attentions or any(a is None for a in attentions):
            raise ExplainError("the model returned no attention weights")
        answer = int(encoded["attention_mask"][0].sum()) - 1
        layers = [a[0].float().mean(0) for a in attentions]  # (seq, seq) per layer, heads averaged
        if method == "attention":
            row = torch.stack([layer[answer] for layer in layers]).mean(0)
        else:  # rollout: residual-mixed attention, multiplied through the layers
            size = layers[0].shape[0]
            eye = torch.eye(size, device=layers[0].device)
            rollout = eye
            for layer in layers:
                mixed = 0.5 * layer + 0.5 * eye
                rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
            row = rollout[answer]
        row = row.cpu().numpy()
        maps, masses = [], []
        for slot in slots:
            upsampled, mass = slot.token_map(row)  # token grid onto the model's pixel grid
            maps.append(slot.crop(upsampled))
            masses.append(mass)
        return maps, masses
