"""ODIR-5K (Ocular Disease Intelligent Recognition): paired fundus photographs of 5,000 patients.

Native layout: an annotation table (``ODIR-5K_Training_Annotations(Updated)_V2``
as .xlsx or exported .csv, or Kaggle's ``full_df.csv``) with ``ID, Patient Age,
Patient Sex, Left-Fundus, Right-Fundus, Left-Diagnostic Keywords,
Right-Diagnostic Keywords, N, D, G, C, A, H, M, O``; images (``0_left.jpg``)
anywhere under ``root`` (or ``image_dir``).

``mode="eye"`` (default): one case per eye (case_id the image stem, patient =
``ID``, ``extra["eye"]``), labelled ``normal`` when that eye's keywords contain
"normal fundus", else ``abnormal``; eyes marked "no fundus image" are left out.
``mode="bilateral"``: one case per patient with ``images = (left, right)``,
``normal`` when the patient-level ``N`` column is 1 (both eyes normal).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..cases import Case
from ..errors import ManifestError
from ..tasks import Task
from .registry import (DATASETS, DatasetAdapter, ImageIndex, Problems, check_missing_option, choose, folder_of, locate,
                       make_table, read_csv, require_columns, rows, text)

DISEASE_COLUMNS = {"N": "normal", "D": "diabetes", "G": "glaucoma", "C": "cataract", "A": "age-related macular "
                   "degeneration", "H": "hypertension", "M": "pathological myopia", "O": "other diseases"}
REQUIRED = ("ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords",
            "Right-Diagnostic Keywords")
_DEFAULT_FILES = ("full_df.csv", "ODIR-5K_Training_Annotations(Updated)_V2.csv", "data.csv",
                  "ODIR-5K_Training_Annotations(Updated)_V2.xlsx")


def _annotation_file(root: Path, csv: str | Path | None) -> Path:
    if csv is not None:
        path = Path(csv).expanduser()
        path = path if path.is_absolute() else folder_of(root) / path
        if not path.is_file():
            raise ManifestError(f"{path}: ODIR annotation file not found")
        return path
    if root.is_file():
        return root
    for name in _DEFAULT_FILES:
        if (root / name).is_file():
            return root / name
    for candidate in sorted(root.glob("*.csv")):
        try:
            header = candidate.open(encoding="utf-8-sig").readline()
        except (OSError, UnicodeDecodeError):
            continue
        if "Left-Fundus" in header:
            return candidate
    raise ManifestError(f"{root}: no ODIR annotation table found (looked for {', '.join(_DEFAULT_FILES)} "
                        f"and any CSV with a 'Left-Fundus' column)")


def _eye_label(keywords: str) -> str | None:
    lowered = keywords.lower()
    if "no fundus image" in lowered:
        return None
    return "normal" if "normal fundus" in lowered else "abnormal"


def odir_task(mode: str) -> Task:
    if mode == "bilateral":
        return Task(name="odir_bilateral", question="Do these two fundus photographs (left eye, right eye) show "
                    "any ocular disease?", classes=["normal", "abnormal"], healthy_class="normal",
                    descriptions={"normal": "both fundi normal",
                                  "abnormal": "diabetic retinopathy, glaucoma, cataract, AMD, hypertensive or "
                                              "myopic changes, or another disease in either eye"},
                    modality="fundus photograph")
    return Task(name="odir_eye", question="Does this fundus photograph show any ocular disease?",
                classes=["normal", "abnormal"], healthy_class="normal",
                descriptions={"normal": "normal fundus",
                              "abnormal": "diabetic retinopathy, glaucoma, cataract, AMD, hypertensive or myopic "
                                          "changes, or another disease"},
                modality="fundus photograph")


def load_odir(root: Path, csv: str | Path | None = None, image_dir: str | Path | None = None, mode: str = "eye",
              missing: str = "error") -> tuple:
    """ODIR-5K as (CaseTable, Task), per eye (default) or per patient with both eyes."""
    mode = choose("odir", "mode", mode, ("eye", "bilateral"))
    missing = check_missing_option("odir", missing)
    path = _annotation_file(root, csv)
    base = folder_of(path)
    frame = read_csv(path, "ODIR annotation table")
    require_columns(frame, REQUIRED + (("N",) if mode == "bilateral" else ()), path)
    folder = Path(image_dir).expanduser() if image_dir is not None else base
    index = ImageIndex([folder if folder.is_absolute() else base / folder])
    disease_columns = [c for c in DISEASE_COLUMNS if c in frame.columns]
    problems = Problems(path)
    cases = []
    seen: set[str] = set()
    for row, record in rows(frame):
        patient = text(record.get("ID"))
        if patient is None:
            problems.add(row, "ID", "empty")
            continue
        if patient in seen:
            continue  # Kaggle's full_df.csv repeats each patient once per image
        seen.add(patient)
        age, raw_age = problems.age(row, "Patient Age", record.get("Patient Age"))
        sex = problems.sex(row, "Patient Sex", record.get("Patient Sex"))
        flags = {c: problems.number(row, c, record.get(c), integer=True, minimum=0, maximum=1,
                                    required=(mode == "bilateral" and c == "N")) for c in disease_columns}
        common: dict = {}
        positive = [DISEASE_COLUMNS[c] for c, v in flags.items() if v == 1 and c != "N"]
        if disease_columns:
            common["patient_diagnoses"] = "|".join(positive)
        if raw_age:
            common["age_raw"] = raw_age
        eyes = {}
        for side in ("Left", "Right"):
            name = text(record.get(f"{side}-Fundus"))
            keywords = re.sub(r"\s+", " ", text(record.get(f"{side}-Diagnostic Keywords")) or "")
            if name is None:
                problems.add(row, f"{side}-Fundus", "empty")
                continue
            image = locate(problems, row, f"{side}-Fundus", name, index, missing)
            eyes[side.lower()] = (name, keywords, image)
        if len(eyes) < 2:
            continue
        if mode == "bilateral":
            if flags.get("N") is None or any(image is None for _, _, image in eyes.values()):
                continue
            label = "normal" if flags["N"] == 1 else "abnormal"
            cases.append(Case(case_id=patient, images=(str(eyes["left"][2]), str(eyes["right"][2])), label=label,
                              patient_id=patient, age=age, sex=sex,
                              extra={**common, "left_keywords": eyes["left"][1],
                                     "right_keywords": eyes["right"][1]}))
            continue
        for eye, (name, keywords, image) in eyes.items():
            label = _eye_label(keywords)
            if image is None or label is None:
                continue
            cases.append(Case(case_id=Path(name).stem, images=(str(image),), label=label, patient_id=patient,
                              age=age, sex=sex, extra={**common, "eye": eye, "keywords": keywords}))
    problems.raise_if_any()
    return make_table(cases, path), odir_task(mode)


DATASETS.register("odir", DatasetAdapter(
    load_odir, classes=lambda: {f"mode={m}": odir_task(m) for m in ("eye", "bilateral")}))
