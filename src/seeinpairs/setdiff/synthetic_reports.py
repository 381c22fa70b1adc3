"""Radiology-style reports of generated images, written from the generator's ground truth with noise.

Real reports are an imperfect view of the image, so report guidance is only measurable offline if
the generated reports are imperfect the same ways: a lesion is sometimes not mentioned (omission),
hedged ("possible ..., may represent atelectasis"), or given the wrong side; reports name findings
unrelated to any set difference (degenerative spine changes, more often in older patients, as in
life); image quality is mentioned for some low-quality images only; the age is de-identified
(``___``) in some indications, as in MIMIC-CXR. :class:`ReportNoise` holds the rates;
``ReportNoise.none()`` writes every finding plainly (the analogue of RadDiff's ground-truth reports).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

COMPLAINTS = ("cough", "fever", "shortness of breath", "chest pain", "follow-up")
UNRELATED = ("Mild degenerative changes of the thoracic spine.", "The aorta is mildly tortuous.",
             "Calcified granuloma in the right upper lobe.", "Surgical clips in the right upper quadrant.",
             "Mild bibasilar atelectasis.", "Old healed left rib fracture.")
#: unrelated findings that are more common with age (chosen twice as often above 60)
AGE_RELATED = frozenset(UNRELATED[:2])


@dataclass(frozen=True)
class ReportNoise:
    """Per-report rates of each kind of imperfection."""

    omit: float = 0.15  # a present lesion is not mentioned
    hedge: float = 0.25  # a mentioned lesion is hedged
    wrong_side: float = 0.05  # a mentioned lesion is given the other side
    unrelated: float = 0.6  # one or two findings unrelated to the difference
    quality_missed: float = 0.4  # a low-quality image's quality is not mentioned
    deidentified_age: float = 0.5  # the indication reads "___-year-old"

    @classmethod
    def none(cls) -> ReportNoise:
        """Every finding stated plainly, nothing unrelated: the best a report can be."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _size_words(radius: float | None, rng: np.random.Generator) -> str:
    if radius is None:
        return ""
    if radius >= 0.10:
        return str(rng.choice(["large ", "large ", "bulky "]))
    if radius <= 0.08:
        return str(rng.choice(["small ", "small ", "subtle "]))
    return ""


def write_report(truth: Mapping[str, Any], rng: np.random.Generator, noise: ReportNoise = ReportNoise()) -> str:
    """One report (INDICATION / TECHNIQUE / FINDINGS / IMPRESSION) of an image with ground truth ``truth``."""
    age = truth.get("age")
    words = {"F": ["woman", "female"], "M": ["man", "male"]}.get(truth.get("sex"), ["patient"])
    sex = str(rng.choice(words))
    shown_age = "___" if age is None or rng.random() < noise.deidentified_age else str(int(age))
    indication = f"INDICATION: {shown_age}-year-old {sex} with {rng.choice(COMPLAINTS)}."
    technique = f"TECHNIQUE: {rng.choice(['PA and lateral views of the chest.', 'Portable AP view of the chest.'])}"
    findings: list[str] = []
    impression: list[str] = []
    site = truth.get("site")
    if site == "site_b" and rng.random() >= noise.quality_missed:
        findings.append(str(rng.choice(["Image quality is limited by low contrast and motion blur.",
                                        "Technically limited, blurry low contrast study."])))
    if site == "site_c" and rng.random() >= noise.quality_missed:
        findings.append("High contrast technique.")
    if truth.get("lesion") and rng.random() >= noise.omit:
        side = truth.get("lesion_side") or "right"
        if rng.random() < noise.wrong_side:
            side = {"left": "right", "right": "left"}.get(side, side)
        zone = str(rng.choice(["upper", "mid", "lower"]))
        size = _size_words(truth.get("lesion_radius"), rng)
        if rng.random() < noise.hedge:
            findings.append(f"Possible {size}opacity in the {side} {zone} lung, which may represent atelectasis.")
            impression.append(f"Possible {side} lung opacity; cannot exclude pneumonia.")
        else:
            findings.append(f"There is a {size}focal opacity in the {side} {zone} lung.")
            phrase = f"{size}focal {side} lung opacity, concerning for pneumonia."
            impression.append(phrase[0].upper() + phrase[1:])
    else:
        findings.append(str(rng.choice(["The lungs are clear.",
                                        "No focal consolidation, pleural effusion or pneumothorax."])))
    findings.append(str(rng.choice(["Heart size is normal.", "The cardiomediastinal silhouette is normal."])))
    if rng.random() < noise.unrelated:
        weights = np.array([2.0 if u in AGE_RELATED and (age or 0) > 60 else 1.0 for u in UNRELATED])
        count = 1 + int(rng.random() < 0.3)
        findings += [str(u) for u in rng.choice(UNRELATED, size=count, replace=False, p=weights / weights.sum())]
    if not impression:
        impression.append("No acute cardiopulmonary process.")
    return "\n".join([indication, technique, "FINDINGS: " + " ".join(findings), "IMPRESSION: " + " ".join(impression)])
