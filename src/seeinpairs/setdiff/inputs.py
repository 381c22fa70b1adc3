"""Two image sets to compare: RadDiffBench / VisDiffBench files, or filters over a case table.

A :class:`SetPair` holds the two sets (image paths plus per-image metadata)
and, when known, the ground-truth conditions. RadDiffBench condition strings
are lemmatized and end with a space; they are kept byte-exact because judges
and published numbers compare against them verbatim. Paths that are not images
(e.g. a ``.jpg_.gstmp`` upload leftover in RadDiffBench) are dropped with a
warning rather than failing a 57-pair run on one stray file.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..cases import Case, CaseTable
from ..errors import SeeInPairsError
from ..jsonl import JsonLineError, read_json_lines

#: file suffixes read as images; anything else in an image list is dropped with a warning
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm", ".npy", ".gif", ".webp")
DIFFICULTIES = ("easy", "medium", "hard")
#: the official RadDiffBench difficulty CSV codes the levels as numbers (``1.0``, ``2.0``, ``3.0``)
NUMERIC_DIFFICULTIES = {1: "easy", 2: "medium", 3: "hard"}


class SetDiffError(SeeInPairsError):
    """A set-difference input (benchmark file, filter, hypothesis list) is invalid."""


@dataclass
class ImageSet:
    """One side of a comparison: image paths and, per image, optional metadata (ground truth) and
    report text (``None`` where an image has none; kept apart from metadata, which reports render,
    because report text may hold patient data -- see :mod:`.reports`)."""

    name: str
    images: list[str]
    metadata: list[dict[str, Any]] = field(default_factory=list)
    reports: list[str | None] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.metadata:
            self.metadata = [{} for _ in self.images]
        if not self.reports:
            self.reports = [None for _ in self.images]
        if len(self.reports) != len(self.images):
            raise SetDiffError(f"set '{self.name}': {len(self.images)} images but {len(self.reports)} reports")
        if len(self.metadata) != len(self.images):
            raise SetDiffError(f"set '{self.name}': {len(self.images)} images but {len(self.metadata)} metadata rows")

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class SetPair:
    """Two image sets and what is known about their difference.

    ``set1_condition``/``set2_condition``: ground-truth conditions (RadDiffBench
    ``set1``/``set2``), byte-exact; ``difference``: a VisDiff-style sentence
    (what set1 has more of), when given.
    """

    pair_id: str
    set1: ImageSet
    set2: ImageSet
    set1_condition: str | None = None
    set2_condition: str | None = None
    difference: str | None = None
    difficulty: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def truth(self) -> str | None:
        """The text a hypothesis should match: the VisDiff difference, else the set1 condition."""
        return self.difference if self.difference is not None else self.set1_condition


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _resolve(path: str, root: Path | None) -> str:
    candidate = Path(path)
    return str(candidate if candidate.is_absolute() or root is None else root / candidate)


def clean_image_list(paths: Any, where: str, root: Path | None) -> list[str]:
    """Image paths resolved against ``root``; non-image entries dropped with one warning naming them."""
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise SetDiffError(f"{where}: expected a list of image paths")
    kept = [p for p in paths if _is_image(p)]
    dropped = [p for p in paths if not _is_image(p)]
    if dropped:
        warnings.warn(f"{where}: dropped {len(dropped)} non-image path(s): {', '.join(dropped[:3])}", stacklevel=3)
    if not kept:
        raise SetDiffError(f"{where}: no image paths left")
    return [_resolve(p, root) for p in kept]


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise SetDiffError(f"{path}: file not found")
    try:
        rows = list(read_json_lines(path))
    except JsonLineError as exc:
        detail = f"invalid JSON ({exc.detail})" if exc.problem == "json" else "expected a JSON object"
        raise SetDiffError(f"{path}: line {exc.line_no}: {detail}") from None
    if not rows:
        raise SetDiffError(f"{path}: no rows")
    return rows


def _require(record: dict[str, Any], keys: Sequence[str], where: str) -> None:
    for key in keys:
        if key not in record:
            raise SetDiffError(f"{where}: field '{key}' is missing")


def read_difficulties(path: str | Path, n_rows: int) -> list[str]:
    """The ``difficulty`` column of a row-aligned CSV (row i describes benchmark line i)."""
    path = Path(path)
    if not path.is_file():
        raise SetDiffError(f"{path}: file not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    column = next((c for c in frame.columns if c.strip().lower() == "difficulty"), None)
    if column is None:
        raise SetDiffError(f"{path}: field 'difficulty' is missing (columns: {', '.join(frame.columns)})")
    if len(frame) != n_rows:
        raise SetDiffError(f"{path}: {len(frame)} rows but the benchmark has {n_rows} pairs (rows must align)")
    values = []
    for row, value in enumerate(frame[column], start=2):
        level = difficulty_level(value)
        if level is None:
            raise SetDiffError(f"{path}: line {row}: field 'difficulty' is '{value}' "
                               f"(use {', '.join(DIFFICULTIES)} or their codes 1, 2, 3)")
        values.append(level)
    return values


def difficulty_level(value: Any) -> str | None:
    """``easy``/``medium``/``hard`` from a name or a numeric code (1 = easy ... 3 = hard), else None.

    Release files differ: the RadDiffBench difficulty CSV writes ``2.0``, other files write
    ``medium``; both mean the same level.
    """
    text = str(value).strip().lower()
    if text in DIFFICULTIES:
        return text
    try:
        number = float(text)
    except ValueError:
        return None
    return NUMERIC_DIFFICULTIES.get(int(number)) if number.is_integer() else None


def load_raddiff(path: str | Path, image_root: str | Path | None = None,
                 difficulty_csv: str | Path | None = None) -> list[SetPair]:
    """RadDiffBench JSONL: ``{"set1", "set2", "set1_images", "set2_images"}`` per line.

    ``set1``/``set2`` are kept byte-exact as ``set1_condition``/``set2_condition``;
    image paths are relative to ``image_root`` (the MIMIC-CXR-JPG ``files`` folder), or to the
    JSONL's folder without one (the rule of every benchmark format here).
    ``difficulty_csv``: the row-aligned CSV with a ``difficulty`` column.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    rows = _read_jsonl(path)
    difficulties = read_difficulties(difficulty_csv, len(rows)) if difficulty_csv is not None else [None] * len(rows)
    pairs = []
    for index, ((line_no, record), difficulty) in enumerate(zip(rows, difficulties)):
        where = f"{path}: line {line_no}"
        _require(record, ("set1", "set2", "set1_images", "set2_images"), where)
        for key in ("set1", "set2"):
            if not isinstance(record[key], str):
                raise SetDiffError(f"{where}: field '{key}' must be a string")
        set1 = ImageSet(record["set1"], clean_image_list(record["set1_images"], f"{where} field 'set1_images'", root))
        set2 = ImageSet(record["set2"], clean_image_list(record["set2_images"], f"{where} field 'set2_images'", root))
        pairs.append(SetPair(f"raddiff-{index:03d}", set1, set2, set1_condition=record["set1"],
                             set2_condition=record["set2"], difficulty=difficulty))
    return pairs


def _folder_images(folder: Path, where: str) -> list[str]:
    if not folder.is_dir():
        raise SetDiffError(f"{where}: image folder '{folder}' not found")
    return clean_image_list(sorted(str(p) for p in folder.iterdir() if p.is_file()), where, None)


def load_visdiff_jsonl(path: str | Path, image_root: str | Path | None = None,
                       difficulty: str | None = None) -> list[SetPair]:
    """VisDiffBench PairedImageSets JSONL: ``{"set1", "set2", "difference"}`` per line.

    ``set1``/``set2`` name image folders under ``image_root`` (or carry explicit
    ``set1_images``/``set2_images`` lists); ``difficulty`` defaults to the file
    name's easy/medium/hard when it contains one.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if difficulty is None:
        difficulty = next((d for d in DIFFICULTIES if d in path.stem.lower()), None)
    pairs = []
    for index, (line_no, record) in enumerate(_read_jsonl(path)):
        where = f"{path}: line {line_no}"
        _require(record, ("set1", "set2", "difference"), where)
        sets = []
        for key in ("set1", "set2"):
            listed = record.get(f"{key}_images")
            images = (clean_image_list(listed, f"{where} field '{key}_images'", root) if listed is not None
                      else _folder_images(root / str(record[key]), f"{where} field '{key}'"))
            sets.append(ImageSet(str(record[key]), images))
        pairs.append(SetPair(f"visdiff-{path.stem}-{index:03d}", sets[0], sets[1], difference=str(record["difference"]),
                             difficulty=str(record.get("difficulty", difficulty) or "") or None))
    return pairs


def load_visdiff_csv(path: str | Path, image_root: str | Path | None = None) -> list[SetPair]:
    """VisDiff CSV: one row per image, ``path, group_name[, difference, difficulty]``.

    Rows sharing a ``difference`` (or all rows, without that column) form one
    pair; its two ``group_name`` values in order of first appearance are set1 and set2.
    """
    path = Path(path)
    if not path.is_file():
        raise SetDiffError(f"{path}: file not found")
    root = Path(image_root) if image_root is not None else path.parent
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("path", "group_name"):
        if column not in frame.columns:
            raise SetDiffError(f"{path}: field '{column}' is missing (columns: {', '.join(frame.columns)})")
    key = "difference" if "difference" in frame.columns else None
    groups = frame.groupby(key, sort=False) if key else [(None, frame)]
    pairs = []
    for index, (difference, rows) in enumerate(groups):
        names = list(dict.fromkeys(rows["group_name"]))
        if len(names) != 2:
            first = int(rows.index[0]) + 2
            raise SetDiffError(f"{path}: line {first}: field 'group_name' has {len(names)} groups for one pair "
                               f"({', '.join(names)}); expected 2")
        sets = [ImageSet(n, clean_image_list(list(rows.loc[rows["group_name"] == n, "path"]),
                                             f"{path} group '{n}'", root)) for n in names]
        level = rows["difficulty"].iloc[0] if "difficulty" in rows.columns else None
        pairs.append(SetPair(f"visdiff-{path.stem}-{index:03d}", sets[0], sets[1],
                             difference=str(difference) if difference is not None else None,
                             difficulty=(level or None)))
    return pairs


# ----- case-table filters -----------------------------------------------------------------------------
_CLAUSE = re.compile(r"^\s*(\w+)\s*(==|!=|>=|<=|>|<|in)\s*(.+?)\s*$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}


def _field(case: Case, name: str) -> Any:
    if name in ("case_id", "label", "patient_id", "age", "sex", "site", "split"):
        return getattr(case, name)
    return case.extra.get(name)


def _literal(text: str) -> str:
    return text.strip().strip("'\"")


def parse_filter(expression: str) -> Callable[[Case], bool]:
    """A case predicate from ``field op value`` clauses joined by ``and``.

    Examples: ``label == pneumonia``, ``site == A``, ``age >= 65``, ``age >= 20 and age < 40``,
    ``label in pneumonia,effusion``. Fields: the Case fields and any ``extra`` column.
    """
    clauses = [c for c in re.split(r"\s+and\s+", expression.strip()) if c]
    if not clauses:
        raise SetDiffError(f"filter '{expression}': empty")
    tests: list[Callable[[Case], bool]] = []
    for clause in clauses:
        match = _CLAUSE.match(clause)
        if not match:
            raise SetDiffError(f"filter '{expression}': cannot read '{clause}' (use: field op value, op one of "
                               "==, !=, >=, <=, >, <, in)")
        name, op, raw = match.groups()
        if op == "in":
            allowed = {_literal(v) for v in raw.split(",")}
            tests.append(lambda c, n=name, a=allowed: _field(c, n) is not None and str(_field(c, n)) in a)
        elif op in ("==", "!="):
            value = _literal(raw)
            tests.append(lambda c, n=name, v=value, o=_OPS[op]: o(str(_field(c, n)) if _field(c, n) is not None
                                                                    else None, v))
        else:
            try:
                number = float(_literal(raw))
            except ValueError:
                raise SetDiffError(f"filter '{expression}': '{raw}' is not a number (needed for {op})") from None

            def numeric(c: Case, n: str = name, v: float = number, o: Callable = _OPS[op]) -> bool:
                value = _field(c, n)
                try:
                    return value is not None and o(float(value), v)
                except (TypeError, ValueError):
                    return False

            tests.append(numeric)
    return lambda case: all(test(case) for test in tests)


def _case_metadata(case: Case) -> dict[str, Any]:
    return {"case_id": case.case_id, "label": case.label, "age": case.age, "sex": case.sex, "site": case.site,
            **case.extra}


def pair_from_table(table: CaseTable, filter1: str, filter2: str, name1: str | None = None,
                    name2: str | None = None, max_images: int | None = None,
                    pair_id: str = "cases") -> SetPair:
    """Two sets selected from a case table, e.g. ``label == pneumonia`` vs ``label == normal``.

    A case in both sets is an error (the sets would not be distinguishable by
    construction); ``max_images`` keeps the first that many of each set in table order.
    """
    sets = []
    for expression, name in ((filter1, name1), (filter2, name2)):
        test = parse_filter(expression)
        chosen = [c for c in table if test(c)][:max_images]
        if not chosen:
            raise SetDiffError(f"{table.source}: filter '{expression}' selects no case")
        sets.append(ImageSet(name or expression, [c.image for c in chosen], [_case_metadata(c) for c in chosen]))
    overlap = {m["case_id"] for m in sets[0].metadata} & {m["case_id"] for m in sets[1].metadata}
    if overlap:
        raise SetDiffError(f"{table.source}: filters '{filter1}' and '{filter2}' both select {len(overlap)} case(s), "
                           f"e.g. '{min(overlap)}'")
    return SetPair(pair_id, sets[0], sets[1])


def benchmark_format(path: str | Path, fmt: str = "auto") -> str:
    """``raddiff``, ``visdiff`` or ``visdiff_csv``: ``fmt`` itself, or read from the file when ``auto``."""
    path = Path(path)
    if fmt != "auto":
        return fmt
    if path.suffix.lower() == ".csv":
        return "visdiff_csv"
    first = _read_jsonl(path)[0][1]
    return "raddiff" if "set1_images" in first and "difference" not in first else "visdiff"


def load_pairs(path: str | Path, image_root: str | Path | None = None, difficulty_csv: str | Path | None = None,
               fmt: str = "auto") -> list[SetPair]:
    """Any supported benchmark file; ``fmt`` ``auto`` reads the first JSONL line's fields (or the CSV).

    Relative image paths start from ``image_root`` when given, else from the benchmark file's folder.
    """
    path = Path(path)
    fmt = benchmark_format(path, fmt)
    if fmt == "raddiff":
        return load_raddiff(path, image_root, difficulty_csv)
    if fmt == "visdiff":
        return load_visdiff_jsonl(path, image_root)
    if fmt == "visdiff_csv":
        return load_visdiff_csv(path, image_root)
    raise SetDiffError(f"unknown benchmark format '{fmt}' (use auto, raddiff, visdiff, visdiff_csv)")
