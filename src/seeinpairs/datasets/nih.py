"""NIH ChestX-ray14 (Wang et al. 2017), in NIH's layout or the shared ``nih_cxr14_nih1000`` layout.

NIH layout: ``Data_Entry_2017_v2020.csv`` (or ``Data_Entry_2017.csv``) with
``Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient
Gender, View Position, ...``; ``Finding Labels`` is '|'-separated or ``No
Finding``. Images are found by file name anywhere under ``images*/`` folders
(``images_001/images/...``) or under ``image_dir``. The official split lists
``train_val_list.txt`` / ``test_list.txt`` give the splits (train / test) when present.

Shared layout (``metadata.csv`` with ``image_index, split, label, path,
finding_labels, follow_up, patient_id, patient_age, patient_sex,
view_position``): images come from ``path``, splits from ``split`` (valid ->
val) and, for the binary task, labels from ``label`` (the folder label, 0
normal / 1 abnormal), which disagrees with NIH's table for one image; pass
``label_source="findings"`` to use the findings instead.

Patient ids are written with 8 digits as in image names (``00000231``); the
view (PA/AP) is ``extra["view"]``. Ages recorded above 120 (a known error in
NIH's table) become None with the raw value in ``extra["age_raw"]``. Use
:func:`resplit_by_patient` when a split must not share patients.
"""

from __future__ import annotations

from pathlib import Path

from ..cases import Case
from ..errors import ManifestError
from .chexpert import check_cxr_options, cxr_class_table, cxr_task
from .registry import (DATASETS, DatasetAdapter, ImageIndex, Problems, ResplitReport, check_file, check_missing_option,
                       choose, folder_of, image_folders, locate, make_table, normal_split, patients_across_splits,
                       read_csv, readable, require_columns, resplit_by_patient, rows, split_root, text)

__all__ = ["NIH_FINDINGS", "load_nih", "resplit_by_patient", "patients_across_splits", "ResplitReport"]

NIH_FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
NO_FINDING = "No Finding"

_NATIVE = {"image": "Image Index", "findings": "Finding Labels", "patient": "Patient ID", "age": "Patient Age",
           "sex": "Patient Gender", "view": "View Position", "follow_up": "Follow-up #"}
_SHARED = {"image": "image_index", "findings": "finding_labels", "patient": "patient_id", "age": "patient_age",
           "sex": "patient_sex", "view": "view_position", "follow_up": "follow_up"}
_DEFAULT_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "metadata.csv")


def _split_lists(base: Path) -> dict[str, str]:
    splits: dict[str, str] = {}
    for name, split in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
        path = base / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8").split():
                splits[line.strip()] = split
    return splits


def _patient(problems: Problems, row: int, column: str, value) -> str | None:
    """NIH patient numbers as the 8-digit ids used in image file names."""
    number = problems.number(row, column, value, integer=True, minimum=0, required=True)
    return None if number is None else f"{number:08d}"


def load_nih(root: Path, csv: str | Path | None = None, image_dir: str | Path | None = None, task: str = "binary",
             finding: str | None = None, findings: list[str] | None = None, label_source: str = "auto",
             split_lists: bool = True, missing: str = "error") -> tuple:
    """NIH ChestX-ray14 as (CaseTable, Task).

    ``task``: ``binary`` (normal = No Finding vs abnormal), ``finding`` (one
    finding vs No Finding, e.g. ``finding="Pneumonia"``) or ``multiclass``
    (No Finding plus single-finding images). ``missing='drop'`` keeps only rows
    whose image is present (for a partial download).
    """
    task, finding, chosen = check_cxr_options("nih", task, finding, findings, NIH_FINDINGS)
    label_source = choose("nih", "label_source", label_source, ("auto", "label", "findings"))
    missing = check_missing_option("nih", missing)
    path = split_root(root, _DEFAULT_FILES, "NIH Data_Entry CSV or metadata.csv", csv)
    base = folder_of(path)
    frame = read_csv(path, "NIH metadata CSV")
    columns = _NATIVE if _NATIVE["image"] in frame.columns else (_SHARED if _SHARED["image"] in frame.columns else _NATIVE)
    shared = columns is _SHARED
    require_columns(frame, [columns[k] for k in ("image", "findings", "patient", "age", "sex", "view")], path)
    use_label = task == "binary" and label_source != "findings" and "label" in frame.columns
    if label_source == "label" and "label" not in frame.columns:
        raise ManifestError(f"{path}: label_source='label' needs a 'label' column (found: {', '.join(frame.columns)})")
    use_path = "path" in frame.columns and image_dir is None
    if image_dir is not None:
        folder = Path(image_dir).expanduser()
        folders = [folder if folder.is_absolute() else base / folder]
    else:
        folders = image_folders(base, ("images*",)) or [base]
    index = ImageIndex(folders)
    official = _split_lists(base) if (split_lists and not shared) else {}
    known = {f.lower(): f for f in NIH_FINDINGS}
    problems = Problems(path)
    cases = []
    for row, record in rows(frame):
        name = text(record.get(columns["image"]))
        if name is None:
            problems.add(row, columns["image"], "empty")
            continue
        raw_findings = text(record.get(columns["findings"]))
        if raw_findings is None:
            problems.add(row, columns["findings"], "empty (use 'No Finding' for normal images)")
            continue
        positives = []
        bad = False
        for item in (p.strip() for p in raw_findings.split("|")):
            if item.lower() == NO_FINDING.lower():
                continue
            if item.replace(" ", "_").lower() not in known:
                problems.add(row, columns["findings"], f"'{item}' is not an NIH finding")
                bad = True
            else:
                positives.append(known[item.replace(" ", "_").lower()])
        patient = _patient(problems, row, columns["patient"], record.get(columns["patient"]))
        age, raw_age = problems.age(row, columns["age"], record.get(columns["age"]))
        sex = problems.sex(row, columns["sex"], record.get(columns["sex"]))
        follow_up = problems.number(row, columns["follow_up"], record.get(columns["follow_up"]), integer=True,
                                    minimum=0) if columns["follow_up"] in frame.columns else None
        binary = None
        if use_label:
            binary = problems.number(row, "label", record.get("label"), integer=True, minimum=0, maximum=1,
                                     required=True)
            if binary is None:
                continue
        if bad or patient is None:
            continue
        if task == "binary":
            label = ("abnormal" if binary else "normal") if use_label else ("abnormal" if positives else "normal")
        elif not positives:
            label = "normal"
        elif task == "finding":
            label = readable(finding) if finding in positives else None
        else:
            label = readable(positives[0]) if len(positives) == 1 and positives[0] in chosen else None
        if label is None:
            continue
        if use_path and text(record.get("path")):
            relative = Path(text(record["path"]))
            image = check_file(problems, row, "path", relative if relative.is_absolute() else base / relative, missing)
        else:
            image = locate(problems, row, columns["image"], name, index, missing)
        if image is None:
            continue
        split = normal_split(record.get("split")) if shared else official.get(name)
        extra: dict = {"view": (text(record.get(columns["view"])) or "").upper() or None,
                       "findings": "|".join(readable(p) for p in positives)}
        if extra["view"] is None:
            del extra["view"]
        if follow_up is not None:
            extra["follow_up"] = follow_up
        if raw_age:
            extra["age_raw"] = raw_age
        cases.append(Case(case_id=name.rsplit(".", 1)[0], images=(str(image),), label=label, patient_id=patient,
                          age=age, sex=sex, split=split, extra=extra))
    problems.raise_if_any()
    return make_table(cases, path), cxr_task(task, finding, chosen, "nih")


DATASETS.register("nih", DatasetAdapter(load_nih, classes=lambda: cxr_class_table("nih", NIH_FINDINGS)))
