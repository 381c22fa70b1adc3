"""MedMNIST v2 (2D): ``.npz`` files with ``{split}_images`` / ``{split}_labels`` for train, val, test.

Files are named ``<flag>.npz`` (28x28) or ``<flag>_<size>.npz`` (64, 128, 224;
MedMNIST+). ``root`` is the folder holding them, or an ``.npz`` file itself
(any npz with the same keys, e.g. a class-balanced subset; extra keys are
ignored). Arrays become PNG files once, in a cache folder (``image_dir``,
default ``$SEEINPAIRS_CACHE`` or ``~/.cache/seeinpairs``, then
``medmnist/<npz stem>-<location hash>/``), so that cases hold file paths like
every other data set and the user's data folder is never written to. MedMNIST has no patient
ids: each case is its own patient. Nothing is downloaded unless
``download=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_write_text
from ..cases import Case
from ..errors import ConfigError, ManifestError
from ..settings import cache_root
from ..tasks import Task
from .aptos import DR_CLASSES, DR_DESCRIPTIONS
from .ham10000 import HAM_CLASSES, HAM_DESCRIPTIONS
from .registry import DATASETS, DatasetAdapter, class_list, make_table

URL = "https://zenodo.org/records/10519652/files/{name}?download=1"
SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")

_CHEST = ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
          "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural thickening", "hernia"]
_ORGAN = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
          "lung-right", "pancreas", "spleen"]

#: flag -> (native index -> class name, healthy class or None, modality, question)
FLAGS: dict[str, dict] = {
    "pneumoniamnist": dict(classes=["normal", "pneumonia"], healthy="normal", modality="pediatric chest x-ray",
                           question="Does this pediatric chest X-ray show pneumonia?",
                           descriptions={"normal": "clear lungs, no pneumonia",
                                         "pneumonia": "bacterial or viral pneumonia (opacities, consolidation)"}),
    # native labels: 0 malignant, 1 normal or benign
    "breastmnist": dict(classes=["malignant", "normal/benign"], healthy="normal/benign", modality="breast ultrasound",
                        question="Does this breast ultrasound image show a malignant lesion?",
                        descriptions={"malignant": "malignant breast lesion",
                                      "normal/benign": "normal breast tissue or a benign lesion"}),
    "retinamnist": dict(classes=list(DR_CLASSES), healthy="grade 0", modality="fundus photograph",
                        question="What is the diabetic retinopathy grade of this fundus photograph?",
                        descriptions=dict(DR_DESCRIPTIONS)),
    # nevus as the healthy-like class is a choice (see ham10000)
    "dermamnist": dict(classes=list(HAM_CLASSES), healthy="nv", modality="dermoscopy",
                       question="Which diagnosis does this dermoscopic image of a skin lesion show?",
                       descriptions=dict(HAM_DESCRIPTIONS)),
    "octmnist": dict(classes=["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
                     healthy="normal", modality="retinal OCT", question="What does this retinal OCT scan show?"),
    # multi-label: mapped to the binary "any finding" task
    "chestmnist": dict(classes=list(_CHEST), healthy="normal", modality="chest x-ray",
                       question="Does this chest X-ray show any abnormal finding?"),
    "bloodmnist": dict(classes=["basophil", "eosinophil", "erythroblast", "immature granulocyte", "lymphocyte",
                                "monocyte", "neutrophil", "platelet"], healthy=None, modality="blood cell microscopy",
                       question="Which blood cell type does this microscopy image show?"),
    "organamnist": dict(classes=list(_ORGAN), healthy=None, modality="abdominal CT (axial)",
                        question="Which organ does this CT image show?"),
    "organcmnist": dict(classes=list(_ORGAN), healthy=None, modality="abdominal CT (coronal)",
                        question="Which organ does this CT image show?"),
    "organsmnist": dict(classes=list(_ORGAN), healthy=None, modality="abdominal CT (sagittal)",
                        question="Which organ does this CT image show?"),
    "pathmnist": dict(classes=["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                               "normal colon mucosa", "cancer-associated stroma",
                               "colorectal adenocarcinoma epithelium"],
                      healthy="normal colon mucosa", modality="colon histopathology (H&E)",
                      question="Which tissue type does this histology patch show?"),
    "tissuemnist": dict(classes=["collecting duct, connecting tubule", "distal convoluted tubule",
                                 "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes",
                                 "podocytes", "proximal tubule segments", "thick ascending limb"],
                        healthy=None, modality="kidney cortex microscopy",
                        question="Which kidney cell type does this microscopy image show?"),
}


def normal_flag(flag: str) -> str:
    key = str(flag).strip().lower().replace("_", "").replace("-", "")
    if not key.endswith("mnist"):
        key += "mnist"
    if key not in FLAGS:
        raise ConfigError(f"dataset 'medmnist': unknown flag '{flag}' (2D flags: "
                          f"{', '.join(f.removesuffix('mnist') for f in FLAGS)})")
    return key


def file_name(flag: str, size: int = 28) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _download(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
            while chunk := response.read(1 << 20):
                handle.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise ManifestError(f"{target}: cannot download {url} ({reason}); without network, place the file "
                            f"there by hand") from None
    partial.replace(target)


def _fingerprint(path: Path) -> str:
    """Size plus hashes of the first and last MiB: cheap, and changes when the file is replaced."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()


def _task(flag: str, info: dict, healthy: str | None) -> Task:
    if flag == "chestmnist":
        return Task(name=flag, question=info["question"], classes=["normal", "abnormal"], healthy_class="normal",
                    descriptions={"normal": "no finding", "abnormal": "one or more of: " + ", ".join(_CHEST)},
                    modality=info["modality"])
    classes = list(info["classes"])
    if flag == "breastmnist":
        classes = ["normal/benign", "malignant"]  # healthy first; native indices are mapped by name
    return Task(name=flag, question=info["question"], classes=classes, healthy_class=healthy,
                descriptions=dict(info.get("descriptions", {})), modality=info["modality"])


def default_image_dir(npz: Path) -> Path:
    """A per-file PNG cache outside the data folder, keyed by the file's location (its content
    fingerprint decides when the PNGs are rewritten)."""
    key = hashlib.sha256(str(npz.resolve()).encode()).hexdigest()[:12]
    return cache_root() / "medmnist" / f"{npz.stem}-{key}"


def class_table() -> dict[str, Task | str]:
    """Each flag's classes as this adapter names them (its native labels mapped to words)."""
    return {f"flag={flag}": _task(flag, info, info["healthy"]) if info["healthy"] is not None
            else class_list(info["classes"]) + " (no healthy class: pass healthy_class=...)"
            for flag, info in FLAGS.items()}


def load_medmnist(root: Path, flag: str | None = None, size: int = 28, image_dir: str | Path | None = None,
                  splits: list[str] | tuple[str, ...] = SPLITS, healthy_class: str | None = None,
                  download: bool = False) -> tuple:
    """A 2D MedMNIST flag as (CaseTable, Task), images exported once as PNG.

    ``flag`` like ``pneumonia`` or ``pneumoniamnist`` (inferred from the file name
    when ``root`` is an ``.npz``); ``size`` 28/64/128/224 selects the file;
    ``healthy_class`` overrides (or, for flags without one such as blood, organ,
    tissue, supplies) the healthy class. ChestMNIST (multi-label) becomes the
    binary task normal (no finding) vs abnormal (any of the 14 findings), with
    the findings in ``extra["findings"]``.
    """
    if size not in SIZES:
        raise ConfigError(f"dataset 'medmnist': size {size!r} is not one of {', '.join(map(str, SIZES))}")
    if root.is_file() or root.suffix == ".npz":
        path = root
        if flag is None:
            stem = path.name.lower()
            matches = [f for f in FLAGS if stem.startswith(f)]
            if not matches:
                raise ConfigError(f"dataset 'medmnist': cannot tell the flag from the file name '{path.name}'; "
                                  f"pass flag=...")
            flag = max(matches, key=len)
    else:
        if flag is None:
            raise ConfigError("dataset 'medmnist': pass flag=... (e.g. pneumonia) or the path of an .npz file")
        path = root / file_name(normal_flag(flag), size)
    flag = normal_flag(flag)
    info = FLAGS[flag]
    if not path.is_file():
        url = URL.format(name=file_name(flag, size))
        if not download:
            raise ManifestError(f"{path}: MedMNIST file not found (pass download=True to fetch {url})")
        _download(url, path)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ConfigError(f"dataset 'medmnist': splits {unknown} are not among {', '.join(SPLITS)}")
    healthy = healthy_class if healthy_class is not None else info["healthy"]
    if flag == "chestmnist":
        healthy = "normal"
    elif healthy is None:
        raise ConfigError(f"dataset 'medmnist': {flag} has no healthy class; pass healthy_class= one of "
                          f"{', '.join(info['classes'])}")
    task = _task(flag, info, healthy)
    if healthy not in task.classes:
        raise ConfigError(f"dataset 'medmnist': healthy_class '{healthy}' is not one of {', '.join(task.classes)}")

    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except Exception as exc:  # zip or npy format errors
        raise ManifestError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    missing = [f"{s}_{kind}" for s in splits for kind in ("images", "labels") if f"{s}_{kind}" not in keys]
    if missing:
        raise ManifestError(f"{path}: missing required key(s) {', '.join(missing)} (found: {', '.join(sorted(keys))})")

    out = Path(image_dir).expanduser() if image_dir is not None else default_image_dir(path)
    out = out.absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ManifestError(f"{out}: cannot create the PNG cache folder ({exc.strerror or exc}); pass image_dir=...") from None
    marker = out / ".source.json"
    fingerprint = {"file": path.name, "fingerprint": _fingerprint(path)}
    try:
        fresh = json.loads(marker.read_text()) == fingerprint
    except (OSError, ValueError):
        fresh = False

    cases = []
    n_classes = len(info["classes"])
    for split in splits:
        images = archive[f"{split}_images"]
        labels = archive[f"{split}_labels"]
        source = f"{path} key '{split}_labels'"
        if images.ndim not in (3, 4) or len(images) != len(labels):
            raise ManifestError(f"{path}: key '{split}_images' has shape {images.shape}, which does not match "
                                f"'{split}_labels' {labels.shape} (expected N x H x W [x C] and N labels)")
        if labels.dtype.kind not in "iub":
            raise ManifestError(f"{source}: labels of dtype {labels.dtype} are not integers")
        labels = labels.reshape(len(labels), -1).astype(np.int64)
        if flag == "chestmnist":
            if labels.shape[1] != len(_CHEST) or not np.isin(labels, (0, 1)).all():
                raise ManifestError(f"{source}: expected {len(_CHEST)} binary labels per image, got shape "
                                    f"{labels.shape} with values {sorted(np.unique(labels).tolist())[:5]}")
        else:
            if labels.shape[1] != 1:
                raise ManifestError(f"{source}: expected one label per image, got shape {labels.shape}")
            bad = np.flatnonzero((labels[:, 0] < 0) | (labels[:, 0] >= n_classes))
            if len(bad):
                raise ManifestError(f"{source}: row {int(bad[0]) + 1}: label {int(labels[bad[0], 0])} is outside "
                                    f"0..{n_classes - 1}")
        for i in range(len(images)):
            case_id = f"{flag}_{split}_{i:06d}"
            image_path = out / f"{split}_{i:06d}.png"
            if not (fresh and image_path.is_file()):
                array = images[i]
                picture = Image.fromarray(array) if array.dtype == np.uint8 else _as_image(array, path)
                picture.save(image_path, compress_level=1)
            extra: dict = {}
            if flag == "chestmnist":
                found = [_CHEST[j] for j in np.flatnonzero(labels[i])]
                label = "abnormal" if found else "normal"
                extra["findings"] = "|".join(found)
            else:
                label = info["classes"][int(labels[i, 0])]
            cases.append(Case(case_id=case_id, images=(str(image_path),), label=label, patient_id=case_id,
                              split=split, extra=extra))
    atomic_write_text(marker, json.dumps(fingerprint))  # last: says every image above is written
    return make_table(cases, path), task


DATASETS.register("medmnist", DatasetAdapter(load_medmnist, classes=class_table))


def _as_image(array: np.ndarray, path: Path) -> Image.Image:
    from ..imaging import array_to_image

    return array_to_image(array, source=str(path))
