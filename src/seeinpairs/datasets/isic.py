"""ISIC 2019 and ISIC 2020 skin-lesion challenges.

ISIC 2019: ``ISIC_2019_Training_GroundTruth.csv`` (``image`` and one-hot
``MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK``) joined with
``ISIC_2019_Training_Metadata.csv`` (``image, age_approx, anatom_site_general,
lesion_id, sex``); images ``ISIC_2019_Training_Input/<image>.jpg``. The lesion
id is the patient id (ISIC 2019 has none), as for HAM10000.

ISIC 2020: ``train.csv`` (``image_name, patient_id, sex, age_approx,
anatom_site_general_challenge, diagnosis, benign_malignant, target``); images
``train/<image_name>.jpg`` (or ``.dcm``).

The body site goes to ``extra["anatom_site"]`` (and ``extra["body_site"]``).
Healthy-like classes are choices: nevus (``nv``) for the 2019 diagnoses, benign
for the 2020 benign/malignant task.
"""

from __future__ import annotations

from pathlib import Path

from ..cases import Case
from ..errors import ManifestError
from ..tasks import Task
from .registry import (DATASETS, DatasetAdapter, ImageIndex, Problems, check_missing_option, choose, existing,
                       folder_of, locate, make_table, read_csv, require_columns, rows, text)

ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
ISIC2019_DESCRIPTIONS = {
    "mel": "melanoma", "nv": "benign melanocytic nevus (the healthy-like reference class, a choice)",
    "bcc": "basal cell carcinoma", "ak": "actinic keratosis", "bkl": "benign keratosis (solar lentigo, seborrheic "
    "keratosis, lichen planus-like keratosis)", "df": "dermatofibroma", "vasc": "vascular lesion",
    "scc": "squamous cell carcinoma", "unk": "none of the other categories",
}
ISIC2019_MALIGNANT = {"mel", "bcc", "ak", "scc"}
_BINARY = Task(name="isic_benign_malignant", question="Is this skin lesion benign or malignant?",
               classes=["benign", "malignant"], healthy_class="benign",
               descriptions={"benign": "a benign lesion (the healthy-like reference class, a choice)",
                             "malignant": "a malignant lesion (melanoma or carcinoma)"},
               modality="dermoscopy")


def _detect(root: Path) -> int:
    base = folder_of(root)
    if root.is_file():
        return 2019 if "GroundTruth" in root.name else 2020
    if (base / "ISIC_2019_Training_GroundTruth.csv").is_file():
        return 2019
    if (base / "train.csv").is_file():
        return 2020
    raise ManifestError(f"{root}: no ISIC_2019_Training_GroundTruth.csv or ISIC 2020 train.csv found")


def _folders(base: Path, image_dir: str | Path | None, defaults: tuple[str, ...]) -> list[Path]:
    if image_dir is not None:
        folder = Path(image_dir).expanduser()
        return [folder if folder.is_absolute() else base / folder]
    return existing(base / d for d in defaults) or [base]


def load_isic(root: Path, year: int | None = None, task: str = "auto", image_dir: str | Path | None = None,
              missing: str = "error") -> tuple:
    """ISIC 2019 or 2020 as (CaseTable, Task); ``year`` auto-detected from the files present.

    ``task`` for 2019: ``diagnosis`` (default; the 8 labelled classes, UNK dropped,
    healthy-like ``nv``) or ``benign_malignant`` (mel, bcc, ak, scc malignant);
    for 2020: ``benign_malignant`` (default, from ``target``) or ``diagnosis``
    (the ``diagnosis`` column; healthy-like ``nevus``).
    """
    year = _detect(root) if year is None else int(year)
    if year not in (2019, 2020):
        raise ManifestError(f"{root}: ISIC year {year} is not supported (2019 or 2020)")
    task = choose("isic", "task", task, ("auto", "diagnosis", "benign_malignant"))
    missing = check_missing_option("isic", missing)
    if year == 2019:
        return _load_2019(root, "diagnosis" if task == "auto" else task, image_dir, missing)
    return _load_2020(root, "benign_malignant" if task == "auto" else task, image_dir, missing)


DATASETS.register("isic", DatasetAdapter(load_isic, classes=lambda: {
    "year=2019 task=diagnosis": _diagnosis_2019(), "task=benign_malignant": _BINARY,
    "year=2020 task=diagnosis": "nevus (healthy) and the other values of train.csv's diagnosis column"}))


def _load_2019(root: Path, task: str, image_dir, missing: str) -> tuple:
    base = folder_of(root)
    truth_path = root if root.is_file() else base / "ISIC_2019_Training_GroundTruth.csv"
    truth = read_csv(truth_path, "ISIC 2019 ground truth")
    classes = [c for c in ISIC2019_CLASSES if c in truth.columns]
    require_columns(truth, ("image", *[c for c in ISIC2019_CLASSES if c != "UNK"]), truth_path)
    meta_path = base / "ISIC_2019_Training_Metadata.csv"
    metadata: dict[str, dict] = {}
    meta_problems = Problems(meta_path)
    if meta_path.is_file():
        meta = read_csv(meta_path, "ISIC 2019 metadata")
        require_columns(meta, ("image", "age_approx", "anatom_site_general", "sex"), meta_path)
        for row, record in rows(meta):
            if text(record.get("image")):
                metadata[text(record["image"])] = {"row": row, **record}
    index = ImageIndex(_folders(base, image_dir, ("ISIC_2019_Training_Input", "train", "images")))
    problems = Problems(truth_path)
    cases = []
    for row, record in rows(truth):
        image_id = text(record.get("image"))
        if image_id is None:
            problems.add(row, "image", "empty")
            continue
        before = len(problems.items)
        hot = [c for c in classes if problems.number(row, c, record.get(c), minimum=0, maximum=1, required=True) == 1]
        if len(hot) != 1:
            if len(problems.items) == before:
                problems.add(row, ", ".join(classes), f"expected exactly one 1 among the classes, found {len(hot)}")
            continue
        dx = hot[0].lower()
        if dx == "unk":
            continue
        label = dx if task == "diagnosis" else ("malignant" if dx in ISIC2019_MALIGNANT else "benign")
        info = metadata.get(image_id, {})
        meta_row = info.get("row")
        age, raw_age = meta_problems.age(meta_row, "age_approx", info.get("age_approx"))
        sex = meta_problems.sex(meta_row, "sex", info.get("sex"))
        image = locate(problems, row, "image", image_id, index, missing, (".jpg", ".jpeg", ".png"))
        if image is None:
            continue
        extra: dict = {"dx": dx}
        site = text(info.get("anatom_site_general"))
        if site:
            extra["anatom_site"] = site
            extra["body_site"] = site
        if raw_age:
            extra["age_raw"] = raw_age
        cases.append(Case(case_id=image_id, images=(str(image),), label=label,
                          patient_id=text(info.get("lesion_id")) or image_id, age=age, sex=sex, extra=extra))
    meta_problems.raise_if_any()
    problems.raise_if_any()
    return make_table(cases, truth_path), _BINARY if task == "benign_malignant" else _diagnosis_2019()


def _diagnosis_2019() -> Task:
    labelled = [c.lower() for c in ISIC2019_CLASSES if c != "UNK"]
    return Task(name="isic2019", question="Which diagnosis does this dermoscopic image of a skin lesion show?",
                classes=labelled, healthy_class="nv", descriptions={c: ISIC2019_DESCRIPTIONS[c] for c in labelled},
                modality="dermoscopy")


def _load_2020(root: Path, task: str, image_dir, missing: str) -> tuple:
    base = folder_of(root)
    path = root if root.is_file() else base / "train.csv"
    frame = read_csv(path, "ISIC 2020 train.csv")
    required = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]
    required.append("target" if task == "benign_malignant" else "diagnosis")
    require_columns(frame, required, path)
    index = ImageIndex(_folders(base, image_dir, ("train", "jpeg/train", "ISIC_2020_Training_JPEG/train")),
                       suffixes=(".jpg", ".jpeg", ".png", ".dcm"))
    problems = Problems(path)
    cases = []
    for row, record in rows(frame):
        image_id = text(record.get("image_name"))
        if image_id is None:
            problems.add(row, "image_name", "empty")
            continue
        if task == "benign_malignant":
            target = problems.number(row, "target", record.get("target"), integer=True, minimum=0, maximum=1,
                                     required=True)
            if target is None:
                continue
            label = "malignant" if target == 1 else "benign"
        else:
            label = (text(record.get("diagnosis")) or "").lower()
            if not label:
                problems.add(row, "diagnosis", "empty")
                continue
        age, raw_age = problems.age(row, "age_approx", record.get("age_approx"))
        sex = problems.sex(row, "sex", record.get("sex"))
        image = locate(problems, row, "image_name", image_id, index, missing, (".jpg", ".jpeg", ".png", ".dcm"))
        if image is None:
            continue
        extra: dict = {}
        site = text(record.get("anatom_site_general_challenge"))
        if site:
            extra["anatom_site"] = site
            extra["body_site"] = site
        for column in ("diagnosis", "benign_malignant"):
            if text(record.get(column)):
                extra[column] = text(record.get(column))
        if raw_age:
            extra["age_raw"] = raw_age
        cases.append(Case(case_id=image_id, images=(str(image),), label=label,
                          patient_id=text(record.get("patient_id")) or image_id, age=age, sex=sex, extra=extra))
    problems.raise_if_any()
    if task == "benign_malignant":
        return make_table(cases, path), _BINARY
    classes = sorted({c.label for c in cases})
    if "nevus" not in classes:
        raise ManifestError(f"{path}: no 'nevus' diagnosis found, so the diagnosis task has no healthy-like class")
    return make_table(cases, path), Task(
        name="isic2020_diagnosis", question="Which diagnosis does this dermoscopic image of a skin lesion show?",
        classes=["nevus", *[c for c in classes if c != "nevus"]], healthy_class="nevus",
        descriptions={"nevus": "benign melanocytic nevus (the healthy-like reference class, a choice)"},
        modality="dermoscopy")
