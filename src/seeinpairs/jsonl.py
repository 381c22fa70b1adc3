"""JSON Lines reading shared by every loader that accepts ``.jsonl`` files.

Values are kept exactly as written (the json module: exact floats, no type or
date guessing), blank lines are skipped and a byte-order mark is tolerated.
Problems raise :class:`JsonLineError` with the line number, so each caller can
phrase the one-line error in its own terms (manifest, benchmark file, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonLineError(ValueError):
    """A line that is not valid JSON (``problem == "json"``) or not a JSON object (``"object"``)."""

    def __init__(self, line_no: int, problem: str, detail: str) -> None:
        super().__init__(f"line {line_no}: {detail}")
        self.line_no, self.problem, self.detail = line_no, problem, detail


def read_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, record) for every non-blank line of ``path``."""
    with open(path, encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JsonLineError(line_no, "json", exc.msg) from None
            if not isinstance(record, dict):
                raise JsonLineError(line_no, "object", "expected a JSON object")
            yield line_no, record
