"""Generated inputs for the site-shift tests: a few small PNGs per patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seeinpairs.cases import Case, CaseTable

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_images(root: Path, n_patients: int, per_patient: int = 2, colour: bool = False,
                 seed: int = 0) -> CaseTable:
    """``n_patients`` patients with ``per_patient`` small PNGs each, alternating healthy/abnormal patients;
    every third patient has mixed labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    for p in range(n_patients):
        for i in range(per_patient):
            shape = (20, 24, 3) if colour else (20, 24)
            path = root / f"p{p}_{i}.png"
            Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(path)
            label = "abnormal" if (p % 2 or (p % 3 == 0 and i == 1)) else "normal"
            cases.append(Case(case_id=f"P{p:03d}_{i}", images=(str(path),), label=label, patient_id=f"P{p:03d}",
                              split=("train", "val", "test")[p % 3]))
    return CaseTable(cases, source="generated")
