"""CheXpert (Irvin et al. 2019), and the CheXpert-labeller logic shared with MIMIC-CXR.

Native layout: ``CheXpert-v1.0-small/{train,valid}.csv`` with ``Path, Sex, Age,
Frontal/Lateral, AP/PA`` and 14 label columns (1 positive, 0 negative, -1
uncertain, blank not mentioned); ``Path`` is relative to the folder that holds
``CheXpert-v1.0-small`` (``root`` may be either folder). The patient id comes
from the path (``patient00001``), the study from ``study1``.

Labels (shared with MIMIC-CXR-JPG): blank counts as negative; ``uncertain``
maps -1 to positive (``ones``), negative (``zeros``, default) or drops the
image when its label would depend on it (``ignore``). A case is abnormal when
one of the 12 pathology columns is positive (Support Devices is not a
pathology) and ``normal`` when none is and ``No Finding`` is 1; images that are
neither (e.g. only uncertain mentions under ``zeros``, or nothing labelled at
all) are left out, so the healthy reference bank holds only images the
labeller called No Finding.

Tasks: ``binary`` (normal vs abnormal, default), ``finding`` (one finding, e.g.
``finding="Pneumonia"``, against normal images; images with only other
findings are dropped) and ``multiclass`` (normal plus each finding; images with
several findings are dropped). Frontal views only unless ``views`` says otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..cases import Case
from ..errors import ConfigError, ManifestError
from ..tasks import Task
from .registry import (DATASETS, DatasetAdapter, Problems, check_file, check_missing_option, choose, make_table,
                       read_csv, readable, require_columns, rows, text)

CHEXPERT_PATHOLOGIES = [
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
]
#: every label column of the CheXpert labeller: No Finding, 12 pathologies, Support Devices
CHEXPERT_LABELS = ["No Finding", *CHEXPERT_PATHOLOGIES, "Support Devices"]
CHEXPERT_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
CXR_TASKS = ("binary", "finding", "multiclass")

FINDING_DESCRIPTIONS = {
    "atelectasis": "collapse or incomplete expansion of lung tissue",
    "cardiomegaly": "an enlarged cardiac silhouette",
    "consolidation": "lung airspace filled with fluid or cells",
    "edema": "pulmonary oedema (fluid in the lungs)",
    "effusion": "fluid in the pleural space",
    "pleural effusion": "fluid in the pleural space",
    "emphysema": "hyperinflated lungs with destroyed alveoli",
    "enlarged cardiomediastinum": "a widened cardiomediastinal silhouette",
    "fibrosis": "scarring of lung tissue",
    "fracture": "a bone fracture",
    "hernia": "a hiatal or diaphragmatic hernia",
    "infiltration": "an infiltrate in the lung",
    "lung lesion": "a focal lung lesion (nodule or mass)",
    "lung opacity": "an area of increased lung opacity",
    "mass": "a lung mass (over 3 cm)",
    "nodule": "a lung nodule (up to 3 cm)",
    "pleural other": "another pleural abnormality",
    "pleural thickening": "thickening of the pleura",
    "pneumonia": "pneumonia (infection of the lung)",
    "pneumothorax": "air in the pleural space",
}


def cxr_task(task: str, finding: str | None, findings: Sequence[str], name: str) -> Task:
    """The chest X-ray task for ``task`` in binary/finding/multiclass (class names are lower-case findings)."""
    modality = "chest x-ray"
    if task == "binary":
        return Task(name=f"{name}_binary", question="Does this chest X-ray show any abnormal finding?",
                    classes=["normal", "abnormal"], healthy_class="normal",
                    descriptions={"normal": "no finding", "abnormal": "one or more findings: "
                                  + ", ".join(readable(f) for f in findings)},
                    modality=modality)
    if task == "finding":
        cls = readable(finding)
        return Task(name=f"{name}_{cls.replace(' ', '_')}", question=f"Does this chest X-ray show {cls}?",
                    classes=["normal", cls], healthy_class="normal",
                    descriptions={"normal": "no finding", cls: FINDING_DESCRIPTIONS.get(cls, cls)},
                    modality=modality)
    classes = ["normal", *(readable(f) for f in findings)]
    return Task(name=f"{name}_multiclass", question="Which finding does this chest X-ray show?",
                classes=classes, healthy_class="normal",
                descriptions={"normal": "no finding",
                              **{c: FINDING_DESCRIPTIONS[c] for c in classes[1:] if c in FINDING_DESCRIPTIONS}},
                modality=modality)


def cxr_class_table(name: str, known: Sequence[str]) -> dict[str, Task | str]:
    """The class names of each chest X-ray task (multiclass with every finding; ``findings=`` narrows it)."""
    return {"task=binary": cxr_task("binary", None, known, name),
            "task=finding": f"normal (healthy), the finding= given (one of "
                            f"{', '.join(readable(k) for k in known)})",
            "task=multiclass": cxr_task("multiclass", None, known, name)}


def check_cxr_options(dataset: str, task: str, finding: str | None, findings: Sequence[str] | None,
                      known: Sequence[str]) -> tuple[str, str | None, list[str]]:
    """Validate task/finding/findings against the data set's findings; returns them canonically spelled."""
    task = choose(dataset, "task", task, CXR_TASKS)
    by_name = {readable(k): k for k in known}

    def canonical(value: str) -> str:
        key = readable(value)
        if key not in by_name:
            raise ConfigError(f"dataset '{dataset}': '{value}' is not a finding of this data set "
                              f"(known: {', '.join(known)})")
        return by_name[key]

    if task == "finding":
        if finding is None:
            raise ConfigError(f"dataset '{dataset}': task='finding' needs finding=... (one of {', '.join(known)})")
        finding = canonical(finding)
    elif finding is not None:
        raise ConfigError(f"dataset '{dataset}': finding= is only used with task='finding'")
    chosen = [canonical(f) for f in findings] if findings is not None else list(known)
    if not chosen:
        raise ConfigError(f"dataset '{dataset}': findings must not be empty")
    return task, finding, chosen


def parse_flags(problems: Problems, row: int, record: Mapping[str, Any], columns: Sequence[str]) -> dict[str, int | None] | None:
    """CheXpert-style label cells as 1/0/-1/None; a cell of another value is a problem (None returned)."""
    values: dict[str, int | None] = {}
    ok = True
    for column in columns:
        raw = text(record.get(column))
        if raw is None:
            values[column] = None
            continue
        try:
            number = float(raw)
        except ValueError:
            number = float("nan")
        if number not in (1.0, 0.0, -1.0):
            problems.add(row, column, f"'{raw}' is not a label (expected 1, 0, -1 or blank)")
            ok = False
            continue
        values[column] = int(number)
    return values if ok else None


def _label_under(values: Mapping[str, int | None], positive_value: int, task: str, finding: str | None,
                 findings: Sequence[str], pathologies: Sequence[str]) -> str | None:
    positive = [p for p in pathologies if values.get(p) == 1 or (values.get(p) == -1 and positive_value == 1)]
    if positive:
        if task == "binary":
            return "abnormal"
        if task == "finding":
            return readable(finding) if finding in positive else None
        return readable(positive[0]) if len(positive) == 1 and positive[0] in findings else None
    # healthy means the labeller said No Finding (blank = nothing said: neither healthy nor abnormal)
    if "No Finding" in values and values["No Finding"] != 1:
        return None
    return "normal"


def label_from_flags(values: Mapping[str, int | None], policy: str, task: str, finding: str | None,
                     findings: Sequence[str], pathologies: Sequence[str] = CHEXPERT_PATHOLOGIES) -> str | None:
    """The class of one image under an uncertainty policy, or None (dropped)."""
    ones = _label_under(values, 1, task, finding, findings, pathologies)
    if policy == "ones":
        return ones
    zeros = _label_under(values, 0, task, finding, findings, pathologies)
    if policy == "zeros":
        return zeros
    return ones if ones == zeros else None  # ignore: the label must not depend on uncertain mentions


def finding_extras(values: Mapping[str, int | None]) -> dict[str, str]:
    """``findings`` (positive) and ``uncertain`` (-1) as '|'-joined lower-case names."""
    return {"findings": "|".join(readable(k) for k, v in values.items() if v == 1 and k != "No Finding"),
            "uncertain": "|".join(readable(k) for k, v in values.items() if v == -1)}


def view_filter(dataset: str, views: str | Sequence[str]) -> set[str] | None:
    """``frontal`` (PA, AP and unspecified frontal), ``lateral``, ``all``, or explicit positions like ['PA']."""
    if isinstance(views, str):
        key = views.strip().lower()
        if key == "all":
            return None
        if key in ("frontal", "lateral"):
            return {key}
        views = [views]
    return {str(v).strip().upper() for v in views}


def view_allowed(wanted: set[str] | None, frontal: bool, position: str | None) -> bool:
    if wanted is None:
        return True
    if "frontal" in wanted and frontal:
        return True
    if "lateral" in wanted and not frontal:
        return True
    return position is not None and position.upper() in wanted


_SPLIT_FILES = {"train.csv": "train", "valid.csv": "val", "test.csv": "test", "test_labels.csv": "test"}


def _find_csvs(root: Path, csv: str | Path | None) -> tuple[list[tuple[Path, str | None]], Path]:
    if csv is not None:
        path = Path(csv).expanduser()
        path = path if path.is_absolute() else (root.parent if root.is_file() else root) / path
        return [(path, _SPLIT_FILES.get(path.name))], path.parent
    if root.is_file():
        return [(root, _SPLIT_FILES.get(root.name))], root.parent
    for folder in (root, root / "CheXpert-v1.0-small", root / "CheXpert-v1.0"):
        found = [(folder / name, split) for name, split in _SPLIT_FILES.items()
                 if name != "test_labels.csv" and (folder / name).is_file()]
        if found:
            return found, folder
    raise ManifestError(f"{root}: no CheXpert train.csv/valid.csv found (looked in it and CheXpert-v1.0-small/)")


def _resolve(base_folder: Path, relative: str) -> Path:
    """``Path`` values start with the data set folder's name; try the folder's parent, then the folder."""
    rel = Path(relative)
    if rel.is_absolute():
        return rel
    for anchor in (base_folder.parent, base_folder):
        candidate = anchor / rel
        if candidate.is_file():
            return candidate
    parts = rel.parts
    if len(parts) > 1 and (base_folder / Path(*parts[1:])).is_file():
        return base_folder / Path(*parts[1:])
    return base_folder.parent / rel


def load_chexpert(root: Path, csv: str | Path | None = None, task: str = "binary", finding: str | None = None,
                  findings: list[str] | None = None, uncertain: str = "zeros", views: str | list[str] = "frontal",
                  missing: str = "error", check_files: bool = True) -> tuple:
    """CheXpert as (CaseTable, Task); splits train/val(id) from train.csv/valid.csv."""
    task, finding, chosen = check_cxr_options("chexpert", task, finding, findings, CHEXPERT_PATHOLOGIES)
    policy = choose("chexpert", "uncertain", uncertain, UNCERTAIN_POLICIES)
    missing = check_missing_option("chexpert", missing)
    wanted_views = view_filter("chexpert", views)
    sources, base = _find_csvs(root, csv)
    cases = []
    for path, split in sources:
        frame = read_csv(path, "CheXpert CSV")
        require_columns(frame, ["Path", "Sex", "Age", "Frontal/Lateral", *CHEXPERT_PATHOLOGIES], path)
        label_columns = [c for c in CHEXPERT_LABELS if c in frame.columns]
        problems = Problems(path)
        for row, record in rows(frame):
            relative = text(record.get("Path"))
            if relative is None:
                problems.add(row, "Path", "empty")
                continue
            frontal_text = (text(record.get("Frontal/Lateral")) or "").lower()
            if frontal_text not in ("frontal", "lateral"):
                problems.add(row, "Frontal/Lateral", f"'{frontal_text}' is not Frontal or Lateral")
                continue
            position = text(record.get("AP/PA"))
            frontal = frontal_text == "frontal"
            values = parse_flags(problems, row, record, label_columns)
            age, raw_age = problems.age(row, "Age", record.get("Age"))
            sex = problems.sex(row, "Sex", record.get("Sex"))
            if values is None or not view_allowed(wanted_views, frontal, position):
                continue
            label = label_from_flags(values, policy, task, finding, chosen)
            if label is None:
                continue
            image = _resolve(base, relative)
            if check_files and check_file(problems, row, "Path", image, missing) is None:
                continue
            patient = re.search(r"(patient\d+)", relative)
            study = re.search(r"(study\d+)", relative)
            case_split = split
            if case_split is None:
                parts = Path(relative).parts
                case_split = next((_SPLIT_FILES.get(f"{p}.csv") for p in parts if f"{p}.csv" in _SPLIT_FILES), None)
            case_id = re.sub(r"^CheXpert-v1\.0(-small)?/", "", relative).rsplit(".", 1)[0]
            extra: dict = {"view": (position or ("LATERAL" if not frontal else "FRONTAL")).upper(),
                           "frontal": frontal, **finding_extras(values)}
            if patient and study:
                extra["study_id"] = f"{patient.group(1)}/{study.group(1)}"
            if raw_age:
                extra["age_raw"] = raw_age
            cases.append(Case(case_id=case_id, images=(str(image),), label=label,
                              patient_id=patient.group(1) if patient else case_id, age=age, sex=sex,
                              split=case_split, extra=extra))
        problems.raise_if_any()
    return make_table(cases, sources[0][0]), cxr_task(task, finding, chosen, "chexpert")


DATASETS.register("chexpert", DatasetAdapter(
    load_chexpert, classes=lambda: cxr_class_table("chexpert", CHEXPERT_PATHOLOGIES)))
