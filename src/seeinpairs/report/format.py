"""Numbers as the report prints them: decimals, intervals, p-values, counts and condition labels.

Every text the report shows for a number goes through here, so a table cell and a sentence
of the findings write the same value the same way (``NA`` for a missing or non-finite one).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

#: a list in a sentence names this many items, then "and N more"
LIST_LIMIT = 6


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (``None``, NaN, inf and non-numbers are not)."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` decimals, ``NA`` when missing or not finite."""
    return f"{float(value):.{digits}f}" if finite(value) else "NA"


def fmt_ci(value: Any, lo: Any, hi: Any, digits: int = 3, ci_digits: int = 2) -> str:
    """``0.812 [0.75, 0.87]``; ``NA`` without a value, no brackets without a CI."""
    if not finite(value):
        return "NA"
    if not (finite(lo) and finite(hi)):
        return fmt(value, digits)
    return f"{float(value):.{digits}f} [{float(lo):.{ci_digits}f}, {float(hi):.{ci_digits}f}]"


def fmt_delta(value: Any, lo: Any = None, hi: Any = None, digits: int = 3) -> str:
    """A signed difference with its CI: ``+0.030 [-0.020, 0.080]``."""
    if not finite(value):
        return "NA"
    text = f"{float(value):+.{digits}f}"
    if finite(lo) and finite(hi):
        text += f" [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"
    return text


class Interval(str):
    """A table cell ``"0.812 [0.75, 0.87]"`` that keeps its two parts.

    It is the same text wherever a string is expected (CSV, Markdown, comparisons); the HTML
    tables set the interval after the point in a smaller font and let it drop to a second line,
    which keeps wide tables inside the page.
    """

    point: str
    interval: str

    def __new__(cls, point: str, interval: str) -> Interval:
        cell = super().__new__(cls, f"{point} {interval}")
        cell.point, cell.interval = point, interval
        return cell

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return self.point, self.interval


def ci_cell(value: Any, lo: Any, hi: Any, digits: int = 3, ci_digits: int = 2) -> str:
    """:func:`fmt_ci` as a table cell: an :class:`Interval` when there is a CI, plain text otherwise."""
    if not finite(value) or not (finite(lo) and finite(hi)):
        return fmt_ci(value, lo, hi, digits, ci_digits)
    return Interval(fmt(value, digits), f"[{float(lo):.{ci_digits}f}, {float(hi):.{ci_digits}f}]")


def delta_cell(value: Any, lo: Any = None, hi: Any = None, digits: int = 3) -> str:
    """:func:`fmt_delta` as a table cell: an :class:`Interval` when there is a CI, plain text otherwise."""
    if not finite(value) or not (finite(lo) and finite(hi)):
        return fmt_delta(value, lo, hi, digits)
    return Interval(f"{float(value):+.{digits}f}", f"[{float(lo):.{digits}f}, {float(hi):.{digits}f}]")


def fmt_p(p: Any) -> str:
    """A p-value: ``<0.001``, 3 decimals below 0.1, else 2."""
    if not finite(p):
        return "NA"
    p = float(p)
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def p_text(p: Any) -> str:
    """A p-value inside a sentence: ``p=0.041`` or ``p<0.001``."""
    text = fmt_p(p)
    return "p" + text if text.startswith("<") else f"p={text}"


def fmt_n(n: Any) -> str:
    """A count (or a mean of counts): whole numbers without decimals, others to one decimal."""
    if not finite(n):
        return "NA"
    n = float(n)
    return str(int(round(n))) if abs(n - round(n)) < 1e-9 else f"{n:.1f}"


def table_cell(value: Any) -> str:
    """A raw table value as text: whole floats as counts, other floats to 3 decimals, ``None`` empty."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "NA"
        return fmt_n(value) if float(value).is_integer() else f"{float(value):.3f}"
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def condition_label(selector: Any, k: Any) -> str:
    """``embedding k=2``: how a paired condition is named in tables and sentences."""
    return f"{selector} k={int(k)}" if finite(k) else str(selector)


def list_text(items: Sequence[str]) -> str:
    """Items joined by commas, the first :data:`LIST_LIMIT` named and the rest counted."""
    if len(items) <= LIST_LIMIT:
        return ", ".join(items)
    return ", ".join(items[:LIST_LIMIT]) + f" and {len(items) - LIST_LIMIT} more"


def format_probabilities(probabilities: Any, options: Sequence[str] | None = None, digits: int = 2) -> str:
    """``"normal 0.20, abnormal 0.80"`` from a mapping, or from a list aligned with ``options``."""
    if probabilities is None:
        return ""
    if isinstance(probabilities, Mapping):
        items = list(probabilities.items())
    else:
        values = list(probabilities)
        names = list(options) if options is not None and len(options) == len(values) else \
            [str(i) for i in range(len(values))]
        items = list(zip(names, values))
    parts = []
    for name, value in items:
        parts.append(f"{name} {float(value):.{digits}f}" if finite(value) else f"{name} NA")
    return ", ".join(parts)
