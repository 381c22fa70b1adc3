"""Simulated acquisition sites for data sets that have none.

Most small public data sets (PneumoniaMNIST, RetinaMNIST, the NIH subset) come
from one source, or do not say which. To study acquisition shift on them, each
patient is assigned to a simulated *site*, and every image of that patient is
re-rendered through the site's acquisition transform: intensity calibration
(gain, offset), contrast (gamma), optics (Gaussian blur), sensor noise and, for
colour images, a colour cast. One site is held out: all its cases go to the
test split, so a model never sees its acquisition during training.

The transform acts on real 8-bit images (grey or RGB) and returns 8-bit
images of the same kind. A grey image (mode ``L``, or RGB with equal channels,
which is how :func:`~seeinpairs.imaging.load_image` returns a radiograph) stays
grey: the colour cast is skipped and the noise is the same in every channel.

Transforms are the same families as :class:`~seeinpairs.datasets.synthetic.SiteProfile`
(whose generator renders images from scratch), applied to existing pixels.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from ..atomic import atomic_path
from ..cases import Case, CaseTable, stable_digest
from ..errors import ConfigError
from ..imaging import image_hash, load_image
from ..registry import Registry

__all__ = [
    "PROTOCOLS",
    "AcquisitionProtocol",
    "AcquisitionTransform",
    "assign_sites",
    "create_protocol",
    "is_grey",
    "list_protocols",
    "simulate_sites",
]

#: bump when the rendering of a transform changes, so cached simulated images are rewritten
RENDER_VERSION = 1
#: splits a patient of a seen site gets when the table has none (train, val, test)
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class AcquisitionTransform:
    """One acquisition: applied as gamma, then gain/offset, colour cast, blur, noise, clip to 0..1.

    * ``gain``, ``offset``: ``x -> gain * x + offset`` on intensities in 0..1 (detector calibration);
    * ``gamma``: ``x -> x ** gamma`` before the gain (contrast / tone curve; < 1 brightens mid-tones);
    * ``blur``: Gaussian sigma as a *fraction of the image's shorter side*, so one protocol means
      the same optics on a 28 px MedMNIST image and a 224 px dermoscopy image;
    * ``noise``: standard deviation of additive Gaussian noise, in 0..1 intensity units;
    * ``color``: per-channel gains (R, G, B), colour images only (white balance, illumination).
    """

    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    blur: float = 0.0
    noise: float = 0.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "color", tuple(float(c) for c in self.color))
        problems = []
        if not self.gain > 0:
            problems.append(f"gain must be > 0 (got {self.gain})")
        if not self.gamma > 0:
            problems.append(f"gamma must be > 0 (got {self.gamma})")
        if not self.blur >= 0:
            problems.append(f"blur must be >= 0 (got {self.blur})")
        if not self.noise >= 0:
            problems.append(f"noise must be >= 0 (got {self.noise})")
        if len(self.color) != 3 or not all(c > 0 for c in self.color):
            problems.append(f"color must be three gains > 0 (got {self.color})")
        if not all(np.isfinite([self.gain, self.offset, self.gamma, self.blur, self.noise, *self.color[:3]])):
            problems.append("values must be finite")
        if problems:
            raise ConfigError(f"acquisition transform: {'; '.join(problems)}")

    @property
    def is_identity(self) -> bool:
        return self == AcquisitionTransform()

    def scaled(self, strength: float) -> AcquisitionTransform:
        """The same shift at ``strength`` (0: identity, 1: this transform), for dose-response studies.

        Gain, gamma and colour gains are interpolated on a log scale, the rest linearly.
        """
        s = float(strength)
        return AcquisitionTransform(gain=self.gain ** s, offset=self.offset * s, gamma=self.gamma ** s,
                                    blur=self.blur * s, noise=self.noise * s,
                                    color=tuple(c ** s for c in self.color))  # type: ignore[arg-type]

    def apply(self, image: Image.Image | np.ndarray, rng: np.random.Generator | None = None,
              source: str = "image") -> Image.Image | np.ndarray:
        """The image as acquired at this site, of the same kind (PIL mode or array shape), uint8.

        ``rng`` draws the noise; it is required when ``noise > 0`` so that every noisy pixel is
        reproducible from the caller's seed.
        """
        is_pil = isinstance(image, Image.Image)
        mode = image.mode if is_pil else None
        array = np.asarray(image.convert("RGB") if is_pil and mode not in ("L", "RGB") else image)
        if array.dtype != np.uint8:
            raise ConfigError(f"{source}: acquisition transforms take uint8 images (got {array.dtype})")
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3) or 0 in array.shape:
            raise ConfigError(f"{source}: expected an HxW or HxWx3 image (got shape {array.shape})")
        if self.noise > 0 and rng is None:
            raise ConfigError(f"{source}: a transform with noise needs a random generator")
        grey = array.ndim == 2 or is_grey(array)
        plane = (array if array.ndim == 2 else array[..., 0]) if grey else array
        out = self._render(plane.astype(np.float64) / 255.0, colour=not grey, rng=rng)
        result = (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if grey and array.ndim == 3:
            result = np.repeat(result[..., None], 3, axis=-1)
        if not is_pil:
            return result
        rendered = Image.fromarray(result)
        return rendered if mode in ("L", "RGB") else rendered.convert("RGB")

    def _render(self, x: np.ndarray, colour: bool, rng: np.random.Generator | None) -> np.ndarray:
        if self.gamma != 1.0:
            x = x ** self.gamma
        x = self.gain * x + self.offset
        if colour and self.color != (1.0, 1.0, 1.0):
            x = x * np.asarray(self.color)[None, None, :]
        if self.blur > 0:
            sigma = self.blur * min(x.shape[0], x.shape[1])
            x = gaussian_filter(x, sigma=(sigma, sigma, 0) if x.ndim == 3 else sigma, mode="reflect")
        if self.noise > 0:
            assert rng is not None
            x = x + rng.normal(0.0, self.noise, x.shape)
        return x

    def to_dict(self) -> dict:
        values = asdict(self)
        values["color"] = list(self.color)
        return values


def is_grey(array: np.ndarray) -> bool:
    """True for a 2-D array or an RGB array whose three channels are equal."""
    array = np.asarray(array)
    if array.ndim == 2:
        return True
    return bool(np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2]))


@dataclass(frozen=True)
class AcquisitionProtocol:
    """Named sites, each with its acquisition transform and share of patients; one held out by default."""

    name: str
    sites: dict[str, AcquisitionTransform]
    held_out: str
    #: relative share of patients per site (default: equal)
    weights: dict[str, float] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.sites:
            raise ConfigError(f"protocol '{self.name}': no sites")
        if self.held_out not in self.sites:
            raise ConfigError(f"protocol '{self.name}': held_out '{self.held_out}' is not one of its sites "
                              f"({', '.join(self.sites)})")
        unknown = sorted(set(self.weights) - set(self.sites))
        if unknown:
            raise ConfigError(f"protocol '{self.name}': weights name unknown site(s) {', '.join(unknown)}")
        if any(not (w > 0) for w in self.weights.values()):
            raise ConfigError(f"protocol '{self.name}': weights must be > 0")

    def weight(self, site: str) -> float:
        return float(self.weights.get(site, 1.0))

    def scaled(self, strength: float) -> AcquisitionProtocol:
        """Every site's shift at ``strength`` (see :meth:`AcquisitionTransform.scaled`)."""
        return replace(self, name=f"{self.name}@{strength:g}",
                       sites={name: t.scaled(strength) for name, t in self.sites.items()})

    def to_dict(self) -> dict:
        return {"name": self.name, "held_out": self.held_out, "weights": {s: self.weight(s) for s in self.sites},
                "sites": {name: t.to_dict() for name, t in self.sites.items()}}


#: factories of protocols: ``@PROTOCOLS.register("default4")`` on a function returning an AcquisitionProtocol
PROTOCOLS: Registry[AcquisitionProtocol] = Registry("acquisition protocol")


def create_protocol(name: str) -> AcquisitionProtocol:
    """A registered protocol by name; an unknown name is a one-line RegistryError listing the known ones."""
    return PROTOCOLS.create(name)


def list_protocols(pattern: str = "*") -> list[str]:
    return PROTOCOLS.list_names(pattern)


def _default4_sites() -> dict[str, AcquisitionTransform]:
    return {
        "site_a": AcquisitionTransform(),
        "site_b": AcquisitionTransform(gain=0.92, offset=0.04, gamma=0.9, blur=0.004, noise=0.015,
                                       color=(1.03, 1.0, 0.97)),
        "site_c": AcquisitionTransform(gain=1.1, offset=-0.05, gamma=1.2, blur=0.008, noise=0.03,
                                       color=(0.96, 1.0, 1.05)),
        "site_d": AcquisitionTransform(gain=0.75, offset=0.12, gamma=0.7, blur=0.015, noise=0.05,
                                       color=(1.08, 0.97, 0.9)),
    }


@PROTOCOLS.register("default4")
def default4() -> AcquisitionProtocol:
    """Four sites from mild to harsh; the harsh one, ``site_d``, is held out. Equal patient shares.

    ====== ===== ====== ===== ===== ===== ================== ===========================================
    site   gain  offset gamma blur  noise color (R, G, B)     character
    ====== ===== ====== ===== ===== ===== ================== ===========================================
    site_a 1.00  0.00   1.00  0     0     (1, 1, 1)          the original acquisition
    site_b 0.92  +0.04  0.90  0.004 0.015 (1.03, 1.00, 0.97) slightly flatter, warmer, faint blur
    site_c 1.10  -0.05  1.20  0.008 0.030 (0.96, 1.00, 1.05) more contrast, darker, cooler, some noise
    site_d 0.75  +0.12  0.70  0.015 0.050 (1.08, 0.97, 0.90) washed out, blurred, noisy (held out)
    ====== ===== ====== ===== ===== ===== ================== ===========================================

    ``blur`` is a fraction of the shorter image side (0.015 is 0.4 px at 28 px, 3.4 px at 224 px);
    ``noise`` is in 0..1 intensity units; the colour cast applies to colour images only.
    """
    return AcquisitionProtocol("default4", _default4_sites(), held_out="site_d",
                               description="four sites from mild to harsh; site_d (harsh) held out")


@PROTOCOLS.register("mild4")
def mild4() -> AcquisitionProtocol:
    """The sites of ``default4`` at half strength (:meth:`AcquisitionTransform.scaled` 0.5), ``site_d``
    held out: the same shift directions with a smaller dose, to see whether effects scale with the shift."""
    sites = {name: t.scaled(0.5) for name, t in _default4_sites().items()}
    return AcquisitionProtocol("mild4", sites, held_out="site_d",
                               description="default4 at half strength; site_d held out")


# ----- assigning patients and writing images ------------------------------------------------------------
def _rank(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def _site_sequence(sites: Sequence[str], weights: Sequence[float], n: int) -> list[str]:
    """``n`` site names whose every prefix holds each site in proportion to its weight
    (smooth weighted round robin), so short runs of patients are spread over all sites."""
    current = [0.0] * len(sites)
    total = float(sum(weights))
    order = []
    for _ in range(n):
        current = [c + w for c, w in zip(current, weights)]
        best = max(range(len(sites)), key=lambda i: (current[i], -i))
        current[best] -= total
        order.append(sites[best])
    return order


def assign_sites(table: Sequence[Case], protocol: AcquisitionProtocol, seed: int) -> dict[str, str]:
    """Patient -> site, deterministic for (seed, patients): stratified by the patient's labels.

    Patients are grouped by the set of their labels, each group is put in a seeded hash order, and
    the groups are dealt out in turn by a weighted round robin, so every site gets nearly the same
    label mix (the simulated shift is acquisition only, not prevalence). Cases without a
    ``patient_id`` are their own patient.
    """
    labels: dict[str, set[str]] = defaultdict(set)
    for case in table:
        labels[case.patient].add(str(case.label))
    strata: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for patient, found in labels.items():
        strata[tuple(sorted(found))].append(patient)
    ordered = []
    for key in sorted(strata):
        ordered.extend(sorted(strata[key], key=lambda p: (_rank(seed, p), p)))
    names = list(protocol.sites)
    # start the deal at a seeded offset, so the first patient of a stratum is not always dealt to the first site
    offset = int(_rank(seed, "site-offset")[:8], 16) % max(1, len(names))
    sequence = _site_sequence(names, [protocol.weight(s) for s in names], len(ordered) + offset)[offset:]
    return dict(zip(ordered, sequence))


def _patient_splits(patients: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    order = sorted(patients, key=lambda p: (_rank(seed, "split:" + p), p))
    n = len(order)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    return {p: ("train" if i < n_train else "val" if i < n_train + n_val else "test") for i, p in enumerate(order)}


def _check_fractions(fractions: Sequence[float] | None) -> None:
    if fractions is None:
        return
    if len(fractions) != 3 or any(not (f >= 0) for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"split_fractions: expected three non-negative fractions (train, val, test) summing "
                          f"to 1 (got {list(fractions)})")


def simulate_sites(table: Sequence[Case], protocol: str | AcquisitionProtocol, out_dir: str | Path, seed: int = 0,
                   held_out: str | None = None, split_fractions: Sequence[float] | None = None,
                   image_format: str = "png") -> CaseTable:
    """Re-render every case's images as acquired at a simulated site; return the table with sites and splits.

    * Each patient (all of its cases together) is assigned to a site by :func:`assign_sites`.
    * Images are written to ``out_dir/<site>/``; the file name carries a digest of the source
      file's content, the transform, the noise seed and the format, so a file that already
      exists is identical by construction and is not rewritten (re-running is cheap).
    * Every case of the held-out site (``held_out``, default the protocol's) goes to the ``test``
      split: that site is never seen in train or val.
    * Other cases keep the table's split; with ``split_fractions`` (train, val, test), or for
      cases that have no split, patients of the seen sites are split by patient with those
      fractions (default 0.7/0.1/0.2).
    * ``extra`` keeps what was there, plus ``source_images``, ``original_site`` (when the case had
      one), ``original_split`` and ``site_protocol``.

    Noise is seeded per (seed, case, image), so the same seed always writes the same pixels.
    """
    protocol = create_protocol(protocol) if isinstance(protocol, str) else protocol
    held = protocol.held_out if held_out is None else held_out
    if held not in protocol.sites:
        raise ConfigError(f"held_out: '{held}' is not a site of protocol '{protocol.name}' "
                          f"(sites: {', '.join(protocol.sites)})")
    _check_fractions(split_fractions)
    suffix = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg"}.get(str(image_format).lower())
    if suffix is None:
        raise ConfigError(f"image_format: '{image_format}' is not supported (use png or jpeg)")
    cases = list(table)
    if not cases:
        raise ConfigError("simulate_sites: the table holds no cases")
    sites = assign_sites(cases, protocol, seed)
    seen_patients = sorted({c.patient for c in cases if sites[c.patient] != held})
    unsplit = {c.patient for c in cases if c.split is None and sites[c.patient] != held}
    fractions = split_fractions or DEFAULT_SPLIT_FRACTIONS
    resplit = _patient_splits(seen_patients if split_fractions is not None else sorted(unsplit), fractions, seed)

    out = Path(out_dir)
    result = []
    for case in cases:
        site = sites[case.patient]
        transform = protocol.sites[site]
        images = []
        for index, source in enumerate(case.images):
            images.append(str(_render_file(source, transform, out / site, case.case_id, index, seed, suffix)))
        if site == held:
            split = "test"
        elif split_fractions is not None or case.split is None:
            split = resplit[case.patient]
        else:
            split = case.split
        extra = dict(case.extra)
        extra["source_images"] = ";".join(case.images)
        if case.site is not None:
            extra["original_site"] = case.site
        if case.split is not None:
            extra["original_split"] = case.split
        extra["site_protocol"] = protocol.name
        result.append(replace(case, images=tuple(images), site=site, split=split, extra=extra))
    return CaseTable(result, source=f"{getattr(table, 'source', '<table>')} (sites: {protocol.name}, seed {seed})")


def _render_file(source: str, transform: AcquisitionTransform, folder: Path, case_id: str, index: int, seed: int,
                 suffix: str) -> Path:
    noise_key = [seed, stable_digest(case_id), index]
    identity = json.dumps({"source": image_hash(source), "transform": transform.to_dict(), "noise": noise_key,
                           "suffix": suffix, "version": RENDER_VERSION}, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    stem = _SAFE_NAME.sub("_", case_id)[:80]
    target = folder / f"{stem}_{index}_{digest}{suffix}"
    if target.is_file():
        return target
    image = load_image(source)
    rendered = transform.apply(image, np.random.default_rng(noise_key), source=source)
    if is_grey(np.asarray(rendered)):
        rendered = rendered.convert("L")
    with atomic_path(target) as tmp:
        if suffix == ".png":
            rendered.save(tmp, format="PNG")
        else:
            rendered.save(tmp, format="JPEG", quality=95)
    return target
