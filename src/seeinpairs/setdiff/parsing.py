"""Tolerant reading of model replies: hypothesis lists, zoom boxes and judge scores.

Language models asked for JSON return fenced code, trailing commas, single
quotes, prose around the list or a numbered list instead. Each reader tries
strict JSON first, then repairs and extracts the first bracketed block, then a
line-based fallback, and says whether strict parsing succeeded so callers can
count failures instead of hiding them.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s+(.+?)\s*$")
_TEXT_KEYS = ("difference", "hypothesis", "text", "description", "concept", "finding")
_LIST_KEYS = ("differences", "hypotheses", "items", "results", "concepts", "boxes")


@dataclass
class Parsed:
    """A parsed value and how it was obtained: ``strict`` JSON, ``repaired`` JSON, ``lines`` or ``failed``."""

    value: Any
    how: str

    @property
    def ok(self) -> bool:
        return self.how != "failed"


def _bracketed(text: str, opener: str, closer: str) -> str | None:
    """The first balanced ``opener ... closer`` block (quotes respected), or the tail if unbalanced."""
    start = text.find(opener)
    if start < 0:
        return None
    depth, quote, escaped = 0, None, False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return text[start:] + closer * depth  # truncated generation: close what was opened


def _loads(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except (json.JSONDecodeError, ValueError):
        pass
    repaired = _TRAILING_COMMA.sub(r"\1", candidate)
    try:
        return json.loads(repaired)
    except (json.JSONDecodeError, ValueError):
        pass
    try:  # single-quoted Python-style literals
        return ast.literal_eval(repaired)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not JSON") from None


def parse_json_block(text: str) -> Parsed:
    """The JSON value in ``text``: whole text, else fenced code, else the first ``[...]``/``{...}`` block."""
    try:
        return Parsed(json.loads(text), "strict")
    except (json.JSONDecodeError, ValueError, TypeError):
        pass
    candidates = [m.group(1) for m in _FENCE.finditer(text or "")]
    positions = sorted((p, o, c) for o, c in (("[", "]"), ("{", "}")) if (p := (text or "").find(o)) >= 0)
    candidates += [b for _, o, c in positions if (b := _bracketed(text, o, c)) is not None]
    for candidate in candidates:
        try:
            return Parsed(_loads(candidate.strip()), "repaired")
        except ValueError:
            continue
    return Parsed(None, "failed")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            if key in value:
                return _texts(value[key])
        for key in _TEXT_KEYS:
            if isinstance(value.get(key), str):
                return [value[key]]
        return [v for v in value.values() if isinstance(v, str)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _texts(item)]
    return []


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip("\"'").strip()).rstrip(".;,")


def parse_hypotheses(text: str) -> Parsed:
    """A list of difference texts from a reply; falls back to bullet/numbered lines (``how='lines'``)."""
    parsed = parse_json_block(text or "")
    if parsed.ok:
        found = [_clean(t) for t in _texts(parsed.value)]
        found = [t for t in found if t]
        if found:
            return Parsed(list(dict.fromkeys(found)), parsed.how)
    lines = [_clean(m.group(1)) for line in (text or "").splitlines() if (m := _BULLET.match(line))]
    lines = [t for t in lines if t]
    if lines:
        return Parsed(list(dict.fromkeys(lines)), "lines")
    return Parsed([], "failed")


def _box(value: Any) -> tuple[float, float, float, float] | None:
    if isinstance(value, dict):
        for key in ("box", "bbox", "coordinates"):
            if key in value:
                return _box(value[key])
        if all(k in value for k in ("x0", "y0", "x1", "y1")):
            value = [value[k] for k in ("x0", "y0", "x1", "y1")]
        else:
            return None
    if isinstance(value, (list, tuple)) and len(value) == 4:
        try:
            x0, y0, x1, y1 = (float(v) for v in value)
        except (TypeError, ValueError):
            return None
        if max(x0, y0, x1, y1) > 1.0:  # percentages
            x0, y0, x1, y1 = (v / 100.0 for v in (x0, y0, x1, y1))
        x0, x1 = sorted((min(max(x0, 0.0), 1.0), min(max(x1, 0.0), 1.0)))
        y0, y1 = sorted((min(max(y0, 0.0), 1.0), min(max(y1, 0.0), 1.0)))
        if x1 - x0 < 0.05 or y1 - y0 < 0.05:
            return None
        return (x0, y0, x1, y1)
    return None


def parse_boxes(text: str) -> Parsed:
    """Zoom boxes ``[x0, y0, x1, y1]`` in image fractions (0..1; 0..100 read as percent)."""
    parsed = parse_json_block(text or "")
    if not parsed.ok:
        return Parsed([], "failed")
    value = parsed.value
    if isinstance(value, dict):
        value = next((value[k] for k in _LIST_KEYS if k in value), [value])
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        value = [value]
    boxes = [b for item in (value if isinstance(value, (list, tuple)) else []) if (b := _box(item)) is not None]
    return Parsed(boxes, parsed.how) if boxes else Parsed([], "failed")


_SCORE = re.compile(r"(?<![\d.])([012])(?![\d.])")


def parse_judge_score(text: str) -> Parsed:
    """A 0/1/2 rubric score: JSON ``{"score": n}`` or a bare 0, 1 or 2 as the first number in the reply."""
    parsed = parse_json_block(text or "")
    if parsed.ok:
        value = parsed.value.get("score") if isinstance(parsed.value, dict) else parsed.value
        if isinstance(value, (int, float, str)) and str(value).strip() in ("0", "1", "2"):
            return Parsed(int(str(value).strip()), parsed.how)
    numbers = re.findall(r"\d+(?:\.\d+)?", text or "")
    if numbers and numbers[0] in ("0", "1", "2"):
        return Parsed(int(numbers[0]), "lines")
    return Parsed(0, "failed")
