"""Uncertainty and significance for comparing single-image against paired diagnosis.

Medical test sets are small, so a point metric alone overstates differences.
This module gives bootstrap intervals per condition, a paired bootstrap of the
difference between two conditions on the same cases (the pairing removes
case-difficulty variance), and McNemar's exact test on per-case correctness.
Resampling is over cases; all resamples of one call share one index matrix, so
every metric and both arms of a comparison see the same draws and results are
reproducible per seed.

Intervals are bias-corrected and accelerated (BCa; Efron 1987), the method of
``scipy.stats.bootstrap(method="BCa")``, computed here on the shared resamples
with a grouped jackknife for the acceleration. Percentile intervals are off when
the bootstrap distribution is not centred on the estimate: ECE, for one, is
biased upward under resampling, so its percentile interval could barely contain
the estimate (0.044 [0.043, 0.121]); BCa shifts it back. Where the bias is so
large that the estimate lies outside nearly every resample (ECE of a
well-calibrated model on a few hundred cases), no bootstrap interval is
trustworthy: BCa then collapses to a sliver beside the estimate, so the bounds
are reported as NaN ("NA") instead of a misleading interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

from ..atomic import FileSet
from ..errors import SeeInPairsError
from .degenerate import degenerate_reason, scoring_reason
from .metrics import METRICS, batched, default_metric_names, to_arrays

# Upper bound on floats materialised per bootstrap chunk (B * n * C), ~32 MB.
_CHUNK_ELEMENTS = 4_000_000
#: leave-one-group-out jackknife for the BCa acceleration: at most this many groups (one case each below it)
_JACKKNIFE_GROUPS = 200


def _resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 1:
        raise SeeInPairsError(f"n_boot must be at least 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _replicates(
    metric: str, gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int, idx: np.ndarray
) -> np.ndarray:
    """Metric value on each resample ``gold[idx[b]]``; vectorised when the metric has a batched form."""
    batch = batched(metric)
    n_boot, n = idx.shape
    if batch is None:
        fn = METRICS.get(metric)
        return np.array([fn(gold[row], probs[row], classes, healthy_index) for row in idx], dtype=float)
    step = max(1, _CHUNK_ELEMENTS // max(1, n * probs.shape[1]))
    parts = [
        batch(gold[idx[s : s + step]], probs[idx[s : s + step]], classes, healthy_index)
        for s in range(0, n_boot, step)
    ]
    return np.concatenate(parts).astype(float)


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise SeeInPairsError(f"alpha must be in (0, 1), got {alpha}")
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _jackknife_indices(n: int) -> list[np.ndarray]:
    """Index rows that each leave out one group of cases (one case per group when n is small)."""
    groups = np.array_split(np.arange(n), min(n, _JACKKNIFE_GROUPS))
    keep = np.ones(n, dtype=bool)
    rows = []
    for group in groups:
        keep[group] = False
        rows.append(np.flatnonzero(keep))
        keep[group] = True
    return rows


def _jackknife(statistic, n: int) -> np.ndarray:
    """``statistic(idx)`` (a batch of index rows -> values) on every leave-one-group-out row."""
    rows = _jackknife_indices(n)
    out = np.empty(len(rows))
    for length in {len(r) for r in rows}:  # rows differ in length by at most one: two batches
        where = [i for i, r in enumerate(rows) if len(r) == length]
        out[where] = statistic(np.stack([rows[i] for i in where]))
    return out


def bca_interval(replicates: np.ndarray, estimate: float, jackknife: np.ndarray,
                 alpha: float) -> tuple[float, float]:
    """The BCa ``(low, high)`` from bootstrap ``replicates``, the ``estimate`` on all cases and the
    leave-one-group-out ``jackknife`` values; NaN replicates (undefined resamples) are dropped.

    Falls back to the percentile interval where the correction is undefined (a NaN estimate or
    jackknife, or every replicate equal). An interval that does not contain its own estimate means
    the correction broke down (the estimate lies outside nearly all replicates): NaN bounds then.
    """
    if not 0 < alpha < 1:
        raise SeeInPairsError(f"alpha must be in (0, 1), got {alpha}")
    values = replicates[~np.isnan(replicates)]
    if values.size == 0:
        return float("nan"), float("nan")
    jack = jackknife[~np.isnan(jackknife)]
    if not math.isfinite(estimate) or jack.size < 3 or np.ptp(values) == 0:
        return _percentiles(values, alpha)
    below = (np.sum(values < estimate) + 0.5 * np.sum(values == estimate)) / values.size
    below = min(max(below, 0.5 / values.size), 1 - 0.5 / values.size)  # an estimate outside every replicate
    z0 = norm.ppf(below)
    spread = jack.mean() - jack
    denominator = 6.0 * np.sum(spread ** 2) ** 1.5
    acceleration = float(np.sum(spread ** 3) / denominator) if denominator > 0 else 0.0
    bounds = []
    for z in norm.ppf([alpha / 2, 1 - alpha / 2]):
        level = norm.cdf(z0 + (z0 + z) / (1 - acceleration * (z0 + z)))
        bounds.append(float(np.quantile(values, level if np.isfinite(level) else (0.0 if z < 0 else 1.0))))
    if not bounds[0] <= estimate <= bounds[1]:
        return float("nan"), float("nan")
    return bounds[0], bounds[1]


def _metric_interval(metric: str, gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int,
                     idx: np.ndarray, alpha: float, estimate: float) -> tuple[float, float]:
    """BCa interval of one metric of one condition over the shared resamples ``idx``."""
    def on(rows: np.ndarray) -> np.ndarray:
        return _replicates(metric, gold, probs, classes, healthy_index, rows)

    return bca_interval(on(idx), estimate, _jackknife(on, len(gold)), alpha)


def bootstrap_ci(
    records: Sequence[dict[str, Any]],
    classes: Sequence[str],
    healthy_class: str,
    metric: str,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap (BCa) ``(low, high)`` of ``metric`` over cases.

    Resamples where the metric is undefined (NaN, e.g. AUROC on a one-class
    draw) are dropped rather than counted, so the interval describes the
    metric where it exists; NaN bounds mean it never existed.
    """
    METRICS.get(metric)
    gold, probs, _, healthy_index = to_arrays(records, classes, healthy_class)
    if len(gold) == 0:
        return float("nan"), float("nan")
    idx = _resample_indices(len(gold), n_boot, seed)
    estimate = float(METRICS.get(metric)(gold, probs, list(classes), healthy_index))
    return _metric_interval(metric, gold, probs, list(classes), healthy_index, idx, alpha, estimate)


def summarise(
    records_by_condition: Mapping[Hashable, Sequence[dict[str, Any]]],
    classes: Sequence[str],
    healthy_class: str,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per condition (keyed by any hashable name, e.g. a display string or a typed key):
    ``condition``, ``n`` (cases with gold), ``degenerate`` (why the
    predictions look like failed training, empty when they do not; see :mod:`.degenerate`), then
    ``<m>, <m>_lo, <m>_hi`` per metric. Where predictions record the query's resolution
    (:mod:`seeinpairs.backends.resolution`), a ``query_resolution`` column follows ``degenerate``."""
    names = list(metrics) if metrics is not None else default_metric_names()
    for name in names:
        METRICS.get(name)
    rows = []
    for condition, records in records_by_condition.items():
        gold, probs, _, healthy_index = to_arrays(records, classes, healthy_class)
        row: dict[str, Any] = {"condition": condition, "n": len(gold),
                               "degenerate": degenerate_reason(gold, probs, classes) or scoring_reason(records)}
        idx = _resample_indices(len(gold), n_boot, seed) if len(gold) else None
        for name in names:
            if idx is None:
                row[name] = row[f"{name}_lo"] = row[f"{name}_hi"] = float("nan")
                continue
            row[name] = float(METRICS.get(name)(gold, probs, list(classes), healthy_index))
            row[f"{name}_lo"], row[f"{name}_hi"] = _metric_interval(
                name, gold, probs, list(classes), healthy_index, idx, alpha, row[name]
            )
        rows.append(row)
    columns = ["condition", "n", "degenerate"] + [c for name in names for c in (name, f"{name}_lo", f"{name}_hi")]
    resolutions = [query_resolutions(records) for records in records_by_condition.values()]
    if any(resolutions):  # a family that sees the query at a resolution set by the image count (LLaVA-OneVision)
        for row, value in zip(rows, resolutions):
            row["query_resolution"] = value
        columns.insert(3, "query_resolution")
    return pd.DataFrame(rows, columns=columns)


def query_resolutions(records: Sequence[dict[str, Any]]) -> str:
    """The resolutions at which a condition's queries were encoded (``scoring.query_resolution`` of its
    predictions, e.g. ``anyres`` or ``base``), comma separated; ``""`` where none was recorded."""
    values = {str((r.get("scoring") or {}).get("query_resolution") or "") for r in records}
    return ", ".join(sorted(v for v in values if v))


def _first_by_case(records: Sequence[dict[str, Any]], side: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        if "case_id" not in rec:
            raise SeeInPairsError(f"records_{side}: a record has no case_id, so it cannot be matched")
        out.setdefault(str(rec["case_id"]), rec)
    return out


def matched_records(
    records_a: Sequence[dict[str, Any]], records_b: Sequence[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records of the cases present, with gold, in both conditions, aligned in ``records_a``'s order.

    Comparing conditions only on shared cases keeps a partially finished run
    from biasing the comparison with an easier or harder subset.
    """
    by_a = _first_by_case(records_a, "a")
    by_b = _first_by_case(records_b, "b")
    out_a, out_b = [], []
    for case, ra in by_a.items():
        rb = by_b.get(case)
        if rb is None or ra.get("gold") is None or rb.get("gold") is None:
            continue
        if ra["gold"] != rb["gold"]:
            raise SeeInPairsError(f"case '{case}' has gold '{ra['gold']}' in one condition and '{rb['gold']}' in the other")
        out_a.append(ra)
        out_b.append(rb)
    return out_a, out_b


def mcnemar(records_a: Sequence[dict[str, Any]], records_b: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Exact McNemar test on per-case correctness (``predicted == gold``) of two conditions.

    Returns ``n`` (matched cases), ``b`` (A right, B wrong), ``c`` (A wrong,
    B right) and the two-sided exact binomial ``p`` on the discordant pairs
    (1.0 when there are none: no evidence of a difference).
    """
    a, b = matched_records(records_a, records_b)
    right_a = np.array([r.get("predicted") == r["gold"] for r in a], dtype=bool)
    right_b = np.array([r.get("predicted") == r["gold"] for r in b], dtype=bool)
    n_b = int(np.sum(right_a & ~right_b))
    n_c = int(np.sum(~right_a & right_b))
    p = float(binomtest(n_b, n_b + n_c, 0.5, alternative="two-sided").pvalue) if n_b + n_c > 0 else 1.0
    return {"n": len(a), "b": n_b, "c": n_c, "p": p}


def paired_bootstrap_delta(
    records_a: Sequence[dict[str, Any]],
    records_b: Sequence[dict[str, Any]],
    classes: Sequence[str],
    healthy_class: str,
    metric: str,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """``delta = metric(B) - metric(A)`` on matched cases, with a paired bootstrap (BCa) CI.

    Both arms are resampled with the same case indices, so the interval
    reflects the difference itself rather than two independent noises.
    """
    fn = METRICS.get(metric)
    a, b = matched_records(records_a, records_b)
    gold_a, probs_a, _, h = to_arrays(a, classes, healthy_class)
    gold_b, probs_b, _, _ = to_arrays(b, classes, healthy_class)
    n = len(gold_a)
    if n == 0:
        return {"delta": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    cls = list(classes)
    delta = float(fn(gold_b, probs_b, cls, h) - fn(gold_a, probs_a, cls, h))
    idx = _resample_indices(n, n_boot, seed)

    def difference(rows: np.ndarray) -> np.ndarray:
        return _replicates(metric, gold_b, probs_b, cls, h, rows) - _replicates(metric, gold_a, probs_a, cls, h, rows)

    lo, high = bca_interval(difference(idx), delta, _jackknife(difference, n), alpha)
    return {"delta": delta, "lo": lo, "hi": high, "n": n}


# ------------------------------------------------------------------- tables
def _md_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NA"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no ``tabulate`` dependency), floats to 4 decimals."""
    header = [str(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = [
        "| " + " | ".join(_md_cell(h) for h in header) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    for row in frame.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_tables(frame: pd.DataFrame, out_dir: str | Path, stem: str, files: FileSet | None = None) -> dict[str, Path]:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``<stem>.json`` (NaN -> null) and return their paths.

    CSV for spreadsheets, Markdown for papers/READMEs, JSON for programs. The three
    are published together (a kill leaves the old three or none); pass ``files`` to
    stage them into a larger set that is committed as one, e.g. every table of a run.
    """
    out = Path(out_dir)
    if files is None:
        with FileSet(out, f"{stem}-tables") as own:
            return write_tables(frame, out, stem, own)
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    paths = {suffix: out / f"{stem}.{suffix}" for suffix in ("csv", "md", "json")}
    frame.to_csv(files.path(paths["csv"].name), index=False)
    files.path(paths["md"].name).write_text(to_markdown(frame), encoding="utf-8")
    rows = json.loads(frame.to_json(orient="records", double_precision=15))
    files.path(paths["json"].name).write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


def table_names(stem: str) -> list[str]:
    """The files :func:`write_tables` writes for ``stem``."""
    return [f"{stem}.{suffix}" for suffix in ("csv", "md", "json")]


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05,
                      seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of per-case values (NaNs dropped) with a bootstrap (BCa) interval."""
    array = np.asarray([v for v in values if v == v], dtype=float)
    if array.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(array.mean())
    lo, hi = bca_interval(array[_resample_indices(array.size, n_boot, seed)].mean(axis=1), mean,
                          _jackknife(lambda rows: array[rows].mean(axis=1), array.size), alpha)
    return mean, lo, hi


def bootstrap_mean_delta_ci(first: Sequence[float], second: Sequence[float], n_boot: int = 1000,
                            alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """``(mean(second - first), low, high)`` for paired per-case values, the pairs resampled together."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise SeeInPairsError(f"paired values differ in length ({a.size} and {b.size})")
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")

    def difference(rows: np.ndarray) -> np.ndarray:
        return b[rows].mean(axis=1) - a[rows].mean(axis=1)

    delta = float(b.mean() - a.mean())
    lo, hi = bca_interval(difference(_resample_indices(a.size, n_boot, seed)), delta, _jackknife(difference, a.size),
                          alpha)
    return delta, lo, hi
