"""A folder per class: ``root/<class>/*.png`` or ``root/<split>/<class>/*.png``.

Split folders (train, val/valid/validation, test) are recognised when every
top-level folder has such a name. Images may sit in sub-folders of a class
folder (``root/<class>/<patient>/img.png``); the case id is the path relative
to ``root`` without its suffix. The healthy class is ``healthy_class`` or,
failing that, the one folder named like normal / healthy / no_finding
(``0_normal`` counts); otherwise a ConfigError asks for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cases import Case
from ..errors import ConfigError, ManifestError
from ..tasks import Task
from .registry import DATASETS, IMAGE_SUFFIXES, SPLIT_ALIASES, DatasetAdapter, healthy_or_error, make_table


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    found = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(current) / f for f in sorted(files)
                     if not f.startswith(".") and f.lower().endswith(suffixes))
    return found


def load_imagefolder(root: Path, healthy_class: str | None = None, rename: dict[str, str] | None = None,
                     extensions: list[str] | tuple[str, ...] = IMAGE_SUFFIXES, question: str | None = None,
                     modality: str = "medical image") -> tuple:
    """Images sorted into class folders as (CaseTable, Task).

    ``rename`` maps folder names to class names (``{"0_normal": "normal"}``);
    ``healthy_class`` is given after renaming. ``extensions`` are the image
    suffixes read (others are ignored).
    """
    if not root.is_dir():
        raise ManifestError(f"{root}: image folder not found")
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    top = _visible_dirs(root)
    split_layout = bool(top) and all(p.name.lower() in SPLIT_ALIASES for p in top)
    groups = [(SPLIT_ALIASES[p.name.lower()], p) for p in top] if split_layout else [(None, root)]
    rename = dict(rename or {})
    cases = []
    for split, folder in groups:
        for class_dir in _visible_dirs(folder):
            label = rename.get(class_dir.name, class_dir.name)
            for image in _images(class_dir, suffixes):
                case_id = image.relative_to(root).with_suffix("").as_posix()
                cases.append(Case(case_id=case_id, images=(str(image),), label=label, patient_id=case_id,
                                  split=split))
    if not cases:
        layout = "<split>/<class>/" if split_layout else "<class>/"
        raise ManifestError(f"{root}: no images ({', '.join(suffixes)}) found in {layout} folders")
    classes = sorted({c.label for c in cases})
    if len(classes) < 2:
        raise ManifestError(f"{root}: only one class folder ('{classes[0]}'); a task needs at least two")
    unknown = sorted(set(rename) - {p.name for _, f in groups for p in _visible_dirs(f)})
    if unknown:
        raise ConfigError(f"dataset 'imagefolder': rename names folder(s) that do not exist: {', '.join(unknown)}")
    healthy = healthy_or_error("imagefolder", classes, healthy_class)
    ordered = [healthy, *[c for c in classes if c != healthy]]
    return make_table(cases, root), Task(
        name=root.name or "imagefolder",
        question=question or f"Which of these does the image show: {', '.join(ordered)}?",
        classes=ordered, healthy_class=healthy, modality=modality)


DATASETS.register("imagefolder", DatasetAdapter(
    load_imagefolder, classes="the class folder names (healthy: the one named normal, healthy, ... "
                              "or healthy_class=...)"))
