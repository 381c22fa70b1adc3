"""Constructed data sets whose ground truth says where the evidence is and what the references mean.

* ``region``: the label is decided by a bright blob that only ever appears in the
  top-left quadrant; equally bright distractor blobs appear elsewhere in both
  classes, so only that quadrant can change the answer.
* ``calibration``: every site has its own brightness; an abnormal image is
  brighter than its site's healthy images, and the abnormal brightness of one
  site is the healthy brightness of the next, so only a comparison with a
  same-site healthy reference can tell the classes apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seeinpairs.cases import Case, CaseTable
from seeinpairs.tasks import Task

SIZE = 56
REGION = (slice(0, SIZE // 2), slice(0, SIZE // 2))  # rows, columns of the deciding quadrant

TASK = Task(name="constructed", question="Is the query image abnormal?", classes=["normal", "abnormal"],
            healthy_class="normal", modality="test image")


def _blob(image: np.ndarray, cy: float, cx: float, radius: float, amplitude: float) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius ** 2))
    image += amplitude * blob
    return blob > 0.5


def write_region_data(root: Path, n: int = 200, seed: int = 0) -> CaseTable:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n):
        image = 0.3 + 0.05 * rng.standard_normal((SIZE, SIZE))
        abnormal = i % 2 == 1
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        if abnormal:
            mask = _blob(image, rng.uniform(7, 21), rng.uniform(7, 21), 4.0, 0.6)
        for _ in range(2):  # distractors: same blobs outside the deciding quadrant, in both classes
            cy, cx = rng.uniform(7, 49), rng.uniform(35, 49)
            if rng.random() < 0.5:
                cy, cx = rng.uniform(35, 49), rng.uniform(7, 49)
            _blob(image, cy, cx, 4.0, 0.6)
        name = f"r{i:04d}"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
        cases.append(Case(case_id=name, images=(f"images/{name}.png",), label="abnormal" if abnormal else "normal",
                          patient_id=name, split="train" if i < int(0.8 * n) else "test",
                          extra={"mask": f"masks/{name}.png"}))
    CaseTable(cases, str(root / "manifest.csv")).save(root / "manifest.csv")
    return CaseTable.load(root / "manifest.csv")


def write_calibration_data(root: Path, n: int = 320, seed: int = 0, levels=(0.25, 0.4, 0.55, 0.7),
                           step: float = 0.15) -> CaseTable:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n):
        site = i % len(levels)
        abnormal = (i // len(levels)) % 2 == 1
        level = levels[site] + (step if abnormal else 0.0)
        image = level + 0.03 * rng.standard_normal((SIZE, SIZE))
        name = f"c{i:04d}"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"{name}.png")
        cases.append(Case(case_id=name, images=(f"images/{name}.png",), label="abnormal" if abnormal else "normal",
                          patient_id=name, site=f"site{site}", split="train" if i < int(0.75 * n) else "test"))
    CaseTable(cases, str(root / "manifest.csv")).save(root / "manifest.csv")
    return CaseTable.load(root / "manifest.csv")
