"""The numbers behind the report's findings: sample-efficiency curves and each model's paired-vs-single comparison.

Nothing here writes HTML or sentences or draws: :func:`sample_efficiency` reads learning curves,
:func:`compare_model` reads one model's evaluation rows and paired tests, and both return
dataclasses that :mod:`.findings` words and :mod:`.html` renders. Keeping them apart lets the
analysis be tested on its own numbers and the prose on constructed analyses, and keeps
matplotlib out of every caller that only needs the numbers.

Aggregation over seeds is explicit and shared by the figures, tables and captions:

* metric by selector and k (:func:`aggregate_seeds`): the point is the mean over
  seeds; with one seed the bar is that run's 95% bootstrap CI, with several it
  is the envelope of the per-seed CIs (lowest lower bound to highest upper
  bound), which covers both case sampling and seed-to-seed variation.
* learning curves (:func:`aggregate_curves`): the point is the mean over seeds;
  the band is the min-max over seeds where there are several, or the run's own
  bootstrap CI (``<metric>_lo``/``<metric>_hi``) where there is one.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field
from enum import Enum
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..evaluation.degenerate import failed_rows
from ..evaluation.metrics import METRICS
from .format import finite, fmt_n

#: the smallest learning-curve ladder a sample-efficiency ratio is stated for: fewer sizes or one seed give
#: a ratio that interpolates between two noisy points with no interval at all
MIN_LADDER_SIZES = 3
MIN_LADDER_SEEDS = 2


def is_empty(frame: Any) -> bool:
    """Whether ``frame`` is missing, not a data frame, or has no rows (a section then renders "not run")."""
    return frame is None or not isinstance(frame, pd.DataFrame) or frame.empty


# ------------------------------------------------------------------- metrics
def metric_name(metric: str) -> str:
    """Display name of a metric (``auroc`` -> ``AUROC``), from its spec; an unregistered name with spaces."""
    return METRICS.get(metric).display_name if metric in METRICS else metric.replace("_", " ")


def higher_is_better(metric: str) -> bool:
    """The metric's direction, from its spec (an unregistered name counts as higher-is-better)."""
    return METRICS.get(metric).higher_is_better if metric in METRICS else True


def _finite_values(values: pd.Series) -> np.ndarray:
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


def _nanmean(values: pd.Series) -> float:
    arr = _finite_values(values)
    return float(arr.mean()) if arr.size else float("nan")


def _nanmin(values: pd.Series) -> float:
    arr = _finite_values(values)
    return float(arr.min()) if arr.size else float("nan")


def _nanmax(values: pd.Series) -> float:
    arr = _finite_values(values)
    return float(arr.max()) if arr.size else float("nan")


def _with_defaults(frame: pd.DataFrame, defaults: Mapping[str, Any]) -> pd.DataFrame:
    """A copy of ``frame`` with each column of ``defaults`` it lacks filled with that default
    (results from older or partial runs lack the identifying columns a single model or seed needs no value for)."""
    out = frame.copy()
    for column, value in defaults.items():
        if column not in out.columns:
            out[column] = value
    return out


# ------------------------------------------------------------------- aggregation over seeds
def aggregate_seeds(summary: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    """One row per (model, selector, k): ``n_seeds``, ``value`` (mean over seeds), ``lo``, ``hi``.

    With one seed ``lo``/``hi`` are that run's bootstrap CI; with several they
    are the envelope of the per-seed CIs (min of ``<metric>_lo``, max of
    ``<metric>_hi``). NaN values are ignored; a group with none left is NaN.
    Rows without the metric column give an empty frame.
    """
    columns = ["model", "mode", "selector", "k", "n_seeds", "value", "lo", "hi"]
    if summary is None or summary.empty or metric not in summary.columns:
        return pd.DataFrame(columns=columns)
    frame = _with_defaults(summary, {"model": "", "selector": "none", "k": 0, "seed": 0,
                                     metric + "_lo": float("nan"), metric + "_hi": float("nan")})
    frame["model"] = frame["model"].astype(str)
    frame["selector"] = frame["selector"].astype(str)
    frame["k"] = pd.to_numeric(frame["k"], errors="coerce").fillna(0).astype(int)
    rows = []
    for (model, selector, k), group in frame.groupby(["model", "selector", "k"], sort=False):
        seeds = group["seed"].nunique(dropna=False)
        if len(group) == 1:
            lo, hi = float(group[metric + "_lo"].iloc[0]), float(group[metric + "_hi"].iloc[0])
        else:
            lo, hi = _nanmin(group[metric + "_lo"]), _nanmax(group[metric + "_hi"])
        rows.append({"model": model, "mode": "single" if k == 0 else "paired", "selector": selector, "k": k,
                     "n_seeds": int(seeds), "value": _nanmean(group[metric]), "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=columns)


def aggregate_curves(curves: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    """One row per (model, mode, n_train) of a learning-curve frame: mean over seeds with a band.

    ``band`` says how ``lo``/``hi`` were made: ``"seeds"`` (min-max over
    several seeds), ``"bootstrap"`` (one seed: its ``<metric>_lo``/``_hi``)
    or ``"none"`` (one seed and no CI columns).
    """
    columns = ["model", "mode", "n_train", "n_seeds", "value", "lo", "hi", "band"]
    if curves is None or curves.empty or metric not in curves.columns or "n_train" not in curves.columns:
        return pd.DataFrame(columns=columns)
    frame = _with_defaults(curves, {"model": "", "mode": "single", "seed": 0})
    frame["model"] = frame["model"].astype(str)
    frame["mode"] = frame["mode"].astype(str)
    frame["n_train"] = pd.to_numeric(frame["n_train"], errors="coerce")
    frame = frame[frame["n_train"].notna()]
    has_ci = metric + "_lo" in frame.columns and metric + "_hi" in frame.columns
    rows = []
    for (model, mode, n_train), group in frame.groupby(["model", "mode", "n_train"], sort=True):
        values = pd.to_numeric(group[metric], errors="coerce")
        measured = values[np.isfinite(values.to_numpy(dtype=float))]
        if len(measured) >= 2:
            lo, hi, band = float(measured.min()), float(measured.max()), "seeds"
        elif has_ci and len(group) == 1:
            lo, hi = float(group[metric + "_lo"].iloc[0]), float(group[metric + "_hi"].iloc[0])
            band = "bootstrap" if finite(lo) and finite(hi) else "none"
        else:
            lo = hi = float("nan")
            band = "none"
        rows.append({"model": model, "mode": mode, "n_train": float(n_train), "n_seeds": int(group["seed"].nunique()),
                     "value": _nanmean(values), "lo": lo, "hi": hi, "band": band})
    out = pd.DataFrame(rows, columns=columns)
    return out


def baselines_from_tests(paired_tests: pd.DataFrame | None) -> dict[str, str]:
    """Model -> the model whose single-image run its paired conditions were compared with (``baseline`` column)."""
    if paired_tests is None or paired_tests.empty or not {"model", "baseline"} <= set(paired_tests.columns):
        return {}
    out = {}
    for model, group in paired_tests.groupby(paired_tests["model"].astype(str)):
        named = group["baseline"].dropna().astype(str)
        if len(named):
            out[str(model)] = str(named.mode().iloc[0])
    return out



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
    #: the target is what single training reaches at its largest training set (``target_source`` words it)
    target_from_single: bool = False

    @property
    def estimable(self) -> bool:
        """Whether the ladder can carry a ratio: a 2-point, 1-seed curve gives a number with no interval."""
        return self.n_sizes >= MIN_LADDER_SIZES and self.n_seeds >= MIN_LADDER_SEEDS

    def spread(self) -> tuple[float, float, int]:
        """(lowest, highest) finite per-seed ratio and how many seeds had an undefined one."""
        values = np.asarray(self.seed_ratios, dtype=float)
        defined = values[np.isfinite(values)]
        if not defined.size:
            return float("nan"), float("nan"), int(values.size)
        return float(defined.min()), float(defined.max()), int(values.size - defined.size)

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
        goal, source = float(v_s[-1]), f"single at its largest training set (n={fmt_n(ns_s[-1])})"
    else:
        goal, source = nan, "no single curve"
    if finite(goal):
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
                            paired_curve=tuple(zip(ns_p.tolist(), v_p.tolist())),
                            target_from_single=target is None and bool(ns_s.size))


def _ratio(ns_s: np.ndarray, v_s: np.ndarray, ns_p: np.ndarray, v_p: np.ndarray, goal: float, higher: bool) -> float:
    """``n_single / n_paired`` at ``goal`` (NaN when either curve never reaches it)."""
    if not finite(goal):
        return float("nan")
    n_single = _first_reach(ns_s, v_s, goal, higher)[0]
    n_paired = _first_reach(ns_p, v_p, goal, higher)[0]
    return n_single / n_paired if finite(n_single) and finite(n_paired) and n_paired > 0 else float("nan")


def _curve_rows(curves: pd.DataFrame | None, metric: str, model: str | None) -> pd.DataFrame:
    """The rows of one model with a finite ``metric`` at ``n_train > 0`` (``seed`` 0 where the column is missing)."""
    if is_empty(curves) or metric not in curves.columns or not {"mode", "n_train"} <= set(curves.columns):
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


def coerce_efficiency(value: Any, metric: str) -> SampleEfficiency | float | None:
    """What a caller passed as sample efficiency, as a :class:`SampleEfficiency` or a bare ratio.

    Accepts the dataclass, its ``as_dict()`` (as stored in JSON), a dict with only a ``ratio``,
    a number, or learning curves of one model (analysed on ``metric``, else AUROC, else accuracy).
    ``None`` where nothing can be read from it, so the report says nothing rather than guess.
    """
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
            return float(value["ratio"]) if finite(value["ratio"]) else float("nan")
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------- paired vs single
def comparisons(tests: pd.DataFrame | None, model: str | None, metric: str,
                failed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paired-test rows of one model with ``delta``, ``lo``, ``hi`` and ``p`` columns for ``metric``.

    ``failed``: summary rows labelled as failed training; a comparison that involves one (the
    paired condition itself, or the single-image baseline of its seed) is left out.
    """
    columns = ["selector", "k", "seed", "delta", "lo", "hi", "p", "n"]
    if is_empty(tests) or f"delta_{metric}" not in tests.columns:
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
    if not is_empty(failed):
        seeds = failed["seed"] if "seed" in failed.columns else pd.Series(0, index=failed.index)
        keys = {(str(sel), int(k), str(seed)) for sel, k, seed in zip(failed["selector"].astype(str),
                                                                     pd.to_numeric(failed["k"]), seeds)}
        failed_base = {seed for sel, k, seed in keys if k == 0}
        keep = [(str(r.selector), int(r.k) if finite(r.k) else -1, str(r.seed)) not in keys
                and str(r.seed) not in failed_base for r in out.itertuples()]
        out = out[np.asarray(keep, dtype=bool)] if len(out) else out
    return out.reset_index(drop=True)




@dataclass(frozen=True, eq=False)
class Subject:
    """One model the findings describe: its paired rows with its baseline's single-image (k=0) rows."""

    model: str | None
    rows: pd.DataFrame
    #: the model whose single-image run is the baseline (``None`` when the summary names no models)
    baseline: str | None


def subjects(summary: pd.DataFrame, tests: pd.DataFrame | None) -> list[Subject]:
    """The models to describe, each with the rows its comparison needs.

    The runner may compare a model's paired conditions with another model's
    single-image run (``paired_tests.baseline``); then that run is the
    baseline here too, and a model that only serves as someone's baseline
    gets no block of its own.
    """
    if "model" not in summary.columns:
        return [Subject(None, summary, None)]
    frame = summary.assign(model=summary["model"].astype(str))
    k = pd.to_numeric(frame["k"], errors="coerce") if "k" in frame.columns else pd.Series(0, index=frame.index)
    models = list(dict.fromkeys(frame["model"]))
    baselines = baselines_from_tests(tests)
    has_paired = {m for m in models if ((frame["model"] == m) & (k > 0)).any()}
    serving = {b for m, b in baselines.items() if b != m}
    out = []
    for model in [m for m in models if m in has_paired or m not in serving]:
        baseline = baselines.get(model, model)
        if baseline not in set(frame["model"]):
            baseline = model
        part = pd.concat([frame[(frame["model"] == baseline) & (k == 0)], frame[(frame["model"] == model) & (k > 0)]])
        out.append(Subject(model, part.assign(model=model), baseline))
    return out


def split_prior(summary: pd.DataFrame | None, tests: pd.DataFrame | None
                ) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """(summary, paired tests, prior-study tests): the patient's own priors are reported apart, never pooled."""
    prior_tests = None
    if not is_empty(summary) and "mode" in summary.columns:
        summary = summary[summary["mode"].astype(str) != "prior"]
    if not is_empty(tests) and "mode" in tests.columns:
        prior_tests = tests[tests["mode"].astype(str) == "prior"]
        tests = tests[tests["mode"].astype(str) != "prior"]
    return summary, tests, prior_tests


class Stop(Enum):
    """Why a model's comparison ended before a best paired condition could be named."""

    METRIC_MISSING = "the metric was not computed"
    SINGLE_FAILED = "the single-image baseline failed training"
    NO_SINGLE = "no single-image (k=0) run"
    SINGLE_UNDEFINED = "the single-image value is NaN"
    NO_PAIRED = "no paired (k>0) condition trained or was run"
    PAIRED_UNDEFINED = "the metric is NaN in every paired condition"


@dataclass(frozen=True, eq=False)
class ModelComparison:
    """One model's paired conditions against its single-image baseline on one metric, as measured.

    Rows labelled as failed training are set apart (``failed``) and left out of everything else.
    ``stop`` says why the comparison ended early; otherwise ``best`` is the paired condition with
    the best mean difference to single (signed by the metric's direction), ``best_comparisons`` its
    per-seed paired tests that have an interval, and ``calibration`` the point differences in AUROC
    and ECE of that condition (when both were computed).
    """

    metric: str
    alpha: float
    model: str | None = None
    baseline: str | None = None
    stop: Stop | None = None
    failed: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: seeds among all rows (failed included) and among the rows that trained
    seeds_run: int = 1
    seeds: int = 1
    #: the single-image row aggregated over seeds (``value``, ``lo``, ``hi``); set when its value is finite
    single: pd.Series | None = None
    #: mean number of evaluated cases of the single-image rows (NaN when unknown)
    n_cases: float = math.nan
    #: paired conditions aggregated over seeds, with ``delta`` to single (mean of the paired tests, else of values)
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the paired tests of the conditions that trained (see :func:`comparisons`)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: pd.Series | None = None
    best_comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration: tuple[float, float] | None = None
    #: (mode, k, resolution) per row where the rows record the query's encoding resolution (``""``: not recorded)
    query_resolutions: tuple[tuple[Any, Any, str], ...] = ()

    @property
    def higher(self) -> bool:
        return higher_is_better(self.metric)

    @property
    def valid(self) -> pd.DataFrame:
        """The paired conditions with a finite difference to single."""
        if "delta" not in self.paired.columns:
            return self.paired
        return self.paired[np.isfinite(self.paired["delta"].to_numpy(dtype=float))]

    @property
    def gain(self) -> pd.Series:
        """Each valid condition's difference to single, positive where paired is better."""
        valid = self.valid
        return valid["delta"] if self.higher else -valid["delta"]

    @property
    def undefined(self) -> int:
        """How many paired conditions have no finite difference to single."""
        return len(self.paired) - len(self.valid)

    @property
    def intervals(self) -> pd.DataFrame:
        """The compared conditions' paired tests with a finite 95% CI (none before a best condition exists)."""
        comps = self.comparisons
        if self.best is None or comps.empty:
            return comps.iloc[0:0]
        return comps[np.isfinite(comps["lo"].to_numpy(dtype=float)) & np.isfinite(comps["hi"].to_numpy(dtype=float))]


def split_failed(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows that trained, rows labelled as failed training)."""
    mask = failed_rows(summary)
    if not mask.any():
        return summary, summary.iloc[0:0]
    return summary[~mask], summary[mask]


def _seed_count(frame: pd.DataFrame) -> int:
    return int(frame["seed"].nunique()) if "seed" in frame.columns else 1


def _only_single_failed(trained: pd.DataFrame, failed: pd.DataFrame) -> bool:
    """Whether the single-image run failed training and no other single-image run is left."""
    single_failed = len(failed) > 0 and bool((pd.to_numeric(failed["k"], errors="coerce") == 0).any())
    single_left = "k" not in trained.columns or bool((pd.to_numeric(trained["k"], errors="coerce") == 0).any())
    return single_failed and not single_left


def _single_cases(trained: pd.DataFrame) -> float:
    if "n" not in trained.columns or "k" not in trained.columns:
        return math.nan
    n = trained.loc[pd.to_numeric(trained["k"], errors="coerce") == 0, "n"]
    return float(n.mean()) if len(n) else math.nan


def _with_deltas(paired: pd.DataFrame, comps: pd.DataFrame, single: float) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """``paired`` with each condition's ``delta`` to single, and each condition's paired tests.

    The delta is the mean of the condition's paired tests over seeds; without a test, the
    difference of the aggregated values.
    """
    deltas, condition_rows = [], []
    for _, row in paired.iterrows():
        rows = comps[(comps["selector"] == row["selector"]) & (comps["k"] == row["k"])] if not comps.empty else comps
        measured = rows["delta"].to_numpy(dtype=float) if len(rows) else np.array([])
        measured = measured[np.isfinite(measured)]
        if measured.size:
            deltas.append(float(measured.mean()))
        elif finite(row["value"]):
            deltas.append(float(row["value"]) - single)
        else:
            deltas.append(float("nan"))
        condition_rows.append(rows)
    return paired.assign(delta=deltas), condition_rows


def _with_intervals(rows: pd.DataFrame) -> pd.DataFrame:
    if not len(rows):
        return rows
    return rows[np.isfinite(rows["lo"].to_numpy(dtype=float)) & np.isfinite(rows["hi"].to_numpy(dtype=float))]


def _calibration(trained: pd.DataFrame, best: pd.Series) -> tuple[float, float] | None:
    """(Δ AUROC, Δ ECE) of the best condition against single, point estimates; ``None`` where either is missing."""
    if "ece" not in trained.columns or "auroc" not in trained.columns:
        return None

    def value(frame: pd.DataFrame, selector: str, k: int) -> float:
        hit = frame[(frame["selector"] == selector) & (frame["k"] == k)]
        return float(hit["value"].iloc[0]) if len(hit) else float("nan")

    def single_value(frame: pd.DataFrame) -> float:
        hit = frame[frame["k"] == 0]
        return float(hit["value"].iloc[0]) if len(hit) else float("nan")

    auroc, ece = aggregate_seeds(trained, "auroc"), aggregate_seeds(trained, "ece")
    d_auc = value(auroc, best["selector"], best["k"]) - single_value(auroc)
    d_ece = value(ece, best["selector"], best["k"]) - single_value(ece)
    return (d_auc, d_ece) if finite(d_auc) and finite(d_ece) else None


def _query_resolutions(rows: pd.DataFrame) -> tuple[tuple[Any, Any, str], ...]:
    """Each row's (mode, k, query resolution), failed rows included; empty where no resolution was recorded."""
    if "query_resolution" not in rows.columns:
        return ()
    return tuple((row.get("mode", ""), row.get("k", ""), str(row["query_resolution"] or ""))
                 for _, row in rows.iterrows())


def compare_model(rows: pd.DataFrame, tests: pd.DataFrame | None, metric: str, model: str | None = None,
                  alpha: float = 0.05, baseline: str | None = None) -> ModelComparison:
    """Compare one model's paired conditions with its single-image baseline (``rows``: a :class:`Subject`'s rows)."""
    known: dict[str, Any] = {"metric": metric, "alpha": alpha, "model": model, "baseline": baseline,
                             "query_resolutions": _query_resolutions(rows)}
    if metric not in rows.columns:
        return ModelComparison(**known, stop=Stop.METRIC_MISSING)
    trained, failed = split_failed(rows)
    known.update(failed=failed, seeds_run=_seed_count(rows), seeds=_seed_count(trained))
    if _only_single_failed(trained, failed):
        return ModelComparison(**known, stop=Stop.SINGLE_FAILED)
    agg = aggregate_seeds(trained, metric)
    single = agg[agg["k"] == 0]
    if single.empty:
        return ModelComparison(**known, stop=Stop.NO_SINGLE)
    if not finite(single.iloc[0]["value"]):
        return ModelComparison(**known, stop=Stop.SINGLE_UNDEFINED)
    known.update(single=single.iloc[0], n_cases=_single_cases(trained))
    paired = agg[agg["k"] > 0].reset_index(drop=True)
    if paired.empty:
        return ModelComparison(**known, stop=Stop.NO_PAIRED)
    comps = comparisons(tests, model, metric, failed)
    paired, per_condition = _with_deltas(paired, comps, float(known["single"]["value"]))
    known.update(paired=paired, comparisons=comps)
    result = ModelComparison(**known)
    if result.valid.empty:
        return ModelComparison(**known, stop=Stop.PAIRED_UNDEFINED)
    best_index = int(result.gain.idxmax())
    best = paired.loc[best_index]
    return ModelComparison(**known, best=best, best_comparisons=_with_intervals(per_condition[best_index]),
                           calibration=_calibration(trained, best))
