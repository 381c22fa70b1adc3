"""Longitudinal, two-view synthetic radiographs: ground truth for multi-image questions.

Each patient has several studies (time points) and each study two views: a
frontal view drawn like :mod:`.synthetic` and a lateral-like view of the same
anatomy (the lung fields overlap in the middle, the lesion sits at a
patient-specific depth). A patient follows one lesion trajectory across studies:
``absent``, ``appears``, ``grows``, ``shrinks``, ``resolves`` or ``stable``;
the lesion keeps its place and its size comes from discrete levels, so the
change between two studies (new, progressed, stable, improved, resolved) and a
size grade are known exactly. The table's ``extra`` holds ``study``, ``days``,
``view``, ``lesion_size`` (radius, 0 when absent), ``grade`` and ``trajectory``,
which :mod:`seeinpairs.mim.generate` turns into questions.

The drawing primitives (anatomy, rendering, site profiles) are those of
:mod:`.synthetic`, so both data sets look alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_write_text
from ..cases import Case, CaseTable
from .synthetic import SiteProfile, SyntheticConfig, draw_anatomy, render

TRAJECTORIES = ("absent", "appears", "grows", "shrinks", "resolves", "stable")
#: size grades by lesion level (level 0: no lesion)
GRADES = ("none", "small", "medium", "large")


@dataclass
class SeriesConfig:
    """Every parameter of the longitudinal generator."""

    n_patients: int = 200
    studies: int = 3
    image_size: int = 64
    #: the lesion is more conspicuous than in the single-image benchmark: each image reaches a tiny
    #: model as a handful of visual tokens, and several must be compared
    lesion_contrast: float = 0.45
    #: lesion radius (fraction of the image) for size levels 1, 2, 3 (small, medium, large)
    level_radius: tuple[float, float, float] = (0.06, 0.10, 0.15)
    #: relative jitter of the radius within a level
    radius_jitter: float = 0.05
    trajectory_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in TRAJECTORIES})
    site: SiteProfile = field(default_factory=lambda: SiteProfile(1.0, 0.0, 0.03, 0.0, 1.0))
    split_fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
    days_between_studies: int = 90
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.site, dict):
            self.site = SiteProfile(**self.site)
        unknown = sorted(set(self.trajectory_weights) - set(TRAJECTORIES))
        if unknown:
            raise ValueError(f"unknown trajectories {unknown} (known: {', '.join(TRAJECTORIES)})")
        if self.studies < 2 or self.n_patients < 1:
            raise ValueError("studies must be >= 2 and n_patients >= 1")


def trajectory_levels(kind: str, studies: int, rng: np.random.Generator) -> list[int]:
    """Size levels (0 = absent, 1-3) of one patient's lesion over ``studies`` time points."""
    if kind == "absent":
        return [0] * studies
    if kind == "stable":
        return [int(rng.integers(1, 4))] * studies
    if kind in ("appears", "resolves"):
        onset = int(rng.integers(1, studies))  # first study with (appears) / without (resolves) the lesion
        level = int(rng.integers(1, 4))
        levels = [0] * onset + [level] * (studies - onset)
        return levels if kind == "appears" else levels[::-1]
    # grows / shrinks: non-decreasing levels from 1 to 3 with at least one step
    while True:
        levels = sorted(int(v) for v in rng.integers(1, 4, size=studies))
        if levels[0] != levels[-1]:
            return levels if kind == "grows" else levels[::-1]


def _lateral(anatomy: dict) -> dict:
    """The same patient seen from the side: lung fields overlapping in the middle, a wider heart."""
    return {**anatomy, "lung_dx": 0.04, "lung_rx": anatomy["lung_rx"] * 1.7,
            "heart_rx": anatomy["heart_rx"] * 1.15, "texture": anatomy["texture"][:, ::-1]}


def generate_series(out_dir: str | Path, config: SeriesConfig | None = None) -> CaseTable:
    """Write images and ``manifest.csv`` under ``out_dir``; return the table (absolute image paths)."""
    config = config or SeriesConfig()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    draw = SyntheticConfig(image_size=config.image_size, lesion_contrast=config.lesion_contrast, seed=config.seed)
    kinds = list(config.trajectory_weights)
    weights = np.array([config.trajectory_weights[k] for k in kinds], dtype=float)
    weights /= weights.sum()
    train_f, val_f, _ = config.split_fractions
    cases: list[Case] = []
    for p in range(config.n_patients):
        patient = f"S{p:04d}"
        sex = "F" if rng.random() < 0.5 else "M"
        age = float(rng.integers(20, 85))
        u = rng.random()
        split = "train" if u < train_f else ("val" if u < train_f + val_f else "test")
        anatomy = draw_anatomy(rng, draw, sex, age)
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        levels = trajectory_levels(kind, config.studies, rng)
        side = rng.choice([-1, 1])
        place = {"x": 0.5 + side * anatomy["lung_dx"] + 0.04 * rng.standard_normal(),
                 "y": anatomy["lung_cy"] + 0.08 * rng.standard_normal(),
                 "depth": 0.5 + 0.1 * rng.standard_normal()}
        for study, level in enumerate(levels):
            radius = 0.0
            if level:
                radius = config.level_radius[level - 1] * (1 + config.radius_jitter * rng.uniform(-1, 1))
            for view, view_anatomy, x in (("frontal", anatomy, place["x"]), ("lateral", _lateral(anatomy), place["depth"])):
                lesion = {"x": x, "y": place["y"], "r": radius} if level else None
                image, _ = render(rng, view_anatomy, config.site, draw, lesion)
                case_id = f"{patient}_s{study}_{view}"
                path = out / "images" / f"{case_id}.png"
                Image.fromarray((image * 255).astype(np.uint8)).save(path)
                cases.append(Case(case_id=case_id, images=(str(path),), label="abnormal" if level else "normal",
                                  patient_id=patient, age=age, sex=sex, site="site_a", split=split,
                                  extra={"study": study, "days": study * config.days_between_studies, "view": view,
                                         "lesion_size": round(radius, 4), "grade": GRADES[level],
                                         "trajectory": kind}))
    relative = [Case(**{**c.to_record(), "images": (str(Path(c.image).relative_to(out)),)}) for c in cases]
    atomic_write_text(out / "generator.json", json.dumps(asdict(config), indent=2))
    # the manifest last (atomically): its existence is what says the data set is complete
    CaseTable(relative, str(out / "manifest.csv")).save(out / "manifest.csv")
    return CaseTable(cases, str(out / "manifest.csv"))
