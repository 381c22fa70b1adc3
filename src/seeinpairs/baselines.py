"""An image-only reference model trained by the study itself, on the same splits as the VLMs.

Published anchors (e.g. MedMNIST's ResNet-18) come from other splits and other
code; a baseline trained here on exactly the cases the VLMs see tells a reader
whether the VLM figures are in a plausible range. It is deliberately plain:
images resized to a small grayscale (or RGB) thumbnail, standardised pixels,
multinomial logistic regression. Its predictions use the evaluation record
format, so the same metrics, bootstrap intervals and tests apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .cases import Case, CaseTable
from .errors import ConfigError
from .evaluation.stats import summarise
from .imaging import load_image
from .tasks import Task


@dataclass
class BaselineResult:
    name: str
    summary: pd.DataFrame  # one row: n, metrics with CIs
    records: list[dict[str, Any]]


def pixel_features(cases: Sequence[Case], size: int = 28, color: bool = False) -> np.ndarray:
    """Each case's (first) image as a flat thumbnail in 0..1."""
    rows = []
    for case in cases:
        image = load_image(case.image).convert("RGB" if color else "L").resize((size, size), Image.BILINEAR)
        rows.append(np.asarray(image, dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(rows) if rows else np.zeros((0, size * size * (3 if color else 1)), dtype=np.float32)


def logistic_baseline(table: CaseTable, task: Task, train_split: str = "train", test_split: str = "test",
                      size: int = 28, color: bool = False, c: float = 0.1, seed: int = 0,
                      n_boot: int = 1000) -> BaselineResult:
    """Train on ``train_split``, predict ``test_split``; metrics with bootstrap CIs like the VLMs'."""
    train = [x for x in table if x.split == train_split and x.label is not None]
    test = [x for x in table if x.split == test_split and x.label is not None]
    if not train or not test:
        raise ConfigError(f"baseline: needs labelled cases in splits '{train_split}' ({len(train)}) "
                          f"and '{test_split}' ({len(test)})")
    present = sorted({str(x.label) for x in train})
    if len(present) < 2:
        raise ConfigError(f"baseline: split '{train_split}' holds only the class(es) {present}")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, random_state=seed))
    model.fit(pixel_features(train, size, color), [str(x.label) for x in train])
    probabilities = model.predict_proba(pixel_features(test, size, color))
    fitted = list(model.classes_)
    records = []
    for case, row in zip(test, probabilities):
        probs = [float(row[fitted.index(cls)]) if cls in fitted else 0.0 for cls in task.classes]
        records.append({"case_id": case.case_id, "gold": case.label, "options": list(task.classes),
                        "probabilities": probs, "predicted": task.classes[int(np.argmax(probs))],
                        "patient_id": case.patient})
    name = f"pixel logistic regression ({size}x{size}{' RGB' if color else ''})"
    summary = summarise({name: records}, task.classes, task.healthy_class, n_boot=n_boot, seed=seed)
    return BaselineResult(name, summary, records)
