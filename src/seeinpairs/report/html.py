"""A one-file HTML report of a single-vs-paired experiment, and the plain-language findings in it.

:func:`write_report` renders ``templates/report.html.j2`` (Jinja2, autoescaped)
with the metrics and paired-test tables, figures embedded as base64 PNG data
URIs, learning curves and example panels. Every section renders "not run"
when its input is missing or empty, so a partial experiment still gives a
report.

:func:`findings_from` turns the numbers into sentences *as measured*: it
names the best paired condition whatever its sign, says plainly when paired
did not beat single, separates point estimates from intervals that exclude 0,
and never calls a difference an improvement that the data do not show.

:func:`sample_efficiency` / :func:`sample_efficiency_ratio` compare learning
curves of single and paired training (see their docstrings for the definition).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..atomic import atomic_write_text
from ..evaluation.degenerate import failed_rows
from .plots import (
    aggregate_curves,
    aggregate_seeds,
    baselines_from_tests,
    format_probabilities,
    higher_is_better,
    learning_curve_caption,
    metric_by_k_caption,
    metric_name,
    plot_example,
    plot_learning_curves,
    plot_metric_by_k,
    png_data_uri,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: metric columns shown in the tables, in this order (others with ``_lo``/``_hi`` follow)
TABLE_METRICS = ("auroc", "accuracy", "balanced_accuracy", "macro_f1", "ece")
_ID_COLUMNS = ("model", "mode", "selector", "k", "seed", "n")
_LIST_LIMIT = 6
#: the smallest learning-curve ladder a sample-efficiency ratio is stated for: fewer sizes or one seed give
#: a ratio that interpolates between two noisy points with no interval at all
MIN_LADDER_SIZES = 3
MIN_LADDER_SEEDS = 2

DEFAULT_LIMITATIONS = (
    "What this can show: on these evaluation cases and with these models, whether showing k healthy reference "
    "images with the query changes the measured metrics, with 95% bootstrap intervals (BCa) over cases and "
    "exact McNemar tests on per-case correctness of matched cases.",
    "The intervals describe case sampling only (with several seeds, the spread over seeds is shown separately). "
    "They do not cover other prompts, other models, other reference banks or other hospitals.",
    "Many conditions (selectors x k x seeds) are compared with the same baseline and no correction for multiple "
    "testing is applied: an isolated interval that excludes 0 among many may be chance.",
    "A difference in AUROC or accuracy on a retrospective test set is not evidence of clinical benefit; results "
    "on synthetic or small data sets say little about real images. Calibration (ECE) and discrimination (AUROC) "
    "can move in opposite directions and both matter.",
    "Learning curves compare training-set sizes on one ladder; a sample-efficiency ratio is only defined within "
    "that ladder and inherits the noise of the points it interpolates between.",
)


# ------------------------------------------------------------------- formatting
def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` decimals, ``NA`` when missing or not finite."""
    return f"{float(value):.{digits}f}" if _finite(value) else "NA"


def fmt_ci(value: Any, lo: Any, hi: Any, digits: int = 3, ci_digits: int = 2) -> str:
    """``0.812 [0.75, 0.87]``; ``NA`` without a value, no brackets without a CI."""
    if not _finite(value):
        return "NA"
    if not (_finite(lo) and _finite(hi)):
        return fmt(value, digits)
    return f"{float(value):.{digits}f} [{float(lo):.{ci_digits}f}, {float(hi):.{ci_digits}f}]"


def fmt_delta(value: Any, lo: Any = None, hi: Any = None, digits: int = 3) -> str:
    """A signed difference with its CI: ``+0.030 [-0.020, 0.080]``."""
    if not _finite(value):
        return "NA"
    text = f"{float(value):+.{digits}f}"
    if _finite(lo) and _finite(hi):
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
    if not _finite(value) or not (_finite(lo) and _finite(hi)):
        return fmt_ci(value, lo, hi, digits, ci_digits)
    return Interval(fmt(value, digits), f"[{float(lo):.{ci_digits}f}, {float(hi):.{ci_digits}f}]")


def delta_cell(value: Any, lo: Any = None, hi: Any = None, digits: int = 3) -> str:
    """:func:`fmt_delta` as a table cell: an :class:`Interval` when there is a CI, plain text otherwise."""
    if not _finite(value) or not (_finite(lo) and _finite(hi)):
        return fmt_delta(value, lo, hi, digits)
    return Interval(f"{float(value):+.{digits}f}", f"[{float(lo):.{digits}f}, {float(hi):.{digits}f}]")


def fmt_p(p: Any) -> str:
    """A p-value: ``<0.001``, 3 decimals below 0.1, else 2."""
    if not _finite(p):
        return "NA"
    p = float(p)
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _p_text(p: Any) -> str:
    text = fmt_p(p)
    return "p" + text if text.startswith("<") else f"p={text}"


def _fmt_n(n: Any) -> str:
    if not _finite(n):
        return "NA"
    n = float(n)
    return str(int(round(n))) if abs(n - round(n)) < 1e-9 else f"{n:.1f}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "NA"
        return _fmt_n(value) if float(value).is_integer() else f"{float(value):.3f}"
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    names = [m for m in TABLE_METRICS if m in frame.columns]
    extra = [c for c in frame.columns if c not in names and c not in _ID_COLUMNS
             and f"{c}_lo" in frame.columns and f"{c}_hi" in frame.columns]
    return names + extra


def _condition(selector: Any, k: Any) -> str:
    return f"{selector} k={int(k)}" if _finite(k) else str(selector)


def _empty(frame: Any) -> bool:
    return frame is None or not isinstance(frame, pd.DataFrame) or frame.empty


# ------------------------------------------------------------------- sample efficiency
@dataclass(frozen=True)
class SampleEfficiency:
    """How many training cases single and paired training need to reach one target metric value.

    ``n_single``/``n_paired`` are log-linearly interpolated sizes (NaN: never
    reached on the ladder); ``paired_first_n`` is the smallest ladder size
    whose paired mean reaches the target. ``*_censored`` means the curve
    already reached the target at its smallest size, so the true need may be
    smaller (a censored ``n_paired`` makes the ratio a lower bound).
    """

    metric: str
    target: float
    target_source: str
    n_single: float
    n_paired: float
    paired_first_n: float
    ratio: float
    single_censored: bool
    paired_censored: bool
    largest_n_single: float
    largest_n_paired: float
    best_paired: float
    #: training-set sizes (n > 0) on both curves, and seeds run in both modes
    n_sizes: int = 0
    n_seeds: int = 0
    #: the ratio of each seed's own curves, towards the same target (NaN where undefined)
    seed_ratios: tuple[float, ...] = ()
    #: (n, mean over seeds) per training-set size, for reporting the raw curve when no ratio is estimable
    single_curve: tuple[tuple[float, float], ...] = ()
    paired_curve: tuple[tuple[float, float], ...] = ()

    @property
    def estimable(self) -> bool:
        """Whether the ladder can carry a ratio: a 2-point, 1-seed curve gives a number with no interval."""
        return self.n_sizes >= MIN_LADDER_SIZES and self.n_seeds >= MIN_LADDER_SEEDS

    def spread(self) -> tuple[float, float, int]:
        """(lowest, highest) finite per-seed ratio and how many seeds had an undefined one."""
        values = np.asarray(self.seed_ratios, dtype=float)
        finite = values[np.isfinite(values)]
        if not finite.size:
            return float("nan"), float("nan"), int(values.size)
        return float(finite.min()), float(finite.max()), int(values.size - finite.size)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_curve(agg: pd.DataFrame, mode: str) -> tuple[np.ndarray, np.ndarray]:
    part = agg[(agg["mode"] == mode) & (agg["n_train"] > 0)]
    part = part[np.isfinite(part["value"].to_numpy(dtype=float))].sort_values("n_train")
    return part["n_train"].to_numpy(dtype=float), part["value"].to_numpy(dtype=float)


def _first_reach(ns: np.ndarray, values: np.ndarray, target: float, higher: bool) -> tuple[float, float, bool]:
    """(interpolated n, ladder n, censored) where the curve first reaches ``target``; NaNs if never."""
    def reached(v: float) -> bool:
        return v >= target - 1e-12 if higher else v <= target + 1e-12

    for i, (n, v) in enumerate(zip(ns, values)):
        if not reached(v):
            continue
        if i == 0:
            return float(n), float(n), True
        n0, v0 = ns[i - 1], values[i - 1]
        fraction = (target - v0) / (v - v0)  # v0 has not reached the target, v has: v != v0
        log_n = math.log2(n0) + fraction * (math.log2(n) - math.log2(n0))
        return float(2.0 ** log_n), float(n), False
    return float("nan"), float("nan"), False


def sample_efficiency(
    curves: pd.DataFrame | None, metric: str = "auroc", target: float | None = None, model: str | None = None
) -> SampleEfficiency:
    """Sample efficiency of paired over single training, from learning curves.

    ``curves`` has columns ``mode`` (``"single"``/``"paired"``), ``n_train``,
    ``seed`` and ``metric`` (and optionally ``model``: pass ``model`` to pick
    one when there are several). Definition:

    * each curve is the mean of ``metric`` over seeds at each ``n_train > 0``;
    * the **target** is ``target`` if given, else the single curve's value at
      its largest ``n_train`` (what single training reaches with all its data);
    * ``n_mode`` is the smallest training size at which that curve reaches the
      target ("reaches" is ``>=``, or ``<=`` for lower-is-better metrics such as
      ECE), interpolating linearly in ``log2(n)`` between the two ladder points
      around the first crossing; it is not extrapolated beyond the ladder;
    * **ratio** = ``n_single / n_paired``: above 1 paired needs fewer training
      cases (e.g. 4 means single needs four times as many), below 1 it needs
      more. NaN when either curve never reaches the target.
    """
    agg = aggregate_curves(curves, metric)
    if model is not None:
        agg = agg[agg["model"] == str(model)]
    elif not agg.empty and agg["model"].nunique() > 1:
        raise ValueError(f"learning curves hold several models ({', '.join(sorted(agg['model'].unique()))}); "
                         "pass model=")
    higher = higher_is_better(metric)
    ns_s, v_s = _mean_curve(agg, "single") if not agg.empty else (np.array([]), np.array([]))
    ns_p, v_p = _mean_curve(agg, "paired") if not agg.empty else (np.array([]), np.array([]))
    nan = float("nan")
    if target is not None:
        goal, source = float(target), "given target"
    elif ns_s.size:
        goal, source = float(v_s[-1]), f"single at its largest training set (n={_fmt_n(ns_s[-1])})"
    else:
        goal, source = nan, "no single curve"
    if _finite(goal):
        n_single, _, single_censored = _first_reach(ns_s, v_s, goal, higher)
        n_paired, paired_first, paired_censored = _first_reach(ns_p, v_p, goal, higher)
    else:
        n_single = n_paired = paired_first = nan
        single_censored = paired_censored = False
    ratio = _ratio(ns_s, v_s, ns_p, v_p, goal, higher)
    best_paired = (float(v_p.max() if higher else v_p.min())) if v_p.size else nan
    seeds = _seeds_in_both(curves, metric, model)
    seed_ratios = tuple(_seed_ratio(curves, metric, model, seed, goal, higher) for seed in seeds)
    return SampleEfficiency(metric=metric, target=goal, target_source=source, n_single=n_single, n_paired=n_paired,
                            paired_first_n=paired_first, ratio=ratio, single_censored=single_censored,
                            paired_censored=paired_censored,
                            largest_n_single=float(ns_s[-1]) if ns_s.size else nan,
                            largest_n_paired=float(ns_p[-1]) if ns_p.size else nan, best_paired=best_paired,
                            n_sizes=len(set(ns_s.tolist()) & set(ns_p.tolist())), n_seeds=len(seeds),
                            seed_ratios=seed_ratios,
                            single_curve=tuple(zip(ns_s.tolist(), v_s.tolist())),
                            paired_curve=tuple(zip(ns_p.tolist(), v_p.tolist())))


def _ratio(ns_s: np.ndarray, v_s: np.ndarray, ns_p: np.ndarray, v_p: np.ndarray, goal: float, higher: bool) -> float:
    """``n_single / n_paired`` at ``goal`` (NaN when either curve never reaches it)."""
    if not _finite(goal):
        return float("nan")
    n_single = _first_reach(ns_s, v_s, goal, higher)[0]
    n_paired = _first_reach(ns_p, v_p, goal, higher)[0]
    return n_single / n_paired if _finite(n_single) and _finite(n_paired) and n_paired > 0 else float("nan")


def _curve_rows(curves: pd.DataFrame | None, metric: str, model: str | None) -> pd.DataFrame:
    """The rows of one model with a finite ``metric`` at ``n_train > 0`` (``seed`` 0 where the column is missing)."""
    if _empty(curves) or metric not in curves.columns or not {"mode", "n_train"} <= set(curves.columns):
        return pd.DataFrame(columns=["mode", "n_train", "seed", metric])
    frame = curves.assign(seed=curves["seed"] if "seed" in curves.columns else 0)
    if model is not None and "model" in frame.columns:
        frame = frame[frame["model"].astype(str) == str(model)]
    values = pd.to_numeric(frame[metric], errors="coerce")
    sizes = pd.to_numeric(frame["n_train"], errors="coerce")
    return frame[np.isfinite(values.to_numpy(dtype=float)) & (sizes > 0).to_numpy()]


def _seeds_in_both(curves: pd.DataFrame | None, metric: str, model: str | None) -> list[Any]:
    """The seeds with a finite value in both the single and the paired curve."""
    rows = _curve_rows(curves, metric, model)
    single = set(rows.loc[rows["mode"].astype(str) == "single", "seed"])
    paired = set(rows.loc[rows["mode"].astype(str) == "paired", "seed"])
    return sorted(single & paired, key=str)


def _seed_ratio(curves: pd.DataFrame, metric: str, model: str | None, seed: Any, goal: float, higher: bool) -> float:
    """The ratio of one seed's own curves towards the shared target."""
    rows = _curve_rows(curves, metric, model)
    agg = aggregate_curves(rows[rows["seed"] == seed], metric)
    return _ratio(*_mean_curve(agg, "single"), *_mean_curve(agg, "paired"), goal, higher)


def sample_efficiency_ratio(
    curves: pd.DataFrame | None, metric: str = "auroc", target: float | None = None, model: str | None = None
) -> float:
    """``n_single / n_paired`` to reach ``target``: see :func:`sample_efficiency` for the definition.

    The default target is the single curve's mean ``metric`` at its largest
    ``n_train``; sizes are interpolated log-linearly between ladder points.
    Above 1: paired training needs fewer cases. NaN if either never reaches it.
    """
    return sample_efficiency(curves, metric, target, model).ratio


def _tuples(value: Any) -> Any:
    """Lists (as a SampleEfficiency comes back from JSON) as the tuples the frozen dataclass holds."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _coerce_efficiency(value: Any, metric: str) -> SampleEfficiency | float | None:
    if value is None:
        return None
    if isinstance(value, SampleEfficiency):
        return value
    if isinstance(value, pd.DataFrame):
        if value.empty:
            return None
        if "model" in value.columns and value["model"].nunique() > 1:
            return None  # ambiguous without a model; the caller should pass one SampleEfficiency
        for candidate in (metric, "auroc", "accuracy"):
            if candidate in value.columns:
                return sample_efficiency(value, candidate)
        return None
    if isinstance(value, Mapping):
        fields = SampleEfficiency.__dataclass_fields__
        required = {k for k, f in fields.items() if f.default is MISSING}
        if required <= set(value):
            return SampleEfficiency(**{k: _tuples(value[k]) for k in fields if k in value})
        if "ratio" in value:
            return float(value["ratio"]) if _finite(value["ratio"]) else float("nan")
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------- findings
def _comparisons(tests: pd.DataFrame | None, model: str | None, metric: str,
                 failed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paired-test rows of one model with ``delta``, ``lo``, ``hi`` and ``p`` columns for ``metric``.

    ``failed``: summary rows labelled as failed training; a comparison that involves one (the
    paired condition itself, or the single-image baseline of its seed) is left out.
    """
    columns = ["selector", "k", "seed", "delta", "lo", "hi", "p", "n"]
    if _empty(tests) or f"delta_{metric}" not in tests.columns:
        return pd.DataFrame(columns=columns)
    part = tests
    if model is not None and "model" in tests.columns:
        part = tests[tests["model"].astype(str) == model]
    out = pd.DataFrame({
        "selector": part["selector"].astype(str) if "selector" in part else "",
        "k": pd.to_numeric(part["k"], errors="coerce") if "k" in part else np.nan,
        "seed": part["seed"] if "seed" in part else 0,
        "delta": pd.to_numeric(part[f"delta_{metric}"], errors="coerce"),
        "lo": pd.to_numeric(part.get(f"delta_{metric}_lo", np.nan), errors="coerce"),
        "hi": pd.to_numeric(part.get(f"delta_{metric}_hi", np.nan), errors="coerce"),
        "p": pd.to_numeric(part.get("mcnemar_p", np.nan), errors="coerce"),
        "n": pd.to_numeric(part.get("n", np.nan), errors="coerce"),
    })
    if not _empty(failed):
        seeds = failed["seed"] if "seed" in failed.columns else pd.Series(0, index=failed.index)
        keys = {(str(sel), int(k), str(seed)) for sel, k, seed in zip(failed["selector"].astype(str),
                                                                     pd.to_numeric(failed["k"]), seeds)}
        failed_base = {seed for sel, k, seed in keys if k == 0}
        keep = [(str(r.selector), int(r.k) if _finite(r.k) else -1, str(r.seed)) not in keys
                and str(r.seed) not in failed_base for r in out.itertuples()]
        out = out[np.asarray(keep, dtype=bool)] if len(out) else out
    return out.reset_index(drop=True)


def _failed_training(summary: pd.DataFrame, prefix: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rows that trained, rows labelled as failed training, the sentence that names the failed ones)."""
    mask = failed_rows(summary)
    if not mask.any():
        return summary, summary.iloc[0:0], []
    failed = summary[mask]
    seeds = int(summary["seed"].nunique()) if "seed" in summary.columns else 1
    parts = []
    for _, row in failed.iterrows():
        seed = f" seed {row['seed']}" if seeds > 1 and "seed" in row else ""
        label = "single-image" if _finite(row.get("k")) and int(row["k"]) == 0 else _condition(row["selector"], row["k"])
        parts.append(f"{label}{seed}: {row['degenerate']}")
    sentence = (f"{prefix}Failed training (the model did not learn; these results are not findings and are left "
                f"out of every comparison, best-condition and calibration statement below): {'; '.join(parts)}.")
    return summary[~mask], failed, [sentence]


def _list(items: Sequence[str]) -> str:
    if len(items) <= _LIST_LIMIT:
        return ", ".join(items)
    return ", ".join(items[:_LIST_LIMIT]) + f" and {len(items) - _LIST_LIMIT} more"


def _direction(delta: float, higher: bool) -> str:
    if abs(delta) < 0.0005:  # shows as +0.000 / -0.000 at three decimals
        return "unchanged"
    return "improved" if (delta > 0) == higher else "worsened"


def _model_findings(summary: pd.DataFrame, tests: pd.DataFrame | None, metric: str, model: str | None,
                    alpha: float, prefix: str = "", baseline: str | None = None) -> list[str]:
    """Sentences for one model; ``summary`` holds its paired rows and the k=0 rows of its baseline."""
    name = metric_name(metric)
    if metric not in summary.columns:
        return [f"{prefix}{name} was not computed, so single and paired cannot be compared on it."]
    summary, failed, out = _failed_training(summary, prefix)
    single_failed = len(failed) > 0 and bool((pd.to_numeric(failed["k"], errors="coerce") == 0).any())
    single_left = "k" not in summary.columns or bool((pd.to_numeric(summary["k"], errors="coerce") == 0).any())
    if single_failed and not single_left:
        out.append(f"{prefix}The single-image baseline failed training, so no paired condition is compared with it.")
        return out
    agg = aggregate_seeds(summary, metric)
    higher = higher_is_better(metric)
    single = agg[agg["k"] == 0]
    paired = agg[agg["k"] > 0].reset_index(drop=True)
    seeds = int(summary["seed"].nunique()) if "seed" in summary.columns else 1
    seed_note = f" (mean over {seeds} seeds)" if seeds > 1 else ""
    if single.empty:
        out.append(f"{prefix}No single-image (k=0) baseline was run, so paired conditions cannot be compared with it.")
        return out
    s = single.iloc[0]
    n_cases = summary.loc[pd.to_numeric(summary.get("k", 0), errors="coerce") == 0, "n"] \
        if "n" in summary.columns and "k" in summary.columns else pd.Series(dtype=float)
    n_text = f" on {_fmt_n(n_cases.mean())} cases" if len(n_cases) and _finite(n_cases.mean()) else ""
    if not _finite(s["value"]):
        out.append(f"{prefix}The single-image {name} is undefined (NaN, e.g. only one class among the evaluated "
                   "cases), so no comparison on it is possible.")
        return out
    single_text = fmt_ci(s["value"], s["lo"], s["hi"])
    of_model = f", model {baseline}" if baseline is not None and baseline != model else ""
    out.append(f"{prefix}Single-image baseline (k=0{of_model}): {name} {single_text}{n_text}{seed_note}.")
    if paired.empty:
        out.append(f"{prefix}No paired condition (k>0) {'trained' if len(failed) else 'was run'}.")
        return out

    comps = _comparisons(tests, model, metric, failed)
    deltas, condition_rows = [], []
    for _, row in paired.iterrows():
        rows = comps[(comps["selector"] == row["selector"]) & (comps["k"] == row["k"])] if not comps.empty else comps
        measured = rows["delta"].to_numpy(dtype=float) if len(rows) else np.array([])
        measured = measured[np.isfinite(measured)]
        if measured.size:
            deltas.append(float(measured.mean()))
        elif _finite(row["value"]):
            deltas.append(float(row["value"]) - float(s["value"]))
        else:
            deltas.append(float("nan"))
        condition_rows.append(rows)
    paired["delta"] = deltas
    valid = paired[np.isfinite(paired["delta"].to_numpy(dtype=float))]
    if valid.empty:
        out.append(f"{prefix}{name} is undefined (NaN) in every paired condition; no comparison is possible.")
        return out
    undefined = len(paired) - len(valid)
    gain = valid["delta"] if higher else -valid["delta"]
    best_index = int(gain.idxmax())
    best = paired.loc[best_index]
    rows = condition_rows[best_index]

    # best condition, with its difference and tests
    label = _condition(best["selector"], best["k"])
    text = (f"{prefix}Best paired condition: {label}, {name} {fmt_ci(best['value'], best['lo'], best['hi'])} "
            f"vs single {single_text}; ")
    rows_ci = rows[np.isfinite(rows["lo"].to_numpy(dtype=float)) & np.isfinite(rows["hi"].to_numpy(dtype=float))] \
        if len(rows) else rows
    if len(rows_ci) == 1:
        r = rows_ci.iloc[0]
        excludes = r["lo"] > 0 or r["hi"] < 0
        text += (f"the difference is {fmt_delta(r['delta'], r['lo'], r['hi'])}, "
                 + ("its 95% CI excludes 0" if excludes else "its 95% CI includes 0, not significant"))
        if _finite(r["p"]):
            verdict = "significant" if r["p"] < alpha else "not significant"
            text += f" (McNemar on per-case correctness: {_p_text(r['p'])}, {verdict} at {alpha:g})"
    elif len(rows_ci) > 1:
        excl = int(((rows_ci["lo"] > 0) | (rows_ci["hi"] < 0)).sum())
        sig = int((rows_ci["p"] < alpha).sum())
        text += (f"the difference is {fmt_delta(best['delta'])} (mean over {len(rows_ci)} seeds); its 95% CI "
                 f"excludes 0 in {excl} of {len(rows_ci)} seeds and McNemar p<{alpha:g} in {sig} of {len(rows_ci)}")
    else:
        text += f"the difference is {fmt_delta(best['delta'])} (no paired CI available)"
    out.append(text + ".")

    # did paired beat single at all?
    n_better = int((gain > 1e-12).sum())
    n_tied = int((gain.abs() <= 1e-12).sum())
    if n_better == 0:
        tie_note = f" ({n_tied} tied)" if n_tied else ""
        out.append(f"{prefix}Paired did not beat single in any condition: none of the {len(valid)} paired conditions "
                   f"had a {'higher' if higher else 'lower'} {name} than single-image ({fmt(s['value'])}){tie_note}.")
    else:
        better = [_condition(r["selector"], r["k"]) for _, r in valid[gain > 1e-12].iterrows()]
        out.append(f"{prefix}Paired beat single on the point estimate of {name} in {n_better} of {len(valid)} "
                   f"conditions ({_list(better)}).")
    if undefined:
        out.append(f"{prefix}{name} was undefined (NaN) in {undefined} paired condition(s), left out above.")

    # intervals that exclude 0
    comps_ci = comps[np.isfinite(comps["lo"].to_numpy(dtype=float)) & np.isfinite(comps["hi"].to_numpy(dtype=float))]
    if not comps_ci.empty:
        favour = comps_ci["lo"] > 0 if higher else comps_ci["hi"] < 0
        against = comps_ci["hi"] < 0 if higher else comps_ci["lo"] > 0
        m = len(comps_ci)
        unit = "comparison" if m == 1 else "comparisons"

        def names(mask: pd.Series) -> str:
            parts = []
            for _, r in comps_ci[mask].iterrows():
                seed = f" seed {r['seed']}" if seeds > 1 else ""
                parts.append(f"{_condition(r['selector'], r['k'])}{seed} ({fmt_delta(r['delta'], r['lo'], r['hi'])})")
            return _list(parts)

        if favour.sum() == 0:
            out.append(f"{prefix}In none of the {m} paired-vs-single {unit} did the 95% CI of the {name} difference "
                       "exclude 0 in paired's favour, so no improvement is established.")
        else:
            out.append(f"{prefix}The 95% CI of the {name} difference excluded 0 in paired's favour in "
                       f"{int(favour.sum())} of {m} {unit}: {names(favour)}.")
        if against.sum() > 0:
            out.append(f"{prefix}Paired was worse than single with the 95% CI excluding 0 in {int(against.sum())} "
                       f"of {m} {unit}: {names(against)}.")
        sig = comps["p"].to_numpy(dtype=float)
        sig = sig[np.isfinite(sig)]
        if sig.size:
            out.append(f"{prefix}McNemar (per-case correctness) gave p<{alpha:g} in {int((sig < alpha).sum())} of "
                       f"{sig.size} {'comparison' if sig.size == 1 else 'comparisons'}.")
        if m > 1:
            out.append(f"{prefix}These are {m} comparisons against the same baseline without correction for multiple "
                       f"testing; with no true effect about {m * alpha:.1f} would exclude 0 by chance.")

    # calibration vs discrimination, for the best condition
    if "ece" in summary.columns and "auroc" in summary.columns:
        auroc = aggregate_seeds(summary, "auroc")
        ece = aggregate_seeds(summary, "ece")

        def value(frame: pd.DataFrame, selector: str, k: int) -> float:
            hit = frame[(frame["selector"] == selector) & (frame["k"] == k)]
            return float(hit["value"].iloc[0]) if len(hit) else float("nan")

        def single_value(frame: pd.DataFrame) -> float:
            hit = frame[frame["k"] == 0]
            return float(hit["value"].iloc[0]) if len(hit) else float("nan")

        d_auc = value(auroc, best["selector"], best["k"]) - single_value(auroc)
        d_ece = value(ece, best["selector"], best["k"]) - single_value(ece)
        if _finite(d_auc) and _finite(d_ece):
            disc, cal = _direction(d_auc, True), _direction(d_ece, False)
            link = "and" if disc == cal else "while"
            out.append(f"{prefix}Calibration vs discrimination for {label}: AUROC {fmt_delta(d_auc)} and ECE "
                       f"{fmt_delta(d_ece)} vs single (lower ECE is better): discrimination {disc} {link} calibration "
                       f"{cal} (point estimates; no paired interval for ECE).")
    return out


def _efficiency_findings(value: SampleEfficiency | float | None) -> list[str]:
    """Sentences about sample efficiency; a ratio only where the ladder can carry one (see ``estimable``)."""
    if value is None:
        return []
    if not isinstance(value, SampleEfficiency):
        if _finite(value):
            return [f"Sample-efficiency ratio as given (training cases single needs / paired needs; no learning "
                    f"curves came with it, so neither its ladder nor its spread can be shown): {float(value):.2f}."]
        return ["Sample-efficiency ratio: undefined (paired or single never reached the target)."]
    name = metric_name(value.metric)
    if not _finite(value.target):
        return [f"Sample efficiency: no single-mode learning curve with a finite {name}, so there is no target."]
    if not value.estimable:
        return [_ladder_too_small(value)]
    out = []
    if value.target_source.startswith("single at"):
        out.append(f"Sample efficiency target: the single model's {name} at its largest training set "
                   f"(n={_fmt_n(value.largest_n_single)}), {fmt(value.target)}.")
    else:
        out.append(f"Sample efficiency target: {name} {fmt(value.target)} ({value.target_source}).")
    if not _finite(value.n_paired):
        if _finite(value.largest_n_paired):
            out.append(f"Paired training never reaches it within the ladder (largest n="
                       f"{_fmt_n(value.largest_n_paired)}, best paired {name} {fmt(value.best_paired)}), so the "
                       "sample-efficiency ratio is undefined.")
        else:
            out.append("No paired learning curve was run, so the sample-efficiency ratio is undefined.")
        return out
    if value.paired_censored:
        text = (f"Paired training already reaches it at the smallest training set tried "
                f"(n={_fmt_n(value.paired_first_n)}), so the true n it needs may be smaller")
    else:
        text = (f"Paired training first reaches it at n={_fmt_n(value.paired_first_n)} on the ladder "
                f"(n≈{value.n_paired:.0f} by log-linear interpolation)")
    if not _finite(value.n_single):
        out.append(text + "; single training never reaches the target, so the ratio is undefined.")
        return out
    text += f"; single training reaches it at n≈{value.n_single:.0f}"
    if _finite(value.ratio):
        bound = " (a lower bound)" if value.paired_censored and not value.single_censored else ""
        if value.ratio >= 1:
            meaning = f"single training needs {value.ratio:.2f}x as many training cases"
        else:
            meaning = f"paired training needs {1 / value.ratio:.2f}x as many training cases as single"
        text += (f": sample-efficiency ratio n_single/n_paired = {value.ratio:.2f}{bound} "
                 f"({_spread_text(value)}), {meaning}")
    out.append(text + ".")
    return out


def _spread_text(value: SampleEfficiency) -> str:
    """The range of the per-seed ratios, and how many seeds had none."""
    low, high, undefined = value.spread()
    seeds = len(value.seed_ratios)
    text = (f"range over {seeds} seeds {low:.2f} to {high:.2f}" if _finite(low)
            else f"undefined in each of the {seeds} seeds alone")
    if undefined and _finite(low):
        text += f"; undefined in {undefined} of {seeds} seeds"
    return text


def _ladder_too_small(value: SampleEfficiency) -> str:
    """What a ladder too small for a ratio does show: the mean metric per training-set size."""
    name = metric_name(value.metric)

    def curve(points: Sequence[tuple[float, float]]) -> str:
        return ", ".join(f"n={_fmt_n(n)} {fmt(v)}" for n, v in points) or "not run"

    sizes = "size" if value.n_sizes == 1 else "sizes"
    seeds = "seed" if value.n_seeds == 1 else "seeds"
    return (f"The learning-curve ladder is too small to estimate a sample-efficiency ratio ({value.n_sizes} "
            f"training-set {sizes} and {value.n_seeds} {seeds} in both modes; at least {MIN_LADDER_SIZES} sizes and "
            f"{MIN_LADDER_SEEDS} seeds are needed for a ratio with a spread). {name} by training-set size"
            f"{' (mean over seeds)' if value.n_seeds > 1 else ''}: single {curve(value.single_curve)}; "
            f"paired {curve(value.paired_curve)}.")


def _resolution_findings(part: pd.DataFrame, prefix: str) -> list[str]:
    """A sentence when a model's conditions encoded the query at different resolutions (LLaVA-OneVision tiles
    the image of a one-image prompt but not those of a several-image prompt), so their difference is not the
    references' effect alone."""
    if "query_resolution" not in part.columns:
        return []
    by_condition = [(row, str(row["query_resolution"] or "")) for _, row in part.iterrows()]
    if len({value for _, value in by_condition if value}) < 2:
        return []
    described = "; ".join(f"{row.get('mode', '')} k={row.get('k', '')}: {value or 'not recorded'}"
                          for row, value in by_condition)
    return [f"{prefix}the conditions saw the query at different resolutions ({described}): this model encodes a "
            "one-image prompt at anyres (base view plus tiles) and the images of a several-image prompt at base "
            "resolution only, so the single-vs-paired difference includes the change of resolution."]


def _subjects(
    summary: pd.DataFrame, tests: pd.DataFrame | None
) -> list[tuple[str | None, pd.DataFrame, str | None, str]]:
    """(model, its rows with its baseline's k=0 rows, baseline model, sentence prefix) per model to describe.

    The runner may compare a model's paired conditions with another model's
    single-image run (``paired_tests.baseline``); then that run is the
    baseline here too, and a model that only serves as someone's baseline
    gets no block of its own.
    """
    if "model" not in summary.columns:
        return [(None, summary, None, "")]
    frame = summary.assign(model=summary["model"].astype(str))
    k = pd.to_numeric(frame["k"], errors="coerce") if "k" in frame.columns else pd.Series(0, index=frame.index)
    models = list(dict.fromkeys(frame["model"]))
    baselines = baselines_from_tests(tests)
    has_paired = {m for m in models if ((frame["model"] == m) & (k > 0)).any()}
    serving = {b for m, b in baselines.items() if b != m}
    subjects = [m for m in models if m in has_paired or m not in serving]
    out = []
    for model in subjects:
        baseline = baselines.get(model, model)
        if baseline not in set(frame["model"]):
            baseline = model
        part = pd.concat([frame[(frame["model"] == baseline) & (k == 0)], frame[(frame["model"] == model) & (k > 0)]])
        part = part.assign(model=model)
        prefix = f"{model}: " if len(subjects) > 1 else ""
        out.append((model, part, baseline, prefix))
    return out


def findings_from(
    summary: pd.DataFrame | None,
    paired_tests: pd.DataFrame | None,
    sample_efficiency: Any = None,
    metric: str = "auroc",
    alpha: float = 0.05,
) -> list[str]:
    """Plain sentences about the results, generated from the numbers as measured.

    ``summary``/``paired_tests`` are :class:`ExperimentResult`'s frames; one
    block of sentences per model. ``sample_efficiency`` is a
    :class:`SampleEfficiency`, its ``as_dict()``, a bare ratio or a learning
    curve frame (analysed with :func:`sample_efficiency`). A paired condition
    "beats" single when its point estimate is better; that it is established
    is said only when the 95% CI of the difference excludes 0.
    """
    out: list[str] = []
    prior_tests = None
    if not _empty(summary) and "mode" in summary.columns:  # the patient's own priors: reported apart, never pooled
        summary = summary[summary["mode"].astype(str) != "prior"]
    if not _empty(paired_tests) and "mode" in paired_tests.columns:
        prior_tests = paired_tests[paired_tests["mode"].astype(str) == "prior"]
        paired_tests = paired_tests[paired_tests["mode"].astype(str) != "prior"]
    if _empty(summary):
        out.append("No evaluation results: the single-vs-paired comparison was not run.")
    else:
        for model, part, baseline, prefix in _subjects(summary, paired_tests):
            out.extend(_model_findings(part, paired_tests, metric, model, alpha, prefix, baseline))
            out.extend(_resolution_findings(part, prefix))
    if not _empty(prior_tests) and f"delta_{metric}" in prior_tests.columns:
        for _, row in prior_tests.iterrows():
            out.append(f"Comparison with the patient's own earlier healthy study (prior_study, k={row['k']}; a "
                       f"separate mode, not leakage-free): {metric_name(metric)} minus single = "
                       f"{fmt_delta(row[f'delta_{metric}'], row.get(f'delta_{metric}_lo'), row.get(f'delta_{metric}_hi'))}"
                       f" on the {_fmt_n(row['n'])} queries that have such a prior.")
    out.extend(_efficiency_findings(_coerce_efficiency(sample_efficiency, metric)))
    return out


# ------------------------------------------------------------------- tables
def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    return {"columns": list(columns), "rows": [[_cell(v) if not isinstance(v, str) else v for v in row]
                                               for row in rows]}


def metrics_table(summary: pd.DataFrame | None) -> dict[str, Any] | None:
    """The summary as display strings: id columns then ``value [lo, hi]`` per metric."""
    if _empty(summary):
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
    if not (_finite(lo) and _finite(hi)):
        return "NA"
    if lo > 0:
        return "above 0"
    if hi < 0:
        return "below 0"
    return "includes 0"


def paired_table(paired_tests: pd.DataFrame | None) -> dict[str, Any] | None:
    if _empty(paired_tests):
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
    if _empty(curves) or "n_train" not in curves.columns:
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
        cells = ([row["model"]] if several else []) + [row["mode"], _fmt_n(row["n_train"]), int(row["n_seeds"])]
        for m in metrics:
            a = aggs[m]
            hit = a[(a["model"] == row["model"]) & (a["mode"] == row["mode"]) & (a["n_train"] == row["n_train"])]
            cells.append(ci_cell(hit["value"].iloc[0], hit["lo"].iloc[0], hit["hi"].iloc[0]) if len(hit) else "NA")
        cells.append(bands.get(row["band"], str(row["band"])))
        rows.append(cells)
    return _table(columns, rows)


# ------------------------------------------------------------------- examples
def examples_from_records(
    records: Sequence[Mapping[str, Any]],
    cases: Any,
    n: int = 4,
    title: str | None = None,
) -> list[dict[str, Any]]:
    """Example specs for :func:`write_report` from one condition's prediction records.

    ``cases`` is a :class:`~seeinpairs.cases.CaseTable` or a mapping case id ->
    :class:`~seeinpairs.cases.Case`. Alternates wrong and right predictions
    (in record order) so the panels show both; unknown case ids are skipped.
    """
    def lookup(case_id: str):
        try:
            return cases.get(case_id) if hasattr(cases, "get") else cases[case_id]
        except Exception:  # noqa: BLE001 - an unknown id only drops that example
            return None

    wrong = [r for r in records if r.get("gold") is not None and r.get("predicted") != r.get("gold")]
    right = [r for r in records if r.get("gold") is not None and r.get("predicted") == r.get("gold")]
    ordered = [r for pair in zip(wrong, right) for r in pair] + wrong[len(right):] + right[len(wrong):]
    out = []
    for record in ordered:
        if len(out) >= n:
            break
        query = lookup(str(record.get("case_id")))
        if query is None:
            continue
        refs = [lookup(str(i)) for i in record.get("reference_ids") or []]
        out.append({
            "query": query.image,
            "references": [r.image if r is not None else None for r in refs],
            "reference_labels": [str(i) for i in record.get("reference_ids") or []],
            "gold": record.get("gold"), "predicted": record.get("predicted"),
            "probabilities": record.get("probabilities"), "options": record.get("options"),
            "title": f"{title + ': ' if title else ''}case {record.get('case_id')}",
        })
    return out


def _render_example(spec: Any) -> dict[str, str] | None:
    if isinstance(spec, (bytes, bytearray)):
        return {"uri": png_data_uri(bytes(spec)), "caption": ""}
    if not isinstance(spec, Mapping):
        return None
    if "png" in spec:
        return {"uri": png_data_uri(bytes(spec["png"])), "caption": str(spec.get("caption", ""))}
    png = plot_example(spec.get("query"), spec.get("references") or [], title=spec.get("title"),
                       gold=spec.get("gold"), predicted=spec.get("predicted"),
                       probabilities=spec.get("probabilities"), options=spec.get("options"),
                       reference_labels=spec.get("reference_labels"))
    caption = spec.get("caption")
    if caption is None:
        parts = []
        if spec.get("title"):
            parts.append(str(spec["title"]))
        if spec.get("gold") is not None:
            parts.append(f"gold {spec['gold']}")
        if spec.get("predicted") is not None:
            parts.append(f"predicted {spec['predicted']}")
        probs = format_probabilities(spec.get("probabilities"), spec.get("options"))
        if probs:
            parts.append(f"probabilities: {probs}")
        caption = "; ".join(parts)
    return {"uri": png_data_uri(png), "caption": str(caption)}


# ------------------------------------------------------------------- report
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


def _metadata_items(metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    items = []
    for key, value in (metadata or {}).items():
        if isinstance(value, (Mapping, list, tuple)):
            text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
            items.append({"key": str(key), "value": text, "block": True})
        else:
            text = "" if value is None else str(value)
            items.append({"key": str(key), "value": text, "block": "\n" in text})
    return items


@dataclass(frozen=True)
class ReportSection:
    """An extra report section contributed by a feature (attribution, multi-image QA, set differences...).

    ``html`` is the section body, rendered by the feature's own autoescaped
    template via :func:`render_fragment`; sections appear after the examples, in
    the order given, each under an ``<h2>`` with ``title`` and anchor ``anchor``.
    """

    anchor: str
    title: str
    html: str


def render_fragment(template: str, **context: Any) -> str:
    """Render a section body from ``report/templates/<template>`` (autoescaped, strict) for a :class:`ReportSection`."""
    return _environment().get_template(template).render(**context)


def _environment() -> Environment:
    # autoescape on for every template, whatever its name: all text in the report is data
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_report(
    *,
    title: str,
    summary: pd.DataFrame | None,
    paired_tests: pd.DataFrame | None,
    learning_curves: pd.DataFrame | None = None,
    sample_efficiency: Any = None,
    examples: Sequence[Any] | None = None,
    findings: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    limitations: str | Sequence[str] | None = None,
    metric: str = "auroc",
    sections: Sequence[ReportSection] = (),
    core: bool = True,
    anchor: Mapping[str, Any] | None = None,
) -> str:
    """The report as one HTML string; see :func:`write_report`."""
    efficiency = _coerce_efficiency(sample_efficiency, metric)
    if efficiency is None and not _empty(learning_curves):
        efficiency = _coerce_efficiency(learning_curves, metric)
    if findings is None:
        findings = findings_from(summary, paired_tests, efficiency, metric=metric)
    metric_png = None if _empty(summary) else plot_metric_by_k(summary, baselines=baselines_from_tests(paired_tests))
    curve_png = plot_learning_curves(learning_curves) if not _empty(learning_curves) else None
    curve_metric = metric if not _empty(learning_curves) and metric in learning_curves.columns else "accuracy"
    rendered_examples = [e for e in (_render_example(spec) for spec in (examples or [])) if e is not None]
    if isinstance(limitations, str):
        limitations = [limitations]
    context = {
        "title": title,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "metadata": _metadata_items(metadata),
        "findings": [str(f) for f in findings],
        "metrics_table": metrics_table(summary),
        "anchor": anchor_text(anchor),
        "paired_table": paired_table(paired_tests),
        "metric_plot": {"uri": png_data_uri(metric_png), "caption": metric_by_k_caption(summary)}
        if metric_png else None,
        "curve_plot": {"uri": png_data_uri(curve_png), "caption": learning_curve_caption(learning_curves, curve_metric)}
        if curve_png else None,
        "curve_table": learning_curve_table(learning_curves),
        "efficiency": _efficiency_findings(efficiency) if efficiency is not None else [],
        "examples": rendered_examples,
        "limitations": list(limitations) if limitations else list(DEFAULT_LIMITATIONS),
        "sections": [{"anchor": x.anchor, "title": x.title, "html": Markup(x.html)} for x in sections],
        "core": core,
    }
    return _environment().get_template("report.html.j2").render(**context)


def write_report(
    out_path: str | Path,
    *,
    title: str,
    summary: pd.DataFrame | None,
    paired_tests: pd.DataFrame | None,
    learning_curves: pd.DataFrame | None = None,
    sample_efficiency: Any = None,
    examples: Sequence[Any] | None = None,
    findings: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    limitations: str | Sequence[str] | None = None,
    metric: str = "auroc",
    sections: Sequence[ReportSection] = (),
    core: bool = True,
    anchor: Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-contained HTML report (figures as data URIs) and return its path.

    ``summary``/``paired_tests``: :class:`~seeinpairs.evaluation.runner.ExperimentResult`
    frames. ``learning_curves``: columns ``mode``, ``n_train``, ``seed`` and
    metrics (optionally ``<m>_lo``/``<m>_hi``). ``sample_efficiency``: a
    :class:`SampleEfficiency`, its dict or a bare ratio; computed from
    ``learning_curves`` when omitted. ``examples``: dicts with ``query``,
    ``references`` (paths, arrays or PIL images), ``gold``, ``predicted``,
    ``probabilities``, ``options``, ``title``, ``caption`` (see
    :func:`examples_from_records`), or PNG bytes. ``findings``: sentences;
    generated by :func:`findings_from` when omitted. ``metadata``: shown in the
    header (data set, model, date, config...); dict/list values as JSON.
    ``limitations``: text for "What this can and cannot show" (a default
    otherwise). ``sections``: extra :class:`ReportSection` bodies placed after the
    examples. ``core=False`` leaves out the single-experiment sections (metrics, paired
    tests, by k, sample efficiency, examples) for pages made of ``sections`` only (a
    suite of studies). Any empty input renders as "not run".
    """
    html = render_report(title=title, summary=summary, paired_tests=paired_tests, learning_curves=learning_curves,
                         sample_efficiency=sample_efficiency, examples=examples, findings=findings,
                         metadata=metadata, limitations=limitations, metric=metric, sections=sections, core=core,
                         anchor=anchor)
    return atomic_write_text(out_path, html)
