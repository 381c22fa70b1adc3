"""A small generated chest-radiograph-like data set with known ground truth.

Each patient has an anatomy (two lung fields whose size, shape and texture vary
with the patient, age and sex); each acquisition site has its own intensity
gain/offset, noise and blur. An abnormal image carries a faint, localized
opacity whose contrast is small next to the between-patient and between-site
variation, and its mask is saved beside it. Nothing here decides whether
references help: that is what experiments measure.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..atomic import atomic_write_text
from ..cases import Case, CaseTable
from ..tasks import Task


@dataclass
class SiteProfile:
    """An acquisition site: intensity calibration (gain, offset), contrast (gamma), noise, blur."""

    gain: float = 1.0
    offset: float = 0.0
    noise: float = 0.03
    blur: float = 0.0
    gamma: float = 1.0


@dataclass
class SyntheticConfig:
    """Every parameter of the generator in one place."""

    n_patients: int = 120
    images_per_patient: tuple[int, int] = (1, 2)
    image_size: int = 64
    abnormal_fraction: float = 0.5
    lesion_contrast: float = 0.18
    lesion_radius: tuple[float, float] = (0.07, 0.12)
    anatomy_variation: float = 0.12
    texture_strength: float = 0.08
    sites: dict[str, SiteProfile] = field(default_factory=lambda: {
        "site_a": SiteProfile(1.0, 0.0, 0.03, 0.0, 1.0),
        "site_b": SiteProfile(0.85, 0.08, 0.05, 0.6, 0.8),
        "site_c": SiteProfile(1.1, -0.05, 0.04, 0.3, 1.2),
    })
    #: sites whose patients all go to the test split (an unseen site, for acquisition shift)
    unseen_sites: tuple[str, ...] = ()
    split_fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
    seed: int = 0

    def __post_init__(self) -> None:
        self.sites = {name: SiteProfile(**p) if isinstance(p, dict) else p for name, p in self.sites.items()}
        unknown = [s for s in self.unseen_sites if s not in self.sites]
        if unknown:
            raise ValueError(f"unseen_sites {unknown} are not among the sites {list(self.sites)}")
        if self.n_patients < 1 or not 0 <= self.abnormal_fraction <= 1:
            raise ValueError("n_patients must be >= 1 and abnormal_fraction within 0..1")


SYNTHETIC_TASK = Task(
    name="synthetic_opacity",
    question="Is there an abnormal opacity in the query image?",
    classes=["normal", "abnormal"],
    healthy_class="normal",
    descriptions={"normal": "clear lung fields", "abnormal": "a faint focal opacity"},
    modality="chest x-ray",
)


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = rng.standard_normal((max(2, size // scale), max(2, size // scale)))
    image = Image.fromarray(((coarse - coarse.min()) / (np.ptp(coarse) + 1e-9) * 255).astype(np.uint8))
    return np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float64) / 255.0 - 0.5


def draw_anatomy(rng: np.random.Generator, config: SyntheticConfig, sex: str, age: float) -> dict:
    """A patient's anatomy (lung fields, ribs, heart, texture), varying with sex and age."""
    v = config.anatomy_variation
    return {
        "lung_dx": 0.2 + v * 0.2 * rng.standard_normal() + (0.01 if sex == "M" else -0.01),
        "lung_rx": 0.14 * (1 + v * rng.standard_normal()) * (1.05 if sex == "M" else 0.95),
        "lung_ry": 0.28 * (1 + v * rng.standard_normal()),
        "lung_cy": 0.48 + 0.03 * rng.standard_normal(),
        "lung_darkness": 0.2 + 0.05 * rng.standard_normal() - 0.001 * (age - 50),
        "texture": _smooth_noise(rng, config.image_size, 8),
        "rib_spacing": 0.09 + 0.015 * rng.standard_normal(),
        "rib_phase": rng.random(),
        "rib_strength": 0.04 + 0.01 * rng.standard_normal(),
        "heart_rx": 0.11 * (1 + v * rng.standard_normal()) + 0.0005 * (age - 50),
    }


def render(rng: np.random.Generator, anatomy: dict, site: SiteProfile, config: SyntheticConfig,
           lesion: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """One image (float 0..1) and its lesion mask (bool)."""
    n = config.image_size
    y, x = np.mgrid[0:n, 0:n] / (n - 1)
    body = 0.35 + 0.1 * np.exp(-(((x - 0.5) / 0.45) ** 2 + ((y - 0.55) / 0.6) ** 2))
    image = body.copy()
    lungs = np.zeros((n, n), dtype=bool)
    for side in (-1, 1):
        cx = 0.5 + side * anatomy["lung_dx"]
        lungs |= ((x - cx) / anatomy["lung_rx"]) ** 2 + ((y - anatomy["lung_cy"]) / anatomy["lung_ry"]) ** 2 < 1
    image[lungs] -= anatomy["lung_darkness"]
    # ribs: faint horizontal bands over the lung fields, spacing varying by patient
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (y - anatomy["rib_phase"]) / anatomy["rib_spacing"])
    image += anatomy["rib_strength"] * ribs * lungs
    # heart shadow: a bright ellipse left of centre whose size varies by patient
    heart = ((x - 0.55) / anatomy["heart_rx"]) ** 2 + ((y - 0.66) / (anatomy["heart_rx"] * 0.8)) ** 2 < 1
    image[heart] += 0.5 * anatomy["lung_darkness"]
    image += config.texture_strength * anatomy["texture"]
    mask = np.zeros((n, n), dtype=bool)
    if lesion is not None:
        blob = np.exp(-(((x - lesion["x"]) ** 2 + (y - lesion["y"]) ** 2) / (2 * lesion["r"] ** 2)))
        image += config.lesion_contrast * blob
        mask = blob > 0.5
    image = np.clip(image, 0, 1) ** site.gamma
    image = site.gain * image + site.offset + rng.normal(0, site.noise, image.shape)
    image = np.clip(image, 0, 1)
    if site.blur > 0:
        blurred = Image.fromarray((image * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(site.blur))
        image = np.asarray(blurred, dtype=np.float64) / 255.0
    return image, mask


def generate_synthetic(out_dir: str | Path, config: SyntheticConfig | None = None) -> tuple[CaseTable, Task]:
    """Write images, masks and ``manifest.csv`` under ``out_dir``; return the table and task."""
    config = config or SyntheticConfig()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    site_names = list(config.sites)
    train_f, val_f, _ = config.split_fractions
    cases: list[Case] = []
    for p in range(config.n_patients):
        patient = f"P{p:04d}"
        sex = "F" if rng.random() < 0.5 else "M"
        age = float(rng.integers(20, 85))
        site_name = site_names[int(rng.integers(len(site_names)))]
        draw = rng.random()
        split = "train" if draw < train_f else ("val" if draw < train_f + val_f else "test")
        if site_name in config.unseen_sites:
            split = "test"
        anatomy = draw_anatomy(rng, config, sex, age)
        low, high = config.images_per_patient
        for i in range(int(rng.integers(low, high + 1))):
            abnormal = rng.random() < config.abnormal_fraction
            lesion = None
            if abnormal:
                side = rng.choice([-1, 1])
                lesion = {
                    "x": 0.5 + side * anatomy["lung_dx"] + 0.05 * rng.standard_normal(),
                    "y": anatomy["lung_cy"] + 0.12 * rng.standard_normal(),
                    "r": rng.uniform(*config.lesion_radius),
                }
            image, mask = render(rng, anatomy, config.sites[site_name], config, lesion)
            case_id = f"{patient}_{i}"
            image_path = out / "images" / f"{case_id}.png"
            Image.fromarray((image * 255).astype(np.uint8)).save(image_path)
            mask_path = out / "masks" / f"{case_id}.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
            cases.append(Case(
                case_id=case_id, images=(str(image_path),), label="abnormal" if abnormal else "normal",
                patient_id=patient, age=age, sex=sex, site=site_name, split=split,
                extra={"mask": f"masks/{case_id}.png"},
            ))
    relative = [Case(**{**c.to_record(), "images": (str(Path(c.image).relative_to(out)),)}) for c in cases]
    atomic_write_text(out / "generator.json", json.dumps(asdict(config), indent=2))
    # the manifest last (atomically): its existence is what says the data set is complete
    CaseTable(relative, str(out / "manifest.csv")).save(out / "manifest.csv")
    return CaseTable(cases, str(out / "manifest.csv")), SYNTHETIC_TASK
