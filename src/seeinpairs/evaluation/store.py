"""Append-only prediction store that survives being killed mid-run.

Evaluations are long and get interrupted (pre-emption, OOM, Ctrl-C). Each
prediction is therefore one JSON line in ``predictions.jsonl``, appended and
fsync'ed as soon as it exists, so a restart can ask :meth:`PredictionStore.done`
which cases are finished and skip them. ``runs.json`` maps a short run key to
the full condition (model, mode, selector, k, seed, ...) that produced it; it is
rewritten atomically (temp file + ``os.replace``) so it is always either the old
or the new version, never half of each.

Crash model: a line counts as committed once its trailing newline is on disk.
An unterminated last line is what a killed writer leaves behind; reads ignore it
(unless it happens to be a complete JSON object) and the next append cuts it
away first, so a new line never glues onto a fragment. A malformed line *before*
the end cannot come from a crash, only from outside edits or disk damage, so it
is an error naming the file and line rather than something silently skipped.

Data-parallel runs: a store opened with ``rank=r`` appends to its own
``predictions.rank{r}.jsonl`` (no two processes ever write one file), while
reads of any store merge ``predictions.jsonl`` and every rank file (in rank
order, first record per (run_key, case_id) wins), so a later single-process run
resumes from what all ranks wrote. ``runs.json`` is written by rank 0 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..atomic import atomic_write_text
from ..errors import SeeInPairsError

PREDICTIONS_FILE = "predictions.jsonl"
RUNS_FILE = "runs.json"
_RANK_FILE = re.compile(r"^predictions\.rank(\d+)\.jsonl$")


def rank_file_name(rank: int) -> str:
    """The predictions file a data-parallel rank appends to."""
    return f"predictions.rank{int(rank)}.jsonl"

#: Column order for :meth:`PredictionStore.frame` (extra keys follow these).
RECORD_FIELDS: tuple[str, ...] = (
    "run_key",
    "case_id",
    "mode",
    "selector",
    "k",
    "seed",
    "reference_ids",
    "options",
    "option_logprobs",
    "probabilities",
    "predicted",
    "gold",
    "selection_note",
    "seconds",
)

# One lock per predictions file, so threads of one process never interleave
# the repair-then-append sequence on the same file.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class StoreError(SeeInPairsError):
    """The prediction store is inconsistent, corrupt, or was given bad data."""


def canonical_json(value: Any) -> str:
    """Serialise ``value`` deterministically (sorted keys, fixed separators).

    Raises :class:`StoreError` for values JSON cannot represent faithfully
    (objects, NaN/inf), because a key derived from a lossy encoding would make
    two different conditions collide or one condition hash differently later.
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"condition is not JSON-serialisable: {exc}") from None


def run_key(condition: dict[str, Any]) -> str:
    """Short stable identifier of a condition: sha256 of its canonical JSON, 16 hex chars.

    Independent of dict key order, so the same experiment config always maps to
    the same key and resumes into the same run.
    """
    if not isinstance(condition, dict):
        raise StoreError(f"condition must be a dict, got {type(condition).__name__}")
    return hashlib.sha256(canonical_json(condition).encode("utf-8")).hexdigest()[:16]


def _lock_for(path: Path) -> threading.Lock:
    key = str(path.resolve())
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


class PredictionStore:
    """Predictions of all runs in one directory: ``predictions.jsonl`` (+ rank files) + ``runs.json``.

    ``rank`` (a data-parallel process index) makes appends go to
    ``predictions.rank{rank}.jsonl``; reads always merge every predictions file.
    """

    def __init__(self, directory: str | Path, rank: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.predictions_path = self.directory / PREDICTIONS_FILE
        self.runs_path = self.directory / RUNS_FILE
        self.rank = rank
        self.write_path = self.predictions_path if rank is None else self.directory / rank_file_name(rank)
        self._lock = _lock_for(self.write_path)

    def prediction_files(self) -> list[Path]:
        """``predictions.jsonl`` then the rank files in rank order (those that exist)."""
        ranked = []
        for path in self.directory.glob("predictions.rank*.jsonl"):
            match = _RANK_FILE.match(path.name)
            if match:
                ranked.append((int(match.group(1)), path))
        files = [self.predictions_path] if self.predictions_path.exists() else []
        return files + [path for _, path in sorted(ranked)]

    # ------------------------------------------------------------------ runs
    def conditions(self) -> dict[str, dict[str, Any]]:
        """All registered runs: run key -> condition."""
        if not self.runs_path.exists():
            return {}
        try:
            data = json.loads(self.runs_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{self.runs_path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise StoreError(f"{self.runs_path}: expected a JSON object of run_key -> condition")
        return data

    def register_run(self, key: str, condition: dict[str, Any]) -> None:
        """Record which condition ``key`` stands for.

        Re-registering the same condition is a no-op (that is what resuming
        does); a different condition under an existing key is an error, since
        mixing its predictions with the old ones would corrupt every metric.
        """
        if not isinstance(key, str) or not key:
            raise StoreError("run key must be a non-empty string")
        encoded = canonical_json(condition)
        with self._lock:
            runs = self.conditions()
            if key in runs:
                if canonical_json(runs[key]) != encoded:
                    raise StoreError(
                        f"run '{key}' is already registered in {self.runs_path} with a different condition: "
                        f"stored {canonical_json(runs[key])}, new {encoded}"
                    )
                return
            runs[key] = json.loads(encoded)
            self._write_runs(runs)

    def _write_runs(self, runs: dict[str, Any]) -> None:
        atomic_write_text(self.runs_path, json.dumps(runs, sort_keys=True, indent=2, ensure_ascii=False) + "\n")

    # ----------------------------------------------------------- predictions
    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append records durably; returns how many were written.

        All records are serialised before anything touches the file, so a bad
        record aborts the whole batch instead of leaving half of it written.
        """
        lines = [self._encode(r) for r in records]
        if not lines:
            return 0
        payload = "".join(lines).encode("utf-8")
        with self._lock:
            self._repair_tail()
            with open(self.write_path, "ab") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
        return len(lines)

    @staticmethod
    def _encode(record: dict[str, Any]) -> str:
        if not isinstance(record, dict):
            raise StoreError(f"a prediction record must be a dict, got {type(record).__name__}")
        for field in ("run_key", "case_id"):
            if not isinstance(record.get(field), str) or not record[field]:
                raise StoreError(f"prediction record lacks a non-empty string '{field}': {record!r:.200}")
        try:
            # allow_nan: log-probabilities of impossible options are -inf, and
            # Python's json round-trips that; strict JSON readers are not a target.
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"prediction for case '{record['case_id']}' is not JSON-serialisable: {exc}") from None
        return line + "\n"

    def _repair_tail(self) -> None:
        """Make the file end in a newline: complete a whole trailing object, cut a fragment."""
        path = self.write_path
        if not path.exists():
            return
        with open(path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            # Find the start of the unterminated last line.
            start = size
            block = 65536
            while start > 0:
                lo = max(0, start - block)
                fh.seek(lo)
                chunk = fh.read(start - lo)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    start = lo + nl + 1
                    break
                start = lo
            fh.seek(start)
            tail = fh.read()
            if _parse_object(tail) is not None:
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
            else:
                fh.truncate(start)
            fh.flush()
            os.fsync(fh.fileno())

    def _read_all(self) -> list[dict[str, Any]]:
        return [rec for path in self.prediction_files() for rec in self._read_file(path)]

    @staticmethod
    def _read_file(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        data = path.read_bytes()
        lines = data.split(b"\n")
        # After split, the last element is b"" if the file ends with a newline,
        # otherwise it is the unterminated (possibly partial) last line.
        tail = lines.pop()
        out: list[dict[str, Any]] = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            obj = _parse_object(raw)
            if obj is None:
                raise StoreError(
                    f"{path}: line {number} is not a valid JSON prediction record "
                    f"(corrupt or hand-edited; fix or remove that line): {raw[:80]!r}"
                )
            _check_keys(obj, path, number)
            out.append(obj)
        if tail.strip():
            obj = _parse_object(tail)
            if obj is not None:  # complete record, only its newline was lost
                _check_keys(obj, path, len(lines) + 1)
                out.append(obj)
        return out

    def records(self, key: str | None = None) -> list[dict[str, Any]]:
        """Records in file order (all predictions files merged), optionally for one run;
        first one wins per (run_key, case_id).

        Keeping the first makes a resumed run that re-predicts a case (e.g. after
        a crash between predicting and recording ``done``) harmless.
        """
        seen: set[tuple[str, str]] = set()
        out: list[dict[str, Any]] = []
        for rec in self._read_all():
            if key is not None and rec["run_key"] != key:
                continue
            ident = (rec["run_key"], rec["case_id"])
            if ident in seen:
                continue
            seen.add(ident)
            out.append(rec)
        return out

    def done(self, key: str) -> set[str]:
        """Case ids already predicted for run ``key`` (what a resume skips)."""
        return {rec["case_id"] for rec in self.records(key)}

    def frame(self, key: str | None = None) -> pd.DataFrame:
        """Records as a DataFrame with the standard columns first (present even when empty)."""
        recs = self.records(key)
        frame = pd.DataFrame.from_records(recs) if recs else pd.DataFrame()
        extra = [c for c in frame.columns if c not in RECORD_FIELDS]
        return frame.reindex(columns=list(RECORD_FIELDS) + extra)


def _parse_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in ``raw``, or None if it is not one (partial, garbage, bad UTF-8)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _check_keys(obj: dict[str, Any], path: Path, number: int) -> None:
    for field in ("run_key", "case_id"):
        if not isinstance(obj.get(field), str):
            raise StoreError(f"{path}: line {number} has no string '{field}' field")
