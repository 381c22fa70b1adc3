"""A folder tree of DICOM files, read from headers only (``stop_before_pixels``).

Every ``*.dcm`` / ``*.dicom`` / suffix-less file under ``root`` is a case:
case_id = SOPInstanceUID (else the file stem), patient_id = PatientID, age =
PatientAge (``062Y`` -> 62), sex = PatientSex, site = InstitutionName (or the
keyword given as ``site_tag``, e.g. ``StationName`` or ``Manufacturer``);
the view (ViewPosition), modality and study/series UIDs go to ``extra``.

Labels come from a CSV (``labels_csv`` with ``label_column``, keyed by the
first of case_id, SOPInstanceUID, file, path, StudyInstanceUID, PatientID it
has, or ``key_column``), or else from a folder name: ``folder_level=0`` is the
folder directly under ``root`` (``root/<label>/.../x.dcm``), ``-1`` the file's
own parent. Files that cannot be read as DICOM are reported together in one
error naming the first few.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cases import Case
from ..errors import ConfigError, ManifestError
from ..tasks import Task
from .registry import (DATASETS, DatasetAdapter, Problems, choose, healthy_or_error, make_table, normal_split, read_csv,
                       require_columns, rows, text)

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_KEYS = ("case_id", "SOPInstanceUID", "file", "path", "StudyInstanceUID", "PatientID")
_MODALITIES = {"CR": "x-ray", "DX": "x-ray", "CT": "CT", "MR": "MRI", "US": "ultrasound", "MG": "mammogram",
               "PT": "PET", "NM": "nuclear medicine image", "XA": "angiogram", "OP": "fundus photograph",
               "OPT": "OCT", "SM": "microscopy slide"}


def _candidates(root: Path) -> list[Path]:
    found = []
    for current, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(current) / name
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            if path.suffix.lower() in DICOM_SUFFIXES or path.suffix == "":
                found.append(path)
    return found


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass  # no preamble: try once more without the check, and accept it only if it has DICOM identity
    except Exception as exc:  # truncated or malformed element data
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if not any(k in dataset for k in ("SOPInstanceUID", "SOPClassUID", "PatientID", "Modality")):
            raise ValueError("not a DICOM file")
        return dataset
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _value(dataset, keyword: str) -> str | None:
    try:
        value = dataset.get(keyword)
    except Exception:  # a malformed element
        return None
    if value is None:
        return None
    if hasattr(value, "value") and not isinstance(value, str):
        value = value.value
    return text(str(value)) if value is not None else None


def load_dicomfolder(root: Path, labels_csv: str | Path | None = None, label_column: str = "label",
                     key_column: str | None = None, folder_level: int = 0, site_tag: str = "InstitutionName",
                     healthy_class: str | None = None, unlabelled: str = "error", question: str | None = None) -> tuple:
    """DICOM headers under ``root`` as (CaseTable, Task).

    ``unlabelled``: ``error`` (default) reports files without a label, ``drop``
    leaves them out. A ``split`` column in ``labels_csv`` sets splits.
    """
    if not root.is_dir():
        raise ManifestError(f"{root}: DICOM folder not found")
    unlabelled = choose("dicomfolder", "unlabelled", unlabelled, ("error", "drop"))
    files = _candidates(root)
    if not files:
        raise ManifestError(f"{root}: no DICOM files (*.dcm, *.dicom or without suffix) found")
    headers = []
    unreadable = []
    for path in files:
        try:
            headers.append((path, _read_header(path)))
        except ValueError as exc:
            unreadable.append(f"{path.relative_to(root)} ({exc})")
    if unreadable:
        shown = "; ".join(unreadable[:5]) + (f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        raise ManifestError(f"{root}: {len(unreadable)} file(s) cannot be read as DICOM: {shown}")

    mapping: dict[str, tuple[str, str | None]] | None = None
    key = None
    csv_path = None
    if labels_csv is not None:
        csv_path = Path(labels_csv).expanduser()
        csv_path = csv_path if csv_path.is_absolute() else root / csv_path
        frame = read_csv(csv_path, "label CSV")
        key = key_column or next((k for k in _KEYS if k in frame.columns), None)
        if key is None:
            raise ManifestError(f"{csv_path}: missing required column(s) — a key column, one of {', '.join(_KEYS)} "
                                f"(found: {', '.join(frame.columns)})")
        require_columns(frame, (key, label_column), csv_path)
        problems = Problems(csv_path)
        mapping = {}
        for row, record in rows(frame):
            k, label = text(record.get(key)), text(record.get(label_column))
            if k is None:
                problems.add(row, key, "empty")
            elif label is None:
                problems.add(row, label_column, "empty")
            else:
                mapping[k] = (label, normal_split(record.get("split")))
        problems.raise_if_any()

    problems = Problems(root, field_kind="tag")
    cases = []
    unlabelled_files = []
    modalities = set()
    for path, dataset in headers:
        relative = path.relative_to(root)
        case_id = _value(dataset, "SOPInstanceUID") or path.stem
        where = f"file '{relative.as_posix()}'"
        age, raw_age = problems.age(where, "PatientAge", _value(dataset, "PatientAge"))
        sex = problems.sex(where, "PatientSex", _value(dataset, "PatientSex"))
        split = None
        if mapping is not None:
            keys = {"case_id": case_id, "SOPInstanceUID": _value(dataset, "SOPInstanceUID"),
                    "file": path.name, "path": relative.as_posix(),
                    "StudyInstanceUID": _value(dataset, "StudyInstanceUID"), "PatientID": _value(dataset, "PatientID")}
            found = mapping.get(keys.get(key) or "") if key in keys else mapping.get(_value(dataset, key) or "")
            label, split = found if found else (None, None)
        else:
            parts = relative.parts[:-1]
            if not parts:
                label = None
            else:
                try:
                    label = parts[folder_level]
                except IndexError:
                    raise ConfigError(f"dataset 'dicomfolder': folder_level={folder_level} is deeper than "
                                      f"{relative}") from None
        if label is None:
            unlabelled_files.append(relative.as_posix())
            continue
        modality = _value(dataset, "Modality")
        if modality:
            modalities.add(modality.upper())
        extra: dict = {"file": relative.as_posix()}
        for keyword, name in (("ViewPosition", "view"), ("Modality", "modality"), ("StudyInstanceUID", "study_id"),
                              ("SeriesInstanceUID", "series_id"), ("BodyPartExamined", "body_part")):
            value = _value(dataset, keyword)
            if value:
                extra[name] = value.upper() if name == "view" else value
        if raw_age:
            extra["age_raw"] = raw_age
        cases.append(Case(case_id=case_id, images=(str(path),), label=label,
                          patient_id=_value(dataset, "PatientID") or case_id, age=age, sex=sex,
                          site=_value(dataset, site_tag), split=split, extra=extra))
    if unlabelled_files and unlabelled == "error":
        where = f"in {csv_path}" if csv_path else "from a folder name (files directly in root)"
        shown = ", ".join(unlabelled_files[:5]) + (" ..." if len(unlabelled_files) > 5 else "")
        raise ManifestError(f"{root}: {len(unlabelled_files)} DICOM file(s) have no label {where}: {shown} "
                            f"(pass unlabelled='drop' to leave them out)")
    problems.raise_if_any()
    seen: dict[str, str] = {}
    for case in cases:
        if case.case_id in seen:
            raise ManifestError(f"{root}: SOPInstanceUID '{case.case_id}' occurs in both {seen[case.case_id]} and "
                                f"{case.extra['file']}")
        seen[case.case_id] = case.extra["file"]
    table = make_table(cases, csv_path or root)
    classes = sorted({c.label for c in cases})
    if len(classes) < 2:
        raise ManifestError(f"{csv_path or root}: only one label ('{classes[0]}'); a task needs at least two")
    healthy = healthy_or_error("dicomfolder", classes, healthy_class)
    ordered = [healthy, *[c for c in classes if c != healthy]]
    modality = _MODALITIES.get(next(iter(modalities)), "medical image") if len(modalities) == 1 else "medical image"
    return table, Task(name=root.name or "dicomfolder",
                       question=question or f"Which of these does the image show: {', '.join(ordered)}?",
                       classes=ordered, healthy_class=healthy, modality=modality)


DATASETS.register("dicomfolder", DatasetAdapter(
    load_dicomfolder, classes="the values of the labels_csv label column (healthy: the one named normal, healthy, "
                              "... or healthy_class=...)"))
