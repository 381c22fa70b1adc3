"""MIMIC-CXR-JPG 2.0 (Johnson et al. 2019).

Native layout (``root`` = the ``mimic-cxr-jpg/2.0.0`` folder):
``mimic-cxr-2.0.0-metadata.csv`` (one row per image: ``dicom_id, subject_id,
study_id, ViewPosition, ...``), ``mimic-cxr-2.0.0-chexpert.csv`` (one row per
study: ``subject_id, study_id`` and the 14 CheXpert labels), optionally
``mimic-cxr-2.0.0-split.csv`` (``dicom_id, study_id, subject_id, split`` with
train/validate/test); each may be gzipped (``.csv.gz``). Images are
``files/p<first two digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.

Labels follow the CheXpert rules of :mod:`seeinpairs.datasets.chexpert`
(``normal`` = the labeller's No Finding, with no pathology positive). MIMIC-CXR has no age or
sex; a MIMIC-IV ``patients.csv(.gz)`` (``subject_id, gender, anchor_age``) in
``root`` or given as ``patients_csv`` fills them in.
"""

from __future__ import annotations

from pathlib import Path

from ..cases import Case
from ..errors import ManifestError
from .chexpert import (CHEXPERT_LABELS, CHEXPERT_PATHOLOGIES, UNCERTAIN_POLICIES, check_cxr_options,
                       cxr_class_table, cxr_task,
                       finding_extras, label_from_flags, parse_flags, view_allowed, view_filter)
from .registry import (DATASETS, DatasetAdapter, Problems, check_file, check_missing_option, choose, make_table,
                       normal_split, read_csv, require_columns, rows, text)

PREFIX = "mimic-cxr-2.0.0"


def _file(root: Path, suffix: str, required: bool = True) -> Path | None:
    for name in (f"{PREFIX}-{suffix}.csv", f"{PREFIX}-{suffix}.csv.gz"):
        if (root / name).is_file():
            return root / name
    if required:
        raise ManifestError(f"{root / f'{PREFIX}-{suffix}.csv'}: MIMIC-CXR {suffix} file not found (.csv or .csv.gz)")
    return None


def _ids(problems: Problems, row: int, record: dict, columns: tuple[str, ...]) -> tuple[int, ...] | None:
    values = [problems.number(row, c, record.get(c), integer=True, minimum=0, required=True) for c in columns]
    return None if any(v is None for v in values) else tuple(values)


def load_mimic(root: Path, task: str = "binary", finding: str | None = None, findings: list[str] | None = None,
               uncertain: str = "zeros", views: str | list[str] = "frontal", labeler: str = "chexpert",
               patients_csv: str | Path | None = None, missing: str = "error", check_files: bool = True) -> tuple:
    """MIMIC-CXR-JPG as (CaseTable, Task); ``labeler`` chexpert or negbio picks the label file."""
    task, finding, chosen = check_cxr_options("mimic", task, finding, findings, CHEXPERT_PATHOLOGIES)
    policy = choose("mimic", "uncertain", uncertain, UNCERTAIN_POLICIES)
    labeler = choose("mimic", "labeler", labeler, ("chexpert", "negbio"))
    missing = check_missing_option("mimic", missing)
    wanted_views = view_filter("mimic", views)
    root = root.parent if root.is_file() else root

    meta_path = _file(root, "metadata")
    meta = read_csv(meta_path, "MIMIC-CXR metadata")
    require_columns(meta, ("dicom_id", "subject_id", "study_id", "ViewPosition"), meta_path)
    label_path = _file(root, labeler)
    labels = read_csv(label_path, f"MIMIC-CXR {labeler} labels")
    require_columns(labels, ("subject_id", "study_id", *CHEXPERT_PATHOLOGIES), label_path)
    label_columns = [c for c in CHEXPERT_LABELS if c in labels.columns]

    problems = Problems(label_path)
    study_flags: dict[tuple[int, int], dict] = {}
    for row, record in rows(labels):
        ids = _ids(problems, row, record, ("subject_id", "study_id"))
        values = parse_flags(problems, row, record, label_columns)
        if ids is not None and values is not None:
            study_flags[ids] = values
    problems.raise_if_any()

    splits: dict[str, str | None] = {}
    split_path = _file(root, "split", required=False)
    if split_path is not None:
        frame = read_csv(split_path, "MIMIC-CXR split file")
        require_columns(frame, ("dicom_id", "split"), split_path)
        splits = {text(r["dicom_id"]): normal_split(r["split"]) for _, r in rows(frame)}

    demographics: dict[int, tuple] = {}
    patients_path = None
    if patients_csv is not None:
        patients_path = Path(patients_csv).expanduser()
        patients_path = patients_path if patients_path.is_absolute() else root / patients_path
    else:
        patients_path = next((root / n for n in ("patients.csv", "patients.csv.gz") if (root / n).is_file()), None)
    if patients_path is not None:
        frame = read_csv(patients_path, "MIMIC-IV patients file")
        require_columns(frame, ("subject_id", "gender", "anchor_age"), patients_path)
        found = Problems(patients_path)
        for row, record in rows(frame):
            subject = found.number(row, "subject_id", record.get("subject_id"), integer=True, required=True)
            age, _ = found.age(row, "anchor_age", record.get("anchor_age"))
            sex = found.sex(row, "gender", record.get("gender"))
            if subject is not None:
                demographics[subject] = (age, sex)
        found.raise_if_any()

    problems = Problems(meta_path)
    cases = []
    for row, record in rows(meta):
        dicom = text(record.get("dicom_id"))
        if dicom is None:
            problems.add(row, "dicom_id", "empty")
            continue
        ids = _ids(problems, row, record, ("subject_id", "study_id"))
        if ids is None:
            continue
        subject, study = ids
        position = (text(record.get("ViewPosition")) or "").upper() or None
        frontal = position in ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD")
        if not view_allowed(wanted_views, frontal, position):
            continue
        values = study_flags.get(ids)
        if values is None:
            continue  # a study the labeller did not label (e.g. no findings/impression section)
        label = label_from_flags(values, policy, task, finding, chosen)
        if label is None:
            continue
        image = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        if check_files and check_file(problems, row, "dicom_id", image, missing) is None:
            continue
        age, sex = demographics.get(subject, (None, None))
        extra: dict = {"study_id": str(study), "frontal": frontal, **finding_extras(values)}
        if position:
            extra["view"] = position
        if text(record.get("StudyDate")):
            extra["study_date"] = text(record.get("StudyDate"))
        cases.append(Case(case_id=dicom, images=(str(image),), label=label, patient_id=str(subject), age=age,
                          sex=sex, split=splits.get(dicom), extra=extra))
    problems.raise_if_any()
    return make_table(cases, meta_path), cxr_task(task, finding, chosen, "mimic")


DATASETS.register("mimic", DatasetAdapter(
    load_mimic, classes=lambda: cxr_class_table("mimic", CHEXPERT_PATHOLOGIES)))
