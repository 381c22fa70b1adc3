"""The report's tables as display strings: metrics with intervals, paired tests, learning curves, anchors.

Each table is a dict ``{"columns": [...], "rows": [[...], ...]}`` of texts (intervals as
:class:`~.format.Interval` cells) that the ``_table.html.j2`` macro lays out; building them
here keeps the templates free of number formatting and lets other pages (the suite) reuse them.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from ..evaluation.degenerate import failed_rows
from .analysis import aggregate_curves, is_empty, metric_name
from .format import ci_cell, delta_cell, finite, fmt, fmt_n, fmt_p, table_cell

#: metric columns shown in the tables, in this order (others with ``_lo``/``_hi`` follow)
TABLE_METRICS = ("auroc", "accuracy", "balanced_accuracy", "macro_f1", "ece")
_ID_COLUMNS = ("model", "mode", "selector", "k", "seed", "n")


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    names = [m for m in TABLE_METRICS if m in frame.columns]
    extra = [c for c in frame.columns if c not in names and c not in _ID_COLUMNS
             and f"{c}_lo" in frame.columns and f"{c}_hi" in frame.columns]
    return names + extra


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    return {"columns": list(columns), "rows": [[table_cell(v) if not isinstance(v, str) else v for v in row]
                                               for row in rows]}


def metrics_table(summary: pd.DataFrame | None) -> dict[str, Any] | None:
    """The summary as display strings: id columns then ``value [lo, hi]`` per metric."""
    if is_empty(summary):
        return None
    ids = [c for c in _ID_COLUMNS if c in summary.columns]
    metrics = _metric_columns(summary)
    failed = failed_rows(summary)
    rows = []
    for position, (_, row) in enumerate(summary.iterrows()):
        cells = [row[c] for c in ids]
        if failed.any():
            cells.append(f"FAILED: {row['degenerate']}" if failed[position] else "ok")
        cells += [ci_cell(row[m], row.get(f"{m}_lo"), row.get(f"{m}_hi")) for m in metrics]
        rows.append(cells)
    return _table(ids + (["training"] if failed.any() else []) + [metric_name(m) for m in metrics], rows)


def _ci_verdict(lo: Any, hi: Any) -> str:
    if not (finite(lo) and finite(hi)):
        return "NA"
    if lo > 0:
        return "above 0"
    if hi < 0:
        return "below 0"
    return "includes 0"


def paired_table(paired_tests: pd.DataFrame | None) -> dict[str, Any] | None:
    """The paired tests: discordant counts, McNemar p and each difference with its CI and where the CI lies."""
    if is_empty(paired_tests):
        return None
    ids = [c for c in ("model", "baseline", "mode", "selector", "k", "seed", "n") if c in paired_tests.columns]
    columns = ids + ["single right, paired wrong", "single wrong, paired right", "McNemar p"]
    deltas = [m for m in ("accuracy", "auroc") if f"delta_{m}" in paired_tests.columns]
    for m in deltas:
        columns += [f"Δ {metric_name(m)} [95% CI]", f"Δ {metric_name(m)} CI"]
    rows = []
    for _, row in paired_tests.iterrows():
        cells = [row[c] for c in ids]
        cells += [row.get("single_right_paired_wrong"), row.get("single_wrong_paired_right"),
                  fmt_p(row.get("mcnemar_p"))]
        for m in deltas:
            lo, hi = row.get(f"delta_{m}_lo"), row.get(f"delta_{m}_hi")
            cells += [delta_cell(row[f"delta_{m}"], lo, hi), _ci_verdict(lo, hi)]
        rows.append(cells)
    return _table(columns, rows)


def learning_curve_table(curves: pd.DataFrame | None, metrics: Sequence[str] = TABLE_METRICS) -> dict[str, Any] | None:
    """The learning curves aggregated over seeds, one row per (model, mode, training-set size)."""
    if is_empty(curves) or "n_train" not in curves.columns:
        return None
    metrics = [m for m in metrics if m in curves.columns]
    if not metrics:
        return None
    aggs = {m: aggregate_curves(curves, m) for m in metrics}
    base = aggs[metrics[0]]
    several = base["model"].nunique() > 1
    columns = (["model"] if several else []) + ["mode", "n_train", "seeds"] + [metric_name(m) for m in metrics] \
        + ["brackets"]
    bands = {"seeds": "min-max over seeds", "bootstrap": "95% bootstrap CI", "none": ""}
    rows = []
    rank = base["mode"].map({"single": 0, "paired": 1}).fillna(2)
    order = base.assign(_rank=rank).sort_values(["model", "n_train", "_rank", "mode"])
    for _, row in order.iterrows():
        cells = ([row["model"]] if several else []) + [row["mode"], fmt_n(row["n_train"]), int(row["n_seeds"])]
        for m in metrics:
            a = aggs[m]
            hit = a[(a["model"] == row["model"]) & (a["mode"] == row["mode"]) & (a["n_train"] == row["n_train"])]
            cells.append(ci_cell(hit["value"].iloc[0], hit["lo"].iloc[0], hit["hi"].iloc[0]) if len(hit) else "NA")
        cells.append(bands.get(row["band"], str(row["band"])))
        rows.append(cells)
    return _table(columns, rows)


def anchor_metrics_text(metrics: Mapping[str, Any]) -> str:
    """``AUROC 0.944, accuracy 0.854``: a published anchor's figures with the report's metric names."""
    return ", ".join(f"{metric_name(str(k))} {fmt(v)}" for k, v in metrics.items())


def anchor_text(anchor: Mapping[str, Any] | None) -> str | None:
    """The sentence printed under the metrics table for a published figure (``source``, ``metrics``, ``note``).

    An anchor comes from other splits and other training, so it is shown beside the results for
    orientation, with its note on how the setups differ, never mixed into the tables.
    """
    if not anchor:
        return None
    source = str(anchor.get("source") or "source not given")
    text = f"Published anchor ({source}): {anchor_metrics_text(anchor.get('metrics') or {}) or 'no figures given'}"
    note = str(anchor.get("note") or "").strip()
    return f"{text} — {note}" if note else text
