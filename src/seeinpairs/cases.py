"""Cases and case tables: the one record every data set is mapped onto.

A manifest (CSV, Parquet or JSONL) holds one row per case with the columns
``case_id, image|images, label, patient_id, age, sex, site, split``; any other
column travels along in ``Case.extra``. Validation collects *every* problem and
reports them in one line, each naming the row and field, so a user fixes a
manifest in one pass instead of one error at a time.

Image paths are confined: a path is resolved (following symlinks) and must lie
under the manifest's folder or the image root (or an extra root the caller
names, e.g. a data set adapter's folder), so a manifest from elsewhere cannot
make the tool read ``../../etc/passwd`` or a symlink out of the data. Users who
keep images elsewhere on purpose opt out (``allow_outside_root``). The rule is
applied here, where every command resolves image paths.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .errors import ConfigError, ManifestError
from .jsonl import JsonLineError, read_json_lines

CORE_FIELDS = ("case_id", "images", "label", "patient_id", "age", "sex", "site", "split")
IMAGE_LIST_SEPARATOR = ";"
_SEX_ALIASES = {
    "m": "M", "male": "M", "man": "M",
    "f": "F", "female": "F", "woman": "F",
    "o": "O", "other": "O",
}
_MAX_REPORTED_PROBLEMS = 8
#: The splits a manifest may name. ``site_reference`` holds the reserved healthy references of a
#: held-out site (written by the site-shift experiment); everything else is train/val/test.
SPLITS = ("train", "val", "test", "site_reference")
#: Accepted spellings (compared case-insensitively), normalised on load so that ``bank.split: val``
#: and ``eval.split: test`` find the cases whatever the source data set called them.
SPLIT_ALIASES = {
    "train": "train", "training": "train", "train_val": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
    "site_reference": "site_reference",
}


@dataclass(frozen=True)
class Case:
    """One imaging case: a query candidate or a reference.

    ``patient_id`` defaults to ``case_id`` when a data set has none, so that
    leakage checks are still well defined (each case its own patient).
    """

    case_id: str
    images: tuple[str, ...]
    label: str | None = None
    patient_id: str | None = None
    age: float | None = None
    sex: str | None = None
    site: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def image(self) -> str:
        """The first (primary) image of the case."""
        return self.images[0]

    @property
    def patient(self) -> str:
        return self.patient_id if self.patient_id is not None else self.case_id

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["images"] = list(self.images)
        return record


_LINE_BREAKS = re.compile("\\s*[\\r\\n\\x0b\\x0c\\x1c-\\x1e\\x85\\u2028\\u2029]+\\s*")


def _one_line(text: str) -> str:
    """Collapse line breaks (values quoted from a manifest may hold them) so a message is one line."""
    return _LINE_BREAKS.sub(" ", str(text))


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip() == "":
        return True
    if isinstance(value, (list, tuple, dict, set, np.ndarray)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays (Parquet, JSON readers) as plain Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_text(value: Any) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def normalise_sex(value: Any) -> str | None:
    """Map the spellings found in public data sets onto ``M``/``F``/``O``."""
    text = _as_text(value)
    if text is None:
        return None
    mapped = _SEX_ALIASES.get(text.lower())
    if mapped is None:
        raise ValueError(f"'{text}' is not a sex (use M/F/O, male/female/other)")
    return mapped


def normalise_split(value: Any) -> str | None:
    """A split name as one of :data:`SPLITS`; an unknown name is an error, never a new split
    (a typo such as ``tset`` would otherwise silently drop cases from evaluation)."""
    text = _as_text(value)
    if text is None:
        return None
    split = SPLIT_ALIASES.get(text.lower())
    if split is None:
        aliases = ", ".join(k for k in SPLIT_ALIASES if k not in SPLITS)
        raise ValueError(f"'{text}' is not a split (use {', '.join(SPLITS)}; also accepted: {aliases})")
    return split


def _parse_age(value: Any) -> float | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        raise ValueError(f"'{value}' is not a number")
    text = str(value).strip().upper()
    # DICOM-style ages ("062Y", "006M") appear in exported manifests.
    units = {"Y": 1.0, "M": 1 / 12, "W": 1 / 52, "D": 1 / 365}
    number = text[:-1].strip()
    if text and text[-1] in units and number.replace(".", "", 1).isdigit() and number.isascii():
        age = float(number) * units[text[-1]]
    else:
        try:
            age = float(text)
        except ValueError:
            raise ValueError(f"'{value}' is not a number") from None
    if not math.isfinite(age) or age < 0 or age > 150:
        raise ValueError(f"{age:g} is outside 0..150")
    return age


def _parse_images(value: Any) -> list[str]:
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value if not _is_missing(v)]
    elif _is_missing(value):
        items = []
    else:
        text = str(value).strip()
        parsed: Any = None
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None  # a file name that merely starts with '['
        if isinstance(parsed, list):
            items = [str(v).strip() for v in parsed if not _is_missing(v)]
        else:
            items = [p.strip() for p in text.split(IMAGE_LIST_SEPARATOR)]
    items = [i for i in items if i]
    if not items:
        raise ValueError("no image given")
    return items


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a manifest file by extension (CSV, TSV, Parquet, JSONL/JSON)."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            # utf-8-sig: spreadsheet exports often start with a byte-order mark
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                               encoding="utf-8-sig")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix == ".json":
            return pd.read_json(path, dtype=False, convert_dates=False, precise_float=True)
    except ManifestError:
        raise
    except Exception as exc:  # parsers raise many types; the user needs the file and the reason
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        raise ManifestError(f"{path}: cannot parse manifest ({reason})") from None
    raise ManifestError(f"{path}: unsupported manifest format '{suffix}' (use .csv, .tsv, .parquet or .jsonl)")


def _read_jsonl(path: Path) -> pd.DataFrame:
    """JSON Lines with the json module: exact floats, values kept as written (no type or date guessing)."""
    try:
        records = [record for _, record in read_json_lines(path)]
    except JsonLineError as exc:
        detail = exc.detail if exc.problem == "json" else "expected a JSON object per line"
        raise ManifestError(f"{path}: cannot parse manifest (line {exc.line_no}: {detail})") from None
    return pd.DataFrame(records, dtype=object)


class CaseTable(Sequence[Case]):
    """An ordered, id-unique collection of cases with split and label views."""

    def __init__(self, cases: Iterable[Case], source: str = "<memory>") -> None:
        self.cases: list[Case] = list(cases)
        self.source = source
        self._by_id: dict[str, Case] = {}
        for case in self.cases:
            if case.case_id in self._by_id:
                raise ManifestError(f"{source}: case_id '{case.case_id}' occurs more than once")
            self._by_id[case.case_id] = case

    # Sequence protocol
    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return CaseTable(self.cases[index], self.source)
        return self.cases[index]

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def get(self, case_id: str) -> Case:
        try:
            return self._by_id[case_id]
        except KeyError:
            raise ManifestError(f"{self.source}: no case with case_id '{case_id}'") from None

    def filter(self, split: str | None = None, labels: Iterable[str] | str | None = None) -> "CaseTable":
        if isinstance(labels, str):
            labels = [labels]  # one label, not the set of its characters
        wanted = set(labels) if labels is not None else None
        return CaseTable(
            (c for c in self.cases
             if (split is None or c.split == split) and (wanted is None or c.label in wanted)),
            self.source,
        )

    @property
    def splits(self) -> list[str]:
        return sorted({c.split for c in self.cases if c.split is not None})

    def _records(self, image_lists: bool) -> list[dict[str, Any]]:
        rows = []
        for case in self.cases:
            row = {k: getattr(case, k) for k in CORE_FIELDS}
            if image_lists:
                row["images"] = list(case.images)
            else:
                row["images"] = _join_images(case.images)
            row.update({k: _plain(v) for k, v in case.extra.items() if k not in row})
            rows.append(row)
        return rows

    def to_frame(self, image_lists: bool = False) -> pd.DataFrame:
        """One row per case; ``images`` joined with ';' (or as lists with ``image_lists``)."""
        rows = self._records(image_lists)
        return pd.DataFrame(rows, columns=None if rows else list(CORE_FIELDS))

    def save(self, path: str | Path) -> Path:
        """Write the table; image paths are written as stored (absolute after loading)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson"):
            raise ManifestError(f"{path}: unsupported manifest format '{suffix}' (use .csv, .tsv, .parquet or .jsonl)")
        try:
            # atomic: a manifest's existence means its data set is complete (generators write it last)
            with atomic_path(path) as tmp:
                if suffix in (".csv", ".tsv"):
                    self.to_frame().to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
                elif suffix in (".parquet", ".pq"):
                    self.to_frame(image_lists=True).to_parquet(tmp, index=False)
                else:
                    # json.dumps writes floats exactly (pandas' to_json rounds to 10 digits)
                    with open(tmp, "w", encoding="utf-8") as handle:
                        for record in self._records(image_lists=True):
                            clean = {k: (None if _is_missing(v) else v) for k, v in record.items()}
                            handle.write(json.dumps(clean, ensure_ascii=False, default=str) + "\n")
        except (ValueError, TypeError, OSError, ImportError) as exc:  # pyarrow type errors derive from these
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise ManifestError(f"{path}: cannot write manifest ({lines[0] if lines else type(exc).__name__})") from None
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        image_root: str | Path | None = None,
        classes: Sequence[str] | None = None,
        check_files: bool = True,
        roots: Sequence[str | Path] = (),
        allow_outside_root: bool = False,
    ) -> "CaseTable":
        """Load and validate a manifest.

        Relative image paths resolve against ``image_root`` (default: the
        manifest's folder). Every image must lie under the manifest's folder,
        ``image_root`` or one of ``roots`` unless ``allow_outside_root``. With
        ``classes`` given, the label column is required and labels outside the
        classes are errors. All problems are gathered and raised as one ManifestError.
        """
        path = Path(path)
        parsed = _parse_manifest(path, image_root, classes, check_files, roots, allow_outside_root)
        parsed.raise_problems()
        return cls(parsed.cases, str(path))

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        source: str = "<frame>",
        image_root: str | Path | None = None,
        classes: Sequence[str] | None = None,
        check_files: bool = True,
        roots: Sequence[str | Path] = (),
        allow_outside_root: bool = False,
    ) -> "CaseTable":
        """A table from a frame; with ``image_root`` or ``roots`` given, images must lie under them."""
        parsed = _parse_frame(frame, source, image_root, classes, check_files, roots, allow_outside_root)
        parsed.raise_problems()
        return cls(parsed.cases, source)


@dataclass
class ParsedManifest:
    """The usable cases of a manifest, every image that may be opened, and every problem found."""

    source: str
    cases: list[Case]
    images: list[tuple[int, str, str]]  # (row, field, path) of each image that exists inside the roots
    problems: list[tuple[int, str]]  # (row, message); row 0 for the manifest as a whole
    rows: int

    def add(self, row: int, field_name: str, message: str) -> None:
        self.problems.append((row, f"row {row} field '{field_name}': {message}"))

    def messages(self) -> list[str]:
        """Every problem, in row order, each one line."""
        return [_one_line(text) for _, text in sorted(self.problems, key=lambda p: p[0])]

    def raise_problems(self) -> None:
        """Raise all problems as one ManifestError (the first few spelled out), if there are any."""
        problems = self.messages()
        if problems:
            shown = "; ".join(problems[:_MAX_REPORTED_PROBLEMS])
            more = f"; and {len(problems) - _MAX_REPORTED_PROBLEMS} more" if len(problems) > _MAX_REPORTED_PROBLEMS else ""
            raise ManifestError(_one_line(f"{self.source}: {len(problems)} problem(s): {shown}{more}"))


def _parse_manifest(path: Path, image_root: str | Path | None, classes: Sequence[str] | None, check_files: bool,
                    roots: Sequence[str | Path], allow_outside_root: bool) -> ParsedManifest:
    frame = read_table(path)
    # absolute, so that stored paths stay valid wherever the table is saved next
    root = (Path(image_root).expanduser() if image_root is not None else path.parent).absolute()
    return _parse_frame(frame, str(path), root, classes, check_files, (path.parent.absolute(), *roots),
                        allow_outside_root)


def _resolve_image(image: str, root: Path | None, allowed: Sequence[Path], allow_outside_root: bool) -> Path:
    """The path of one manifest entry; ValueError if it resolves outside every allowed root."""
    image_path = Path(image).expanduser()
    if not image_path.is_absolute() and root is not None:
        image_path = root / image_path
    if allowed and not allow_outside_root:
        try:
            real = image_path.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            real = None
        if real is None or not any(real.is_relative_to(r) for r in allowed):
            raise ValueError(f"'{image}' lies outside the data folder ({', '.join(str(r) for r in allowed)}); "
                             "--allow-outside-root (data.allow_outside_root: true) permits it")
    return image_path


def _allowed_roots(image_root: Path | None, roots: Sequence[str | Path]) -> list[Path]:
    folders = ([image_root] if image_root is not None else []) + [Path(r).expanduser() for r in roots]
    unique: list[Path] = []
    for folder in folders:
        resolved = folder.absolute().resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def _parse_frame(frame: pd.DataFrame, source: str, image_root: str | Path | None, classes: Sequence[str] | None,
                 check_files: bool, roots: Sequence[str | Path], allow_outside_root: bool) -> ParsedManifest:
    """Check every row of a manifest frame; column-level problems raise at once."""
    columns = {str(c).strip(): c for c in frame.columns}
    image_column = "images" if "images" in columns else ("image" if "image" in columns else None)
    missing = [c for c in ("case_id",) if c not in columns]
    if image_column is None:
        missing.append("image (or images)")
    if classes is not None and "label" not in columns:
        missing.append("label (needed to check labels against the task's classes)")
    if missing:
        raise ManifestError(f"{source}: missing required column(s): {', '.join(missing)}")
    known = set(CORE_FIELDS) | {"image"}
    extra_columns = [c for c in columns if c not in known]
    root = Path(image_root).expanduser() if image_root is not None else None
    allowed_roots = _allowed_roots(root, roots)
    allowed = list(classes) if classes is not None else None
    parsed = ParsedManifest(source, [], [], [], len(frame))

    seen: dict[str, int] = {}
    for position, row in enumerate(frame.to_dict(orient="records")):
        row_no = position + 1
        row = {str(k).strip(): v for k, v in row.items()}

        def problem(field_name: str, message: str) -> None:
            parsed.add(row_no, field_name, message)

        # a bad case_id is reported, and the rest of the row is still checked
        case_id = _as_text(row.get("case_id"))
        usable = True
        if case_id is None:
            problem("case_id", "empty")
            usable = False
        elif case_id in seen:
            problem("case_id", f"'{case_id}' already used in row {seen[case_id]}")
            usable = False
        else:
            seen[case_id] = row_no

        try:
            images = _parse_images(row.get(image_column))
        except ValueError as exc:
            problem(image_column, str(exc))
            images = []
        resolved = []
        for image in images:
            try:
                image_path = _resolve_image(image, root, allowed_roots, allow_outside_root)
            except ValueError as exc:
                problem(image_column, str(exc))
                usable = False
                continue
            if check_files and not image_path.is_file():
                problem(image_column, f"file not found '{image_path}'")
            else:
                parsed.images.append((row_no, image_column, str(image_path)))
            resolved.append(str(image_path))

        label = _as_text(row.get("label"))
        if label is not None and allowed is not None and label not in allowed:
            problem("label", f"'{label}' is not one of [{', '.join(allowed)}]")
        try:
            age = _parse_age(row.get("age"))
        except ValueError as exc:
            problem("age", str(exc))
            age = None
        try:
            sex = normalise_sex(row.get("sex"))
        except ValueError as exc:
            problem("sex", str(exc))
            sex = None
        try:
            split = normalise_split(row.get("split"))
        except ValueError as exc:
            problem("split", str(exc))
            split = None
        extra = {c: _plain(row.get(c)) for c in extra_columns if not _is_missing(row.get(c))}
        if resolved and usable:
            parsed.cases.append(
                Case(
                    case_id=case_id,
                    images=tuple(resolved),
                    label=label,
                    patient_id=_as_text(row.get("patient_id")),
                    age=age,
                    sex=sex,
                    site=_as_text(row.get("site")),
                    split=split,
                    extra=extra,
                )
            )
    return parsed


@dataclass
class ManifestCheck:
    """What :func:`check_manifest` found: the parsed manifest (with every problem) and what it cost."""

    parsed: ParsedManifest
    decoded: int
    seconds: float

    @property
    def problems(self) -> list[str]:
        return self.parsed.messages()


def check_manifest(
    path: str | Path,
    image_root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    decode: bool = True,
    allow_outside_root: bool = False,
    roots: Sequence[str | Path] = (),
) -> ManifestCheck:
    """Check a manifest the way ``eval`` will use it: the same parsing and path rules as
    :meth:`CaseTable.load`, then every image opened with the same loader
    (:func:`seeinpairs.imaging.load_image`), so whatever ``eval`` would reject is found here,
    all of it in one pass. ``decode=False`` stops after the file checks."""
    from .errors import ImageError
    from .imaging import load_image

    started = time.perf_counter()
    parsed = _parse_manifest(Path(path), image_root, classes, True, roots, allow_outside_root)
    decoded = 0
    if decode:
        for row_no, field_name, image in parsed.images:
            try:
                load_image(image).close()
                decoded += 1
            except ImageError as exc:
                parsed.add(row_no, field_name, str(exc))
    return ManifestCheck(parsed, decoded, time.perf_counter() - started)


def _join_images(images: Sequence[str]) -> str:
    """';'-joined paths, or a JSON list where a path would be misread that way."""
    if any(IMAGE_LIST_SEPARATOR in i or i.strip() != i for i in images) or (images and images[0].startswith("[")):
        return json.dumps(list(images), ensure_ascii=False)
    return IMAGE_LIST_SEPARATOR.join(images)


def stable_digest(text: str) -> int:
    """A 64-bit integer from ``text`` that is the same in every process and Python run
    (unlike ``hash``): the per-case part of random streams that must not depend on order."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def with_split(case: Case, split: str) -> Case:
    return replace(case, split=split)


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """A random stream for one case under one seed, independent of processing order: reference
    choice and augmentation of a case come out the same whatever batch or process handles it."""
    return np.random.default_rng([seed, stable_digest(case_id)])


def select_eval_cases(table: CaseTable, split: str, max_cases: int | None) -> list[Case]:
    """The cases of ``split``, optionally capped to a fixed, order-independent subset (chosen by a hash
    of case ids, so evaluation and validation see the same cases however the table is ordered)."""
    cases = [c for c in table if c.split == split]
    if not cases:
        found = ", ".join(table.splits) or "none"
        raise ConfigError(f"{table.source}: no cases in evaluation split '{split}' (splits found: {found})")
    if max_cases is not None and len(cases) > max_cases:
        ranked = sorted(cases, key=lambda c: hashlib.sha256(c.case_id.encode()).hexdigest())
        keep = {c.case_id for c in ranked[:max_cases]}
        cases = [c for c in cases if c.case_id in keep]
    return cases
