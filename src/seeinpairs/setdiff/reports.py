"""Clinical reports joined to the images of set pairs, for report-guided proposers.

Three sources (:func:`load_report_source`):

* ``mimic`` -- MIMIC-CXR's layout: the report of study ``sXXXXXXXX`` is
  ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` beside the folder
  ``files/pXX/pXXXXXXXX/sXXXXXXXX/`` holding its ``<dicom_id>.jpg`` images, so
  the study id is read from the image path (RadDiffBench paths carry it); a
  ``report_root`` names another ``files`` folder (the reports archive unpacked
  apart from the JPGs);
* ``csv`` -- a CSV with a ``report`` column and an ``image`` column (a path,
  relative to the CSV's folder, or a bare file name / DICOM id) or a ``study``
  column (a study id such as ``s50414267``);
* ``column`` -- a column of the case table the sets were filtered from (its
  value travels in each image's metadata).

Reports may hold patient data: they are kept in :attr:`ImageSet.reports` (not
in metadata, which reports render), never logged, and only
sent to a backend a proposer is given. Missing reports are counted
(:class:`ReportCoverage`), never fatal: a proposer sees the reports it has.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from .inputs import SetDiffError, SetPair

#: ``.../pXX/pXXXXXXXX/sXXXXXXXX/<file>``: patient group, patient and study folders of MIMIC-CXR
MIMIC_STUDY = re.compile(r"(?:^|/)(p\d{2})/(p\d+)/(s\d+)/[^/]+$")
#: report section headers that carry the findings (the rest: history, technique, comparison)
KEPT_SECTIONS = ("findings", "impression")
_HEADER = re.compile(r"^\s*([A-Z][A-Z /]{2,40}):", re.MULTILINE)


def study_key(image: str) -> tuple[str, str, str] | None:
    """``(pXX, pXXXXXXXX, sXXXXXXXX)`` from a MIMIC-style image path, else ``None``.

    Works on any file name in the study folder, a ``.jpg_.gstmp`` upload leftover included.
    """
    match = MIMIC_STUDY.search(Path(image).as_posix())
    return match.groups() if match else None


def report_sections(text: str, budget: int = 600, sections: Sequence[str] = KEPT_SECTIONS) -> str:
    """The findings and impression of a report (the whole text when it has neither), whitespace
    collapsed and cut to ``budget`` characters at a word boundary: the part of a report that states
    what the image shows, in a size that lets 20 reports per set fit a prompt."""
    headers = list(_HEADER.finditer(text))
    parts = []
    for i, header in enumerate(headers):
        if header.group(1).strip().lower() in sections:
            end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
            parts.append(text[header.end():end])
    body = " ".join(" ".join(parts if parts else [text]).split())
    if len(body) <= budget:
        return body
    cut = body[:budget].rsplit(" ", 1)[0]
    return cut + " ..."


class ReportSource(Protocol):
    """Finds the report of one image (``None`` when it has none)."""

    name: str

    def lookup(self, image: str, metadata: Mapping[str, Any]) -> str | None: ...


@dataclass
class MimicReports:
    """``sXXXXXXXX.txt`` beside the study folder of each image, or under ``report_root`` (a ``files`` folder)."""

    report_root: Path | None = None
    name: str = "mimic"

    def path(self, image: str) -> Path | None:
        key = study_key(image)
        if key is None:
            return None
        if self.report_root is None:
            return Path(image).parent.parent / f"{key[2]}.txt"
        return Path(self.report_root) / key[0] / key[1] / f"{key[2]}.txt"

    def lookup(self, image: str, metadata: Mapping[str, Any]) -> str | None:
        path = self.path(image)
        if path is None or not path.is_file():
            return None
        return path.read_text(encoding="utf-8", errors="replace")


@dataclass
class CsvReports:
    """Reports keyed by image path (relative to ``root``), bare file name / stem, or study id."""

    by_path: dict[str, str] = field(default_factory=dict)
    by_stem: dict[str, str] = field(default_factory=dict)
    by_study: dict[str, str] = field(default_factory=dict)
    name: str = "csv"

    @classmethod
    def read(cls, path: str | Path, root: str | Path | None = None) -> CsvReports:
        """Read the CSV; image paths with a folder part start from ``root``, else the CSV's folder."""
        path = Path(path)
        if not path.is_file():
            raise SetDiffError(f"{path}: report file not found")
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise SetDiffError(f"{path}: cannot read as CSV ({str(exc).splitlines()[0]})") from None
        columns = {c.strip().lower(): c for c in frame.columns}
        if "report" not in columns:
            raise SetDiffError(f"{path}: field 'report' is missing (columns: {', '.join(frame.columns)})")
        key = next((columns[c] for c in ("image", "path", "study", "study_id") if c in columns), None)
        if key is None:
            raise SetDiffError(f"{path}: field 'image' or 'study' is missing (columns: {', '.join(frame.columns)})")
        base = Path(root) if root is not None else path.parent
        out = cls()
        for value, report in zip(frame[key], frame[columns["report"]]):
            value = value.strip()
            if not value or not report.strip():
                continue  # an empty report is a missing one
            if key.strip().lower() in ("study", "study_id"):
                out.by_study[value if value.startswith("s") else f"s{value}"] = report
            elif "/" in value or "\\" in value:
                out.by_path[_norm(value if Path(value).is_absolute() else str(base / value))] = report
            else:
                out.by_stem[Path(value).stem] = report
                out.by_stem.setdefault(value, report)
        return out

    def lookup(self, image: str, metadata: Mapping[str, Any]) -> str | None:
        found = self.by_path.get(_norm(image)) or self.by_stem.get(Path(image).stem)
        if found is None and self.by_study:
            key = study_key(image)
            found = self.by_study.get(key[2]) if key else None
        return found


def _norm(path: str) -> str:
    """One spelling per file (absolute, ``..`` and doubled separators resolved) without touching the disk."""
    return os.path.normpath(os.path.abspath(path))


@dataclass
class ColumnReports:
    """A case-table column: each image's metadata (filled by :func:`~.inputs.pair_from_table`) holds it."""

    column: str
    name: str = "column"

    def lookup(self, image: str, metadata: Mapping[str, Any]) -> str | None:
        value = metadata.get(self.column)
        return str(value) if value is not None and str(value).strip() else None


def load_report_source(kind: str, location: str | Path | None = None, root: str | Path | None = None) -> ReportSource:
    """``mimic`` (``location``: the folder holding ``pXX`` report folders, or ``None`` for beside the
    images), ``csv`` (``location``: the CSV), or ``column`` (``location``: the case-table column)."""
    if kind == "mimic":
        if location is not None and not Path(location).is_dir():
            raise SetDiffError(f"{location}: report folder not found")
        return MimicReports(Path(location) if location is not None else None)
    if kind == "csv":
        if location is None:
            raise SetDiffError("report source 'csv' needs the CSV file")
        return CsvReports.read(location, root)
    if kind == "column":
        if not location:
            raise SetDiffError("report source 'column' needs the case-table column name")
        return ColumnReports(str(location))
    raise SetDiffError(f"unknown report source '{kind}' (use mimic, csv or column)")


@dataclass
class ReportCoverage:
    """How many images got a report, overall and per pair; missing images named by path, never by text."""

    source: str
    images: int = 0
    found: int = 0
    per_pair: dict[str, dict[str, int]] = field(default_factory=dict)
    missing_examples: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.images - self.found

    def describe(self) -> str:
        """One line for the console and the run settings."""
        line = f"reports ({self.source}): {self.found} of {self.images} images have one, {self.missing} missing"
        empty = [p for p, c in self.per_pair.items() if c["found"] == 0]
        if empty:
            line += f"; {len(empty)} pair(s) with none (e.g. {empty[0]})"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "images": self.images, "found": self.found, "missing": self.missing,
                "per_pair": self.per_pair, "missing_examples": self.missing_examples}


def attach_reports(pairs: Sequence[SetPair], source: ReportSource, max_examples: int = 5) -> ReportCoverage:
    """Fill ``reports`` of every image set from ``source``; images without one get ``None`` and are counted."""
    coverage = ReportCoverage(source.name)
    for pair in pairs:
        counts = {"images": 0, "found": 0}
        for image_set in (pair.set1, pair.set2):
            image_set.reports = [source.lookup(p, m) for p, m in zip(image_set.images, image_set.metadata)]
            found = sum(r is not None for r in image_set.reports)
            counts["images"] += len(image_set.images)
            counts["found"] += found
            missing = [p for p, r in zip(image_set.images, image_set.reports) if r is None]
            coverage.missing_examples += missing[: max(0, max_examples - len(coverage.missing_examples))]
        coverage.images += counts["images"]
        coverage.found += counts["found"]
        coverage.per_pair[pair.pair_id] = counts
    return coverage
