"""Acquisition augmentation: a random acquisition transform per training example.

A model that has seen many acquisitions during training should depend less on
any one of them. Each augmented example draws an
:class:`~seeinpairs.siteshift.acquisition.AcquisitionTransform` from ranges of
the same parameter families as the simulated sites (gain, offset, gamma, blur,
noise, colour cast), either

* **shared**: one draw for the whole example, applied to the query *and* its
  references, so the references show the query's acquisition (as same-site
  references do at a new site) and stay informative about it; or
* **independent**: a separate draw for every image, so references and query
  differ in acquisition (as references from other sites do).

Shared means the same transform *parameters*; the noise pixels are drawn
afresh for every image (images differ in size, and copying one noise field
onto several images would be an artefact no scanner makes).

Draws come from a random stream keyed by (seed, epoch, case id), like the
references of :mod:`seeinpairs.training.data`, so a run and its resumption see
the same augmented images, whatever the batch order. The query's transform is
drawn first, so in shared mode it does not depend on how many references an
example has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..cases import stable_digest
from ..errors import ConfigError
from .acquisition import AcquisitionTransform

__all__ = ["AUGMENT_STREAM", "AcquisitionAugment", "augment_rng"]

#: the tag that separates the augmentation stream from the reference-selection stream of the same example
AUGMENT_STREAM = 0xA06


def augment_rng(seed: int, epoch: int, case_id: str) -> np.random.Generator:
    """The augmentation stream of one training example: (seed, epoch, case id) only.

    A stream of its own (not the one that picks references) keeps the references of an
    augmented run identical to those of the same run without augmentation.
    """
    return np.random.default_rng([seed, epoch, stable_digest(case_id), AUGMENT_STREAM])


class AcquisitionAugment(BaseModel):
    """Ranges from which each example's acquisition transform is drawn (``augment:`` in a training config).

    * ``shared``: one draw for query and references (True) or one per image (False).
    * ``probability``: the share of examples that are augmented; the rest are shown as stored.
    * ``gain``, ``offset``, ``blur``, ``noise``: uniform in [low, high]; ``gamma`` and ``color``
      (per-channel gains, colour images only) log-uniform, so brightening and darkening are
      equally likely. Units as in :class:`~seeinpairs.siteshift.acquisition.AcquisitionTransform`.

    The defaults are generic ranges that happen to cover every site of the ``default4``
    protocol, the held-out harsh one included: a study should say so, and can compare with
    ranges that span the training sites only (:meth:`spanning`), for which the held-out site
    is an extrapolation.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["acquisition"] = "acquisition"
    shared: bool = True
    probability: float = Field(1.0, ge=0, le=1)
    gain: tuple[float, float] = (0.7, 1.25)
    offset: tuple[float, float] = (-0.1, 0.15)
    gamma: tuple[float, float] = (0.65, 1.4)
    blur: tuple[float, float] = (0.0, 0.02)
    noise: tuple[float, float] = (0.0, 0.06)
    color: tuple[float, float] = (0.88, 1.12)

    @model_validator(mode="after")
    def _ranges(self) -> AcquisitionAugment:
        for name in ("gain", "offset", "gamma", "blur", "noise", "color"):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high)) or low > high:
                raise ValueError(f"{name}: expected [low, high] with low <= high (got [{low}, {high}])")
            if name in ("gain", "gamma", "color") and low <= 0:
                raise ValueError(f"{name}: the range must be above 0 (got [{low}, {high}])")
            if name in ("blur", "noise") and low < 0:
                raise ValueError(f"{name}: the range must not be negative (got [{low}, {high}])")
        return self

    @classmethod
    def spanning(cls, transforms: Iterable[AcquisitionTransform], **settings) -> AcquisitionAugment:
        """Ranges from the smallest to the largest value of each parameter among ``transforms``
        (e.g. the training sites of a protocol, without the held-out one); ``settings`` set the
        other fields (``shared``, ``probability``, or a range to override)."""
        transforms = list(transforms)
        if not transforms:
            raise ConfigError("AcquisitionAugment.spanning: no transforms given")

        def bounds(values: Iterable[float]) -> tuple[float, float]:
            values = [float(v) for v in values]
            return min(values), max(values)

        ranges = {name: bounds(getattr(t, name) for t in transforms)
                  for name in ("gain", "offset", "gamma", "blur", "noise")}
        ranges["color"] = bounds(c for t in transforms for c in t.color)
        return cls(**{**ranges, **settings})

    def sample(self, rng: np.random.Generator) -> AcquisitionTransform:
        """One transform; always the same number of draws, so later draws do not depend on the values."""
        u = rng.random(8)

        def uniform(bounds: tuple[float, float], x: float) -> float:
            return float(bounds[0] + (bounds[1] - bounds[0]) * x)

        def log_uniform(bounds: tuple[float, float], x: float) -> float:
            return float(np.exp(uniform((np.log(bounds[0]), np.log(bounds[1])), x)))

        return AcquisitionTransform(gain=uniform(self.gain, u[0]), offset=uniform(self.offset, u[1]),
                                    gamma=log_uniform(self.gamma, u[2]), blur=uniform(self.blur, u[3]),
                                    noise=uniform(self.noise, u[4]),
                                    color=tuple(log_uniform(self.color, x) for x in u[5:8]))  # type: ignore[arg-type]

    def transforms(self, rng: np.random.Generator, n_images: int) -> list[AcquisitionTransform | None]:
        """The transforms of an example's images, query last as in a request (None: shown unchanged).

        The draw order (whether to augment, the query's transform, then the references') is fixed.
        """
        if n_images < 1:
            return []
        augmented = bool(rng.random() < self.probability)
        if not augmented:
            return [None] * n_images
        query = self.sample(rng)
        if self.shared:
            return [query] * n_images
        references = [self.sample(rng) for _ in range(n_images - 1)]
        return [*references, query]

    def apply(self, images: Sequence[Image.Image], rng: np.random.Generator) -> list[Image.Image]:
        """The images of one example (references first, query last), augmented; inputs are not modified."""
        transforms = self.transforms(rng, len(images))
        # noise for the query first, then references in order: the query's pixels do not depend on k
        order = [len(images) - 1, *range(len(images) - 1)]
        out: list[Image.Image | None] = [None] * len(images)
        for i in order:
            t = transforms[i]
            out[i] = images[i] if t is None or t.is_identity else t.apply(images[i], rng)  # type: ignore[assignment]
        return out  # type: ignore[return-value]
