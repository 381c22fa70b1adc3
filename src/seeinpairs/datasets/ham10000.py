"""HAM10000 (Tschandl et al. 2018): dermoscopic images of pigmented lesions, 7 diagnoses.

Native layout: ``HAM10000_metadata.csv`` with ``lesion_id, image_id, dx,
dx_type, age, sex, localization, dataset`` and images ``<image_id>.jpg`` in
``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/`` (or any folders
given as ``image_dirs``; a ``path`` column, as in the shared subset, wins).

Mapping: ``image_id`` -> case_id, ``lesion_id`` -> patient_id (HAM10000 has no
patient id; several images of one lesion must stay together), ``dataset`` (the
acquisition source, e.g. vidir_molemax, rosendahl) -> site, ``localization`` ->
``extra["localization"]`` (and ``extra["body_site"]``), usable as a match
attribute by the demographic selector.

There is no healthy class in a lesion data set: benign melanocytic nevi
(``nv``) serve as the healthy-like reference class. That is a choice, stated in
the task's class description, and should be stated in any report.
"""

from __future__ import annotations

from pathlib import Path

from ..cases import Case
from ..tasks import Task
from .registry import (DATASETS, DatasetAdapter, ImageIndex, Problems, check_file, check_missing_option, choose,
                       existing, folder_of, locate, make_table, normal_split, read_csv, require_columns, rows,
                       split_root, text)

HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
HAM_DESCRIPTIONS = {
    "akiec": "actinic keratosis or intraepithelial carcinoma (Bowen's disease)",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion (solar lentigo, seborrheic keratosis, lichen planus-like keratosis)",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "benign melanocytic nevus (used as the healthy-like reference class: a choice, nevi are benign lesions, "
          "not healthy skin)",
    "vasc": "vascular lesion (angioma, angiokeratoma, pyogenic granuloma, haemorrhage)",
}
MALIGNANT = {"akiec", "bcc", "mel"}
HAM_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset")
_DEFAULT_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", "images")


def ham_task(task: str) -> Task:
    if task == "multiclass":
        return Task(name="ham10000", question="Which diagnosis does this dermoscopic image of a skin lesion show?",
                    classes=list(HAM_CLASSES), healthy_class="nv", descriptions=dict(HAM_DESCRIPTIONS),
                    modality="dermoscopy")
    if task == "nv_vs_other":
        return Task(name="ham10000_nv_vs_other",
                    question="Is this skin lesion a benign melanocytic nevus or another lesion?",
                    classes=["nv", "other"], healthy_class="nv",
                    descriptions={"nv": HAM_DESCRIPTIONS["nv"],
                                  "other": "any other lesion: melanoma, carcinoma, keratosis, dermatofibroma, vascular"},
                    modality="dermoscopy")
    return Task(name="ham10000_benign_malignant", question="Is this skin lesion benign or malignant?",
                classes=["benign", "malignant"], healthy_class="benign",
                descriptions={"benign": "benign lesion: nevus, benign keratosis, dermatofibroma or vascular lesion "
                                        "(the healthy-like reference class, a choice)",
                              "malignant": "malignant or pre-malignant lesion: melanoma, basal cell carcinoma, "
                                           "actinic keratosis or intraepithelial carcinoma"},
                modality="dermoscopy")


def _label(dx: str, task: str) -> str:
    if task == "multiclass":
        return dx
    if task == "nv_vs_other":
        return "nv" if dx == "nv" else "other"
    return "malignant" if dx in MALIGNANT else "benign"


def load_ham10000(root: Path, csv: str | Path | None = None, image_dirs: list[str | Path] | None = None,
                  task: str = "multiclass", missing: str = "error") -> tuple:
    """HAM10000 as (CaseTable, Task).

    ``task``: ``multiclass`` (the 7 diagnoses, healthy-like ``nv``), ``nv_vs_other``
    or ``benign_malignant`` (mel, bcc, akiec malignant). ``missing='drop'`` skips
    rows whose image is absent instead of raising.
    """
    task = choose("ham10000", "task", task, ("multiclass", "nv_vs_other", "benign_malignant"))
    missing = check_missing_option("ham10000", missing)
    path = split_root(root, ("HAM10000_metadata.csv", "HAM10000_metadata", "metadata.csv"), "HAM10000 metadata CSV", csv)
    base = folder_of(path)
    frame = read_csv(path, "HAM10000 metadata CSV")
    require_columns(frame, ("lesion_id", "image_id", "dx"), path)
    has_path = "path" in frame.columns
    if image_dirs is not None:
        folders = [Path(d).expanduser() if Path(d).expanduser().is_absolute() else base / d for d in image_dirs]
        index = ImageIndex(folders)
    else:
        folders = existing(base / name for name in _DEFAULT_FOLDERS)
        index = ImageIndex(folders or [base])
    problems = Problems(path)
    cases = []
    for row, record in rows(frame):
        image_id = text(record.get("image_id"))
        if image_id is None:
            problems.add(row, "image_id", "empty")
            continue
        dx = (text(record.get("dx")) or "").lower()
        if dx not in HAM_CLASSES:
            problems.add(row, "dx", f"'{dx}' is not one of {', '.join(HAM_CLASSES)}")
            continue
        age, raw_age = problems.age(row, "age", record.get("age"))
        sex = problems.sex(row, "sex", record.get("sex"))
        if has_path and text(record.get("path")) and image_dirs is None:
            relative = Path(text(record["path"]))
            image = check_file(problems, row, "path", relative if relative.is_absolute() else base / relative, missing)
        else:
            image = locate(problems, row, "image_id", image_id, index, missing, (".jpg", ".jpeg", ".png"))
        if image is None:
            continue
        localization = text(record.get("localization"))
        extra = {"dx": dx}
        for column in ("dx_type",):
            if text(record.get(column)):
                extra[column] = text(record.get(column))
        if localization:
            extra["localization"] = localization
            extra["body_site"] = localization
        if raw_age:
            extra["age_raw"] = raw_age
        cases.append(Case(case_id=image_id, images=(str(image),), label=_label(dx, task),
                          patient_id=text(record.get("lesion_id")) or image_id, age=age, sex=sex,
                          site=text(record.get("dataset")), split=normal_split(record.get("split")), extra=extra))
    problems.raise_if_any()
    return make_table(cases, path), ham_task(task)


DATASETS.register("ham10000", DatasetAdapter(
    load_ham10000, classes=lambda: {f"task={t}": ham_task(t) for t in ("multiclass", "nv_vs_other", "benign_malignant")}))
