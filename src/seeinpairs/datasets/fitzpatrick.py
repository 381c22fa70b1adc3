"""Fitzpatrick17k (Groh et al. 2021): clinical skin images with Fitzpatrick skin types.

Native layout: ``fitzpatrick17k.csv`` with ``md5hash, fitzpatrick_scale,
fitzpatrick_centaur, label, nine_partition_label, three_partition_label, qc,
url, url_alphanum``; images downloaded from ``url`` and saved as
``<md5hash>.jpg`` anywhere under ``root`` (or ``image_dir``).

The skin type (1-6; -1 unknown -> None) goes to ``extra["fitzpatrick"]``, a
match attribute for the demographic selector. The source atlas (from the URL
host: dermaamin, atlasdermatologico) is the site. No patient ids exist.

Default task: ``three_partition_label`` (benign / malignant / non-neoplastic).
Nothing in the data set is healthy skin: ``benign`` serves as the healthy-like
reference class, a choice stated in the class description (pass
``healthy_class`` to choose otherwise, e.g. ``non-neoplastic``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

from ..cases import Case
from ..tasks import Task
from .registry import (DATASETS, DatasetAdapter, ImageIndex, Problems, check_missing_option, choose, folder_of,
                       healthy_or_error, locate, make_table, read_csv, require_columns, rows, split_root, text)

THREE_DESCRIPTIONS = {
    "benign": "a benign neoplasm",
    "malignant": "a malignant neoplasm (melanoma, carcinoma, lymphoma)",
    "non-neoplastic": "a non-neoplastic condition (inflammatory, infectious, genetic)",
}
_COLUMN = {"three": "three_partition_label", "nine": "nine_partition_label", "condition": "label"}
_DEFAULT_HEALTHY = {"three": "benign", "nine": "benign melanocyte"}


def _site(url: str | None) -> str | None:
    if not url:
        return None
    host = urlparse(url).hostname or ""
    parts = [p for p in host.split(".") if p not in ("www", "com", "br", "org", "net")]
    return parts[0] if parts else None


def load_fitzpatrick(root: Path, csv: str | Path | None = None, image_dir: str | Path | None = None,
                     task: str = "three", healthy_class: str | None = None, missing: str = "error") -> tuple:
    """Fitzpatrick17k as (CaseTable, Task); ``task`` three (default), nine or condition (the 114 labels)."""
    task = choose("fitzpatrick", "task", task, tuple(_COLUMN))
    missing = check_missing_option("fitzpatrick", missing)
    path = split_root(root, ("fitzpatrick17k.csv",), "Fitzpatrick17k CSV", csv)
    base = folder_of(path)
    frame = read_csv(path, "Fitzpatrick17k CSV")
    column = _COLUMN[task]
    require_columns(frame, ("md5hash", "fitzpatrick_scale", column), path)
    if image_dir is not None:
        folder = Path(image_dir).expanduser()
        index = ImageIndex([folder if folder.is_absolute() else base / folder])
    else:
        index = ImageIndex([base])
    problems = Problems(path)
    cases = []
    for row, record in rows(frame):
        md5 = text(record.get("md5hash"))
        if md5 is None:
            problems.add(row, "md5hash", "empty")
            continue
        scale = problems.number(row, "fitzpatrick_scale", record.get("fitzpatrick_scale"), integer=True,
                                minimum=-1, maximum=6)
        label = text(record.get(column))
        if label is None:
            problems.add(row, column, "empty")
            continue
        image = locate(problems, row, "md5hash", md5, index, missing, (".jpg", ".jpeg", ".png"))
        if image is None:
            continue
        extra: dict = {"fitzpatrick": scale if scale is not None and scale > 0 else None}
        if extra["fitzpatrick"] is None:
            del extra["fitzpatrick"]
        for name in ("label", "nine_partition_label", "three_partition_label"):
            if text(record.get(name)):
                extra[name if name != "label" else "condition"] = text(record.get(name))
        cases.append(Case(case_id=md5, images=(str(image),), label=re.sub(r"\s+", " ", label.lower()),
                          patient_id=md5, site=_site(text(record.get("url"))), extra=extra))
    problems.raise_if_any()
    classes = sorted({c.label for c in cases})
    if task == "three":
        classes = [c for c in ("benign", "malignant", "non-neoplastic") if c in classes] + \
                  [c for c in classes if c not in THREE_DESCRIPTIONS]
    healthy = healthy_class
    if healthy is None and _DEFAULT_HEALTHY.get(task) in classes:
        healthy = _DEFAULT_HEALTHY[task]
    healthy = healthy_or_error("fitzpatrick", classes, healthy)
    descriptions = {k: v for k, v in THREE_DESCRIPTIONS.items() if k in classes} if task == "three" else {}
    descriptions[healthy] = (f"{descriptions.get(healthy, healthy)} (the healthy-like reference class, a choice: "
                             f"no image shows healthy skin)")
    return make_table(cases, path), Task(
        name=f"fitzpatrick17k_{task}", question="Which kind of skin condition does this clinical photograph show?",
        classes=classes, healthy_class=healthy, descriptions=descriptions, modality="clinical skin photograph")


DATASETS.register("fitzpatrick", DatasetAdapter(load_fitzpatrick, classes={
    "task=three": "benign (healthy), malignant, non-neoplastic",
    "task=nine": "the CSV's nine_partition_label values (healthy benign melanocyte, or healthy_class=...)",
    "task=condition": "the CSV's label values (pass healthy_class=...)"}.copy))
