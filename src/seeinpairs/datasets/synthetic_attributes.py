"""Generated chest-radiograph-like images with controlled, recorded attributes.

:mod:`.synthetic` draws every attribute at random per patient. Set-difference
benchmarks need images whose attributes are chosen: a lesion present or absent,
its side and size, the acquisition site, the patient's age and sex. This module
renders such images with the same anatomy model (:func:`~.synthetic.draw_anatomy`)
and renderer, and returns each image's ground truth.

Sides follow the radiographic convention: the patient's right lung is on the
image's left (x < 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .synthetic import SyntheticConfig, draw_anatomy, render

SIDES = {"right": -1, "left": 1}


@dataclass(frozen=True)
class ImageSpec:
    """What one image shows. ``lesion_side``/``lesion_radius`` apply only with ``lesion``;
    ``None`` draws them (side uniformly, radius from the config's ``lesion_radius`` range)."""

    age: float
    sex: str
    site: str
    lesion: bool = False
    lesion_side: str | None = None
    lesion_radius: float | None = None


def render_spec(rng: np.random.Generator, spec: ImageSpec, config: SyntheticConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """One image (float 0..1) of a new patient with ``spec``'s attributes, and its ground truth."""
    if spec.site not in config.sites:
        raise ValueError(f"site '{spec.site}' is not among the sites {list(config.sites)}")
    anatomy = draw_anatomy(rng, config, spec.sex, spec.age)
    lesion = None
    truth: dict[str, Any] = {"age": float(spec.age), "sex": spec.sex, "site": spec.site, "lesion": bool(spec.lesion),
                             "lesion_side": None, "lesion_radius": None}
    if spec.lesion:
        side = spec.lesion_side or ("right" if rng.random() < 0.5 else "left")
        if side not in SIDES:
            raise ValueError(f"lesion_side '{side}' is not one of {list(SIDES)}")
        radius = spec.lesion_radius if spec.lesion_radius is not None else float(rng.uniform(*config.lesion_radius))
        offset = float(np.clip(0.05 * rng.standard_normal(), -0.08, 0.08))
        lesion = {"x": 0.5 + SIDES[side] * anatomy["lung_dx"] + offset,
                  "y": anatomy["lung_cy"] + 0.12 * rng.standard_normal(), "r": radius}
        truth.update(lesion_side=side, lesion_radius=float(radius))
    image, _ = render(rng, anatomy, config.sites[spec.site], config, lesion)
    return image, truth


def write_images(out_dir: str | Path, specs: Sequence[ImageSpec], config: SyntheticConfig | None = None,
                 seed: int = 0, prefix: str = "img") -> list[dict[str, Any]]:
    """Render ``specs`` to ``out_dir/<prefix>_<i>.png``; per image its ``path``, ``image_id`` and ground truth."""
    config = config or SyntheticConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i, spec in enumerate(specs):
        image, truth = render_spec(rng, spec, config)
        path = out / f"{prefix}_{i:04d}.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
        records.append({"image_id": f"{prefix}_{i:04d}", "path": str(path), **truth})
    return records


def random_spec(rng: np.random.Generator, config: SyntheticConfig, lesion_rate: float = 0.5,
                age_range: tuple[float, float] = (20, 85), sites: Sequence[str] | None = None,
                radius_range: tuple[float, float] | None = None, **fixed: Any) -> ImageSpec:
    """An :class:`ImageSpec` with every attribute not in ``fixed`` drawn at random."""
    names = list(sites or config.sites)
    values: dict[str, Any] = {
        "age": float(rng.integers(int(age_range[0]), int(age_range[1]) + 1)),
        "sex": "F" if rng.random() < 0.5 else "M",
        "site": names[int(rng.integers(len(names)))],
        "lesion": bool(rng.random() < lesion_rate),
    }
    values.update({k: v for k, v in fixed.items() if k in ("age", "sex", "site", "lesion")})
    if values["lesion"]:
        values["lesion_side"] = fixed.get("lesion_side") or ("right" if rng.random() < 0.5 else "left")
        low, high = radius_range or config.lesion_radius
        values["lesion_radius"] = fixed.get("lesion_radius") or float(rng.uniform(low, high))
    return ImageSpec(**values)


def spec_dict(spec: ImageSpec) -> dict[str, Any]:
    return asdict(spec)
