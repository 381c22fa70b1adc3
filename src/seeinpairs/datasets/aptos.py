"""Diabetic-retinopathy grading: APTOS 2019 and EyePACS (Kaggle 2015).

APTOS 2019: ``train.csv`` (``id_code, diagnosis``) with ``train_images/<id_code>.png``.
EyePACS: ``trainLabels.csv`` (``image, level``) with ``train/<image>.jpeg``, where
``image`` is ``<patient>_left`` or ``<patient>_right``; the patient id is the
prefix and the eye goes to ``extra["eye"]``. The EyePACS test labels
(``retinopathy_solution.csv``: ``image, level, Usage``) are read as the test
split when present, with images under ``test/``.

Grades follow the international clinical DR scale; grade 0 (no DR) is the
healthy class. ``task="referable"`` gives the binary referable-DR task
(grade >= 2, i.e. moderate or worse).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..cases import Case
from ..errors import ManifestError
from ..tasks import Task
from .registry import (DATASETS, DatasetAdapter, ImageIndex, Problems, check_missing_option, choose, existing,
                       folder_of, locate, make_table, read_csv, require_columns, rows, text)

DR_CLASSES = ["grade 0", "grade 1", "grade 2", "grade 3", "grade 4"]
DR_DESCRIPTIONS = {
    "grade 0": "no diabetic retinopathy",
    "grade 1": "mild non-proliferative diabetic retinopathy (microaneurysms only)",
    "grade 2": "moderate non-proliferative diabetic retinopathy",
    "grade 3": "severe non-proliferative diabetic retinopathy",
    "grade 4": "proliferative diabetic retinopathy",
}
_SUFFIXES = (".png", ".jpeg", ".jpg", ".tif", ".tiff")


def dr_task(task: str = "grade", name: str = "dr_grading") -> Task:
    if task == "referable":
        return Task(name=f"{name}_referable", question="Does this fundus photograph show referable diabetic retinopathy?",
                    classes=["no referable DR", "referable DR"], healthy_class="no referable DR",
                    descriptions={"no referable DR": "no or mild diabetic retinopathy (grade 0-1)",
                                  "referable DR": "moderate, severe or proliferative diabetic retinopathy (grade 2-4)"},
                    modality="fundus photograph")
    return Task(name=name, question="What is the diabetic retinopathy grade of this fundus photograph?",
                classes=list(DR_CLASSES), healthy_class="grade 0", descriptions=dict(DR_DESCRIPTIONS),
                modality="fundus photograph")


def dr_label(grade: int, task: str) -> str:
    if task == "referable":
        return "referable DR" if grade >= 2 else "no referable DR"
    return DR_CLASSES[grade]


def _detect(root: Path) -> tuple[str, Path]:
    if root.is_file():
        frame_columns = read_csv(root).columns
        return ("eyepacs" if "level" in frame_columns else "aptos"), root
    if (root / "train.csv").is_file():
        return "aptos", root / "train.csv"
    for name in ("trainLabels.csv", "trainLabels.csv.gz"):
        if (root / name).is_file():
            return "eyepacs", root / name
    raise ManifestError(f"{root}: no APTOS train.csv or EyePACS trainLabels.csv found")


def load_aptos(root: Path, layout: str = "auto", csv: str | Path | None = None, image_dir: str | Path | None = None,
               task: str = "grade", missing: str = "error") -> tuple:
    """APTOS 2019 or EyePACS as (CaseTable, Task); ``layout`` auto-detects from the CSV present.

    ``task``: ``grade`` (5 classes, healthy ``grade 0``) or ``referable`` (binary, grade >= 2).
    """
    task = choose("aptos", "task", task, ("grade", "referable"))
    layout = choose("aptos", "layout", layout, ("auto", "aptos", "eyepacs"))
    missing = check_missing_option("aptos", missing)
    if csv is not None:
        path = Path(csv).expanduser()
        path = path if path.is_absolute() else folder_of(root) / path
        if not path.is_file():
            raise ManifestError(f"{path}: grading CSV not found")
        detected = "eyepacs" if "level" in read_csv(path).columns else "aptos"
    else:
        detected, path = _detect(root)
    layout = detected if layout == "auto" else layout
    base = folder_of(path)
    # (csv, split recorded, image folder prefix): APTOS labels only its training set, so no split is claimed
    sources = [(path, "train" if layout == "eyepacs" else None, "train")]
    solution = base / "retinopathy_solution.csv"
    if layout == "eyepacs" and csv is None and solution.is_file():
        sources.append((solution, "test", "test"))
    cases = []
    for source, split, prefix in sources:
        frame = read_csv(source, "grading CSV")
        id_column, grade_column = ("image", "level") if layout == "eyepacs" else ("id_code", "diagnosis")
        require_columns(frame, (id_column, grade_column), source)
        if image_dir is not None:
            folder = Path(image_dir).expanduser()
            folders = [folder if folder.is_absolute() else base / folder]
        elif layout == "eyepacs":
            folders = existing([base / prefix, base / f"{prefix}_images"]) or [base]
        else:
            folders = existing([base / f"{prefix}_images", base / prefix]) or [base]
        index = ImageIndex(folders)
        problems = Problems(source)
        for row, record in rows(frame):
            image_id = text(record.get(id_column))
            if image_id is None:
                problems.add(row, id_column, "empty")
                continue
            grade = problems.number(row, grade_column, record.get(grade_column), integer=True, minimum=0, maximum=4,
                                    required=True)
            if grade is None:
                continue
            image = locate(problems, row, id_column, image_id, index, missing, _SUFFIXES)
            if image is None:
                continue
            extra: dict = {"grade": grade}
            patient = image_id
            if layout == "eyepacs":
                match = re.fullmatch(r"(.+?)_(left|right)", image_id, flags=re.IGNORECASE)
                if match:
                    patient = match.group(1)
                    extra["eye"] = match.group(2).lower()
                if text(record.get("Usage")):
                    extra["usage"] = text(record.get("Usage"))
            cases.append(Case(case_id=image_id, images=(str(image),), label=dr_label(grade, task),
                              patient_id=patient, split=split, extra=extra))
        problems.raise_if_any()
    return make_table(cases, path), dr_task(task, "eyepacs" if layout == "eyepacs" else "aptos")


DATASETS.register("aptos", DatasetAdapter(
    load_aptos, classes=lambda: {f"task={t}": dr_task(t) for t in ("grade", "referable")}))
