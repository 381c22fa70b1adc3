"""The registry of data-set adapters and the helpers every adapter shares.

An adapter reads a public data set in its native layout (the files as they are
downloaded) and maps the native columns onto :class:`~seeinpairs.cases.Case`
fields (``case_id, images, label, patient_id, age, sex, site, split``; the rest
goes to ``Case.extra``), in the spirit of torchxrayvision's harmonised data
sets. Each returns ``(CaseTable, Task)``::

    from seeinpairs.datasets.registry import load_dataset, list_datasets
    table, task = load_dataset("nih", "/data/ChestX-ray14", task="finding", finding="Pneumonia")

Input problems (a missing column, a value of the wrong type, a missing image)
raise :class:`~seeinpairs.errors.ManifestError` with one line that names the
file, the row and the column; option problems raise ``ConfigError``.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..cases import SPLIT_ALIASES, Case, CaseTable
from ..errors import ConfigError, ManifestError
from ..registry import Registry
from ..tasks import Task

Loader = Callable[..., "tuple[CaseTable, Task]"]

#: an adapter's class names: {option setting: its Task, or a sentence where they come from the data}, or one sentence
ClassTable = Callable[[], "Mapping[str, Task | str]"] | str

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_MAX_SHOWN = 8


@dataclass(frozen=True)
class DatasetAdapter:
    """One data-set adapter: its loader and the class names it gives.

    Calling the adapter calls the loader with ``root`` (a str or Path) made an absolute Path,
    so that every image path in the table is absolute. ``classes`` says which class names the
    adapter gives (see :func:`dataset_classes`): users who leave ``task.classes`` out of a config
    get these, and ``seeinpairs list`` shows them.
    """

    load: Loader
    classes: ClassTable = "not declared"

    @property
    def description(self) -> str:
        """The loader's docstring (``seeinpairs list`` shows its first sentence)."""
        return self.load.__doc__ or ""

    def __call__(self, root: str | Path, *args: Any, **options: Any) -> tuple[CaseTable, Task]:
        return self.load(Path(root).expanduser().absolute(), *args, **options)


#: name -> adapter (each adapter module of this package registers its own)
DATASETS: Registry[tuple[CaseTable, Task]] = Registry("dataset", expects=DatasetAdapter)


def list_datasets() -> list[str]:
    """Names of all registered adapters."""
    return DATASETS.list_names()


def dataset_classes(name: str) -> dict[str, str]:
    """The class names adapter ``name`` gives, per option setting where they depend on one
    (``{"flag=breastmnist": "normal/benign (healthy), malignant", ...}``; ``{"": sentence}`` where
    the data decide them). Read from the same tasks the adapter returns, so they cannot drift."""
    table = DATASETS.get(name).classes  # an unknown name: the registry's error, listing the known ones
    if isinstance(table, str):
        return {"": table}
    return {setting: value if isinstance(value, str) else describe_classes(value) for setting, value in table().items()}


def describe_classes(task: Task) -> str:
    """``normal/benign (healthy), malignant``: a task's class names in order, the healthy one marked."""
    return class_list(task.classes, task.healthy_class)


def class_list(classes: Iterable[str], healthy: str | None = None) -> str:
    """Class names joined by commas; a name holding a comma is quoted, the healthy one marked."""
    shown = [f'"{c}"' if "," in c else c for c in classes]
    return ", ".join(f"{s} (healthy)" if c == healthy else s for s, c in zip(shown, classes))


def dataset_options(name: str) -> dict[str, Any]:
    """The options an adapter accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
    params = list(inspect.signature(DATASETS.get(name).load).parameters.values())[1:]  # skip root
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def load_dataset(name: str, root: str | Path, **options: Any) -> tuple[CaseTable, Task]:
    """Load a registered data set from ``root`` (a folder, or for some adapters its main file)."""
    loader = DATASETS.get(name)
    known = dataset_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"dataset '{name}': unknown option(s) {', '.join(unknown)} (known: {', '.join(known) or 'none'})")
    root = Path(root).expanduser()
    if not root.exists() and not options.get("download"):
        raise ManifestError(f"{root}: data set folder not found")
    return loader(root, **options)


# ---------------------------------------------------------------------------
# options


def choose(dataset: str, option: str, value: Any, allowed: Sequence[str]) -> str:
    """Check an option against its allowed values (case-insensitive), or raise ConfigError."""
    text = str(value).strip().lower()
    for candidate in allowed:
        if candidate.lower() == text:
            return candidate
    raise ConfigError(f"dataset '{dataset}': option {option}={value!r} is not one of {', '.join(allowed)}")


def readable(name: str) -> str:
    """A native label as a class name: ``Pleural_Thickening`` -> ``pleural thickening``."""
    return re.sub(r"\s+", " ", str(name).replace("_", " ")).strip().lower()


def guess_healthy(classes: Iterable[str]) -> str | None:
    """The one class whose name says healthy (normal, healthy, no finding, ...), else None."""
    wanted = {"normal", "healthy", "nofinding", "negative", "control", "controls", "nodr", "nodisease"}
    hits = []
    for name in classes:
        lowered = str(name).strip().lower()
        tokens = [t for t in re.split(r"[\s_\-./]+", lowered) if t]
        while tokens and tokens[0].isdigit():  # "0_normal"
            tokens = tokens[1:]
        if "".join(tokens) in wanted:
            hits.append(name)
    return hits[0] if len(hits) == 1 else None


def healthy_or_error(dataset: str, classes: Sequence[str], healthy_class: str | None) -> str:
    """The user's healthy class if valid, else a guess from the class names, else ConfigError."""
    if healthy_class is not None:
        if healthy_class not in classes:
            raise ConfigError(f"dataset '{dataset}': healthy_class '{healthy_class}' is not one of the classes "
                              f"{', '.join(classes)}")
        return healthy_class
    guessed = guess_healthy(classes)
    if guessed is None:
        raise ConfigError(f"dataset '{dataset}': cannot tell which class is healthy among {', '.join(classes)}; "
                          f"pass healthy_class=...")
    return guessed


# ---------------------------------------------------------------------------
# files and values


def split_root(root: Path, defaults: Sequence[str], what: str, given: str | Path | None = None) -> Path:
    """The metadata file: ``given`` (relative to ``root``), ``root`` itself if a file, else the first default present."""
    root = Path(root)
    if given is not None:
        path = Path(given).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise ManifestError(f"{path}: {what} not found")
        return path
    if root.is_file():
        return root
    for name in defaults:
        if (root / name).is_file():
            return root / name
    raise ManifestError(f"{root}: no {what} found (looked for {', '.join(defaults)})")


def folder_of(root: Path) -> Path:
    return root.parent if root.is_file() else root


def read_csv(path: Path, what: str = "metadata file") -> pd.DataFrame:
    """A CSV (or .csv.gz, .xlsx) read as strings, column names stripped; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: {what} not found")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            try:
                frame = pd.read_excel(path, dtype=str).fillna("")
            except ImportError:
                raise ManifestError(f"{path}: reading Excel files needs openpyxl; install it or save the sheet as CSV") from None
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                                sep="\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ",")
    except ManifestError:
        raise
    except Exception as exc:  # parser errors come in many types; one line for the user
        raise ManifestError(f"{path}: cannot parse {what} ({_first_line(exc)})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def require_columns(frame: pd.DataFrame, columns: Iterable[str], source: Path | str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = list(frame.columns)
        shown = ", ".join(found[:15]) + (" ..." if len(found) > 15 else "")
        raise ManifestError(f"{source}: missing required column(s) {', '.join(repr(c) for c in missing)} "
                            f"(found: {shown or 'none'})")


def rows(frame: pd.DataFrame) -> Iterable[tuple[int, dict[str, Any]]]:
    """(1-based data row number, row as a dict)."""
    return enumerate(frame.to_dict(orient="records"), start=1)


def text(value: Any) -> str | None:
    """A cell as stripped text, None when blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    result = str(value).strip()
    return result or None


class Problems:
    """Problems found while reading one file, raised together as one ManifestError line."""

    def __init__(self, source: Path | str, field_kind: str = "column") -> None:
        self.source = str(source)
        self.field_kind = field_kind
        self.items: list[str] = []

    def add(self, row: int | str | None, column: str | None, message: str) -> None:
        """``row``: a 1-based row number, or a phrase such as ``file 'a/b.dcm'``."""
        where = []
        if row is not None:
            where.append(f"row {row}" if isinstance(row, int) else str(row))
        if column is not None:
            where.append(f"{self.field_kind} '{column}'")
        self.items.append(f"{' '.join(where)}: {message}" if where else message)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            message = f"{self.source}: {self.items[0]}"
        else:
            shown = "; ".join(self.items[:_MAX_SHOWN])
            more = f"; and {len(self.items) - _MAX_SHOWN} more" if len(self.items) > _MAX_SHOWN else ""
            message = f"{self.source}: {len(self.items)} problems: {shown}{more}"
        raise ManifestError(" ".join(message.split()))

    # typed cells ---------------------------------------------------------

    def number(self, row: int | str | None, column: str, value: Any, integer: bool = False, minimum: float | None = None,
               maximum: float | None = None, required: bool = False) -> Any:
        """A numeric cell (None when blank, unless ``required``); problems recorded, None returned."""
        raw = text(value)
        if raw is None:
            if required:
                self.add(row, column, "empty (a number is required)")
            return None
        try:
            number = float(raw)
        except ValueError:
            self.add(row, column, f"'{raw}' is not a number")
            return None
        if not math.isfinite(number):
            self.add(row, column, f"'{raw}' is not a finite number")
            return None
        if integer:
            if not number.is_integer():
                self.add(row, column, f"'{raw}' is not a whole number")
                return None
            number = int(number)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            low = "" if minimum is None else f"{minimum:g}"
            high = "" if maximum is None else f"{maximum:g}"
            self.add(row, column, f"{raw} is outside {low}..{high}")
            return None
        return number

    def age(self, row: int | str | None, column: str, value: Any) -> tuple[float | None, str | None]:
        """(age in years or None, the raw text when implausible): ``62``, ``62.5``, DICOM ``062Y``/``006M``."""
        raw = text(value)
        if raw is None:
            return None, None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([YyMmWwDd]?)", raw)
        if match is None:
            try:
                years = float(raw)
            except ValueError:
                self.add(row, column, f"'{raw}' is not an age (a number of years, or DICOM style like 062Y)")
                return None, None
        else:
            scale = {"": 1.0, "Y": 1.0, "M": 1 / 12, "W": 1 / 52, "D": 1 / 365}[match.group(2).upper()]
            years = float(match.group(1)) * scale
        if not math.isfinite(years) or years < 0 or years > 120:
            return None, raw  # recorded errors in public tables (NIH has ages above 400): kept as raw text
        return years, None

    def sex(self, row: int | str | None, column: str, value: Any) -> str | None:
        raw = text(value)
        if raw is None:
            return None
        key = raw.lower()
        if key in ("m", "male", "man", "boy"):
            return "M"
        if key in ("f", "female", "woman", "girl"):
            return "F"
        if key in ("o", "other"):
            return "O"
        if key in ("u", "unknown", "unk", "nan", "none", "n/a", "na", "-1"):
            return None
        self.add(row, column, f"'{raw}' is not a sex (expected M/F/O, male/female/other or unknown)")
        return None


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


# ---------------------------------------------------------------------------
# images


class ImageIndex:
    """File name -> path for every image under some folders (walked once, lazily).

    Used where a data set names images by file name only and the download
    scatters them over several folders (``images_001/images``, ``HAM10000_images_part_1``).
    """

    def __init__(self, folders: Iterable[Path], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> None:
        self.folders = [Path(f) for f in folders]
        self.suffixes = tuple(s.lower() for s in suffixes)
        self._names: dict[str, Path] | None = None
        self._lower: dict[str, Path] = {}

    def _build(self) -> dict[str, Path]:
        if self._names is None:
            names: dict[str, Path] = {}
            for folder in self.folders:
                if not folder.is_dir():
                    continue
                for current, dirs, files in os.walk(folder, followlinks=True):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(files):
                        if name.lower().endswith(self.suffixes) and name not in names:
                            names[name] = Path(current) / name
            self._names = names
            self._lower = {}
            for name, path in names.items():
                self._lower.setdefault(name.lower(), path)
        return self._names

    def find(self, name: str, suffixes: Sequence[str] = ()) -> Path | None:
        """The image called ``name`` (or ``name`` + one of ``suffixes``), exact name first, then any case."""
        names = self._build()
        for candidate in [name, *(name + s for s in suffixes)]:
            if candidate in names:
                return names[candidate]
        for candidate in [name, *(name + s for s in suffixes)]:
            if candidate.lower() in self._lower:
                return self._lower[candidate.lower()]
        return None

    def describe(self) -> str:
        shown = [str(f) for f in self.folders[:3]]
        return ", ".join(shown) + (" ..." if len(self.folders) > 3 else "")

    def __len__(self) -> int:
        return len(self._build())


def existing(folders: Iterable[Path]) -> list[Path]:
    return [f for f in folders if f.is_dir()]


def image_folders(root: Path, patterns: Sequence[str]) -> list[Path]:
    """Folders under ``root`` matching glob patterns (sorted), e.g. ``images*``."""
    found: list[Path] = []
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_dir() and path not in found:
                found.append(path)
    return found


def check_missing_option(dataset: str, missing: str) -> str:
    return choose(dataset, "missing", missing, ("error", "drop"))


def locate(problems: Problems, row: int, column: str, name: str, index: ImageIndex, missing: str,
           suffixes: Sequence[str] = ()) -> Path | None:
    """Find an image by name; a miss is a problem (``missing='error'``) or silently skips the row ('drop')."""
    path = index.find(name, suffixes)
    if path is None and missing == "error":
        problems.add(row, column, f"image '{name}' not found under {index.describe()}")
    return path


def check_file(problems: Problems, row: int, column: str, path: Path, missing: str) -> Path | None:
    """An expected image path; a missing file is a problem ('error') or skips the row ('drop')."""
    if path.is_file():
        return path
    if missing == "error":
        problems.add(row, column, f"image file not found '{path}'")
    return None


def normal_split(value: Any) -> str | None:
    raw = text(value)
    if raw is None:
        return None
    return SPLIT_ALIASES.get(raw.lower(), raw.lower())


def make_table(cases: Iterable[Case], source: Path | str) -> CaseTable:
    """A CaseTable; duplicate case ids are reported with the ids (one line)."""
    cases = list(cases)
    counts = Counter(c.case_id for c in cases)
    duplicates = [k for k, n in counts.items() if n > 1]
    if duplicates:
        shown = ", ".join(f"'{d}'" for d in duplicates[:5])
        raise ManifestError(f"{source}: {len(duplicates)} case id(s) occur more than once: {shown}"
                            + (" ..." if len(duplicates) > 5 else ""))
    if not cases:
        raise ManifestError(f"{source}: no cases left (check the options and the image folders)")
    return CaseTable(cases, str(source))


# ---------------------------------------------------------------------------
# patient-level splits


@dataclass(frozen=True)
class ResplitReport:
    """What :func:`resplit_by_patient` changed."""

    patients: int
    patients_across_splits_before: int
    patients_across_splits_after: int
    patients_moved: int
    cases_moved: int
    split_sizes: dict[str, int]

    def __str__(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.split_sizes.items())
        return (f"{self.patients} patients; {self.patients_across_splits_before} spanned several splits before, "
                f"{self.patients_across_splits_after} after; {self.patients_moved} patients "
                f"({self.cases_moved} cases) moved; sizes: {sizes}")


def patients_across_splits(cases: Iterable[Case]) -> list[str]:
    """Patients whose cases lie in more than one split."""
    splits: dict[str, set] = defaultdict(set)
    for case in cases:
        splits[case.patient].add(case.split)
    return sorted(p for p, s in splits.items() if len(s) > 1)


def resplit_by_patient(table: CaseTable, fractions: Mapping[str, float] | Sequence[float] | None = None,
                       seed: int = 0) -> tuple[CaseTable, ResplitReport]:
    """Reassign splits so that no patient spans two splits.

    ``fractions=None`` moves as little as possible: each patient goes wholly to
    the split that already holds most of their cases (ties: the split listed
    first among train/val/test, then seeded). With ``fractions`` (a mapping
    ``{"train": 0.7, "val": 0.1, "test": 0.2}`` or a (train, val, test)
    sequence) patients are shuffled with ``seed`` and dealt out so the case
    counts approach those fractions. Returns the new table and a report of how
    many patients (and cases) moved.
    """
    cases = list(table)
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, case in enumerate(cases):
        by_patient[case.patient].append(i)
    rng = np.random.default_rng(seed)
    before = len(patients_across_splits(cases))
    assignment: dict[str, str | None] = {}
    if fractions is None:
        order = {"train": 0, "val": 1, "test": 2}
        for patient, indices in by_patient.items():
            counts = Counter(cases[i].split for i in indices)
            best = max(counts.values())
            tied = sorted((s for s, n in counts.items() if n == best), key=lambda s: (order.get(s, 3), str(s)))
            assignment[patient] = tied[0]
    else:
        if isinstance(fractions, Mapping):
            names, weights = list(fractions), [float(v) for v in fractions.values()]
        else:
            weights = [float(v) for v in fractions]
            defaults = ["train", "val", "test"]
            if len(weights) > len(defaults):
                raise ConfigError("resplit_by_patient: give fractions as a mapping when there are more than 3 splits")
            names = defaults[:len(weights)]
        if not weights or any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"resplit_by_patient: fractions must be non-negative and sum above 0 (got {fractions!r})")
        total_weight = sum(weights)
        targets = np.array([w / total_weight * len(cases) for w in weights])
        filled = np.zeros(len(names))
        patients = list(by_patient)
        # largest patients first (then a seeded order) so the greedy fill stays close to the targets
        shuffled = [patients[i] for i in rng.permutation(len(patients))]
        shuffled.sort(key=lambda p: -len(by_patient[p]))
        for patient in shuffled:
            choice = int(np.argmax(targets - filled))
            assignment[patient] = names[choice]
            filled[choice] += len(by_patient[patient])
    moved_patients = 0
    moved_cases = 0
    new_cases = list(cases)
    for patient, indices in by_patient.items():
        target = assignment[patient]
        changed = [i for i in indices if cases[i].split != target]
        if changed:
            moved_patients += 1
            moved_cases += len(changed)
            for i in changed:
                new_cases[i] = replace(cases[i], split=target)
    result = CaseTable(new_cases, table.source)
    sizes = Counter(c.split for c in new_cases)
    ordered = {k: sizes[k] for k in sorted(sizes, key=lambda s: ({"train": 0, "val": 1, "test": 2}.get(s, 3), str(s)))}
    report = ResplitReport(
        patients=len(by_patient),
        patients_across_splits_before=before,
        patients_across_splits_after=len(patients_across_splits(new_cases)),
        patients_moved=moved_patients,
        cases_moved=moved_cases,
        split_sizes=ordered,
    )
    return result, report
