"""The report's findings: one small function per claim, each worded from analysed numbers as measured.

Every claim takes a :class:`~.analysis.ModelComparison` or a :class:`~.analysis.SampleEfficiency`
and returns its sentence, or ``None`` where the numbers do not support saying it. The claims
name the best paired condition whatever its sign, say plainly when paired did not beat single,
separate point estimates from intervals that exclude 0, and never call a difference an
improvement that the data do not show. :func:`findings_from` strings them together in reading
order.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .analysis import (
    MIN_LADDER_SEEDS,
    MIN_LADDER_SIZES,
    ModelComparison,
    SampleEfficiency,
    Stop,
    coerce_efficiency,
    compare_model,
    is_empty,
    metric_name,
    split_prior,
    subjects,
)
from .format import condition_label, finite, fmt, fmt_ci, fmt_delta, fmt_n, list_text, p_text

NO_RESULTS = "No evaluation results: the single-vs-paired comparison was not run."

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

Claim = Callable[[ModelComparison], "str | None"]


def _comparisons_unit(m: int) -> str:
    return "comparison" if m == 1 else "comparisons"


def _direction(delta: float, higher: bool) -> str:
    if abs(delta) < 0.0005:  # shows as +0.000 / -0.000 at three decimals
        return "unchanged"
    return "improved" if (delta > 0) == higher else "worsened"


# ------------------------------------------------------------------- one model: why there is no comparison
def metric_not_computed(a: ModelComparison) -> str | None:
    if a.stop is not Stop.METRIC_MISSING:
        return None
    return f"{metric_name(a.metric)} was not computed, so single and paired cannot be compared on it."


def failed_training(a: ModelComparison) -> str | None:
    """Names the runs labelled as failed training, which every later claim leaves out."""
    if a.failed.empty:
        return None
    parts = []
    for _, row in a.failed.iterrows():
        seed = f" seed {row['seed']}" if a.seeds_run > 1 and "seed" in row else ""
        label = "single-image" if finite(row.get("k")) and int(row["k"]) == 0 else condition_label(row["selector"],
                                                                                                   row["k"])
        parts.append(f"{label}{seed}: {row['degenerate']}")
    return ("Failed training (the model did not learn; these results are not findings and are left out of every "
            f"comparison, best-condition and calibration statement below): {'; '.join(parts)}.")


def single_baseline_failed(a: ModelComparison) -> str | None:
    if a.stop is not Stop.SINGLE_FAILED:
        return None
    return "The single-image baseline failed training, so no paired condition is compared with it."


def no_single_baseline(a: ModelComparison) -> str | None:
    if a.stop is not Stop.NO_SINGLE:
        return None
    return "No single-image (k=0) baseline was run, so paired conditions cannot be compared with it."


def single_undefined(a: ModelComparison) -> str | None:
    if a.stop is not Stop.SINGLE_UNDEFINED:
        return None
    return (f"The single-image {metric_name(a.metric)} is undefined (NaN, e.g. only one class among the evaluated "
            "cases), so no comparison on it is possible.")


# ------------------------------------------------------------------- one model: the comparison
def single_baseline(a: ModelComparison) -> str | None:
    """The single-image value every paired condition is compared with."""
    if a.single is None:
        return None
    n_text = f" on {fmt_n(a.n_cases)} cases" if finite(a.n_cases) else ""
    seed_note = f" (mean over {a.seeds} seeds)" if a.seeds > 1 else ""
    of_model = f", model {a.baseline}" if a.baseline is not None and a.baseline != a.model else ""
    return (f"Single-image baseline (k=0{of_model}): {metric_name(a.metric)} "
            f"{fmt_ci(a.single['value'], a.single['lo'], a.single['hi'])}{n_text}{seed_note}.")


def no_paired_condition(a: ModelComparison) -> str | None:
    if a.stop is not Stop.NO_PAIRED:
        return None
    return f"No paired condition (k>0) {'trained' if len(a.failed) else 'was run'}."


def paired_undefined(a: ModelComparison) -> str | None:
    if a.stop is not Stop.PAIRED_UNDEFINED:
        return None
    return f"{metric_name(a.metric)} is undefined (NaN) in every paired condition; no comparison is possible."


def best_condition(a: ModelComparison) -> str | None:
    """The best paired condition whatever its sign, with its difference and, where there are, its tests."""
    if a.best is None or a.single is None:
        return None
    best, rows, alpha = a.best, a.best_comparisons, a.alpha
    text = (f"Best paired condition: {condition_label(best['selector'], best['k'])}, {metric_name(a.metric)} "
            f"{fmt_ci(best['value'], best['lo'], best['hi'])} vs single "
            f"{fmt_ci(a.single['value'], a.single['lo'], a.single['hi'])}; ")
    if len(rows) == 1:
        r = rows.iloc[0]
        excludes = r["lo"] > 0 or r["hi"] < 0
        text += (f"the difference is {fmt_delta(r['delta'], r['lo'], r['hi'])}, "
                 + ("its 95% CI excludes 0" if excludes else "its 95% CI includes 0, not significant"))
        if finite(r["p"]):
            verdict = "significant" if r["p"] < alpha else "not significant"
            text += f" (McNemar on per-case correctness: {p_text(r['p'])}, {verdict} at {alpha:g})"
    elif len(rows) > 1:
        excl = int(((rows["lo"] > 0) | (rows["hi"] < 0)).sum())
        sig = int((rows["p"] < alpha).sum())
        text += (f"the difference is {fmt_delta(best['delta'])} (mean over {len(rows)} seeds); its 95% CI "
                 f"excludes 0 in {excl} of {len(rows)} seeds and McNemar p<{alpha:g} in {sig} of {len(rows)}")
    else:
        text += f"the difference is {fmt_delta(best['delta'])} (no paired CI available)"
    return text + "."


def beat_single(a: ModelComparison) -> str | None:
    """Whether any paired condition beat single on the point estimate, and which."""
    if a.best is None or a.single is None:
        return None
    name, valid, gain = metric_name(a.metric), a.valid, a.gain
    n_better = int((gain > 1e-12).sum())
    if n_better == 0:
        n_tied = int((gain.abs() <= 1e-12).sum())
        tie_note = f" ({n_tied} tied)" if n_tied else ""
        return (f"Paired did not beat single in any condition: none of the {len(valid)} paired conditions had a "
                f"{'higher' if a.higher else 'lower'} {name} than single-image ({fmt(a.single['value'])}){tie_note}.")
    better = [condition_label(r["selector"], r["k"]) for _, r in valid[gain > 1e-12].iterrows()]
    return (f"Paired beat single on the point estimate of {name} in {n_better} of {len(valid)} "
            f"conditions ({list_text(better)}).")


def undefined_conditions(a: ModelComparison) -> str | None:
    if a.best is None or not a.undefined:
        return None
    return f"{metric_name(a.metric)} was undefined (NaN) in {a.undefined} paired condition(s), left out above."


def _named_comparisons(a: ModelComparison, mask: pd.Series) -> str:
    parts = []
    for _, r in a.intervals[mask].iterrows():
        seed = f" seed {r['seed']}" if a.seeds > 1 else ""
        parts.append(f"{condition_label(r['selector'], r['k'])}{seed} ({fmt_delta(r['delta'], r['lo'], r['hi'])})")
    return list_text(parts)


def favourable_intervals(a: ModelComparison) -> str | None:
    """Which comparisons' 95% CI excluded 0 in paired's favour; none means no improvement is established."""
    ci = a.intervals
    if ci.empty:
        return None
    favour = ci["lo"] > 0 if a.higher else ci["hi"] < 0
    m, name = len(ci), metric_name(a.metric)
    if favour.sum() == 0:
        return (f"In none of the {m} paired-vs-single {_comparisons_unit(m)} did the 95% CI of the {name} "
                "difference exclude 0 in paired's favour, so no improvement is established.")
    return (f"The 95% CI of the {name} difference excluded 0 in paired's favour in {int(favour.sum())} of {m} "
            f"{_comparisons_unit(m)}: {_named_comparisons(a, favour)}.")


def unfavourable_intervals(a: ModelComparison) -> str | None:
    """Which comparisons' 95% CI excluded 0 against paired."""
    ci = a.intervals
    if ci.empty:
        return None
    against = ci["hi"] < 0 if a.higher else ci["lo"] > 0
    if against.sum() == 0:
        return None
    return (f"Paired was worse than single with the 95% CI excluding 0 in {int(against.sum())} of {len(ci)} "
            f"{_comparisons_unit(len(ci))}: {_named_comparisons(a, against)}.")


def mcnemar_count(a: ModelComparison) -> str | None:
    if a.intervals.empty:
        return None
    p = a.comparisons["p"].to_numpy(dtype=float)
    p = p[np.isfinite(p)]
    if not p.size:
        return None
    return (f"McNemar (per-case correctness) gave p<{a.alpha:g} in {int((p < a.alpha).sum())} of {p.size} "
            f"{_comparisons_unit(p.size)}.")


def multiplicity(a: ModelComparison) -> str | None:
    """How many intervals would exclude 0 by chance among several uncorrected comparisons."""
    m = len(a.intervals)
    if m <= 1:
        return None
    return (f"These are {m} comparisons against the same baseline without correction for multiple testing; with no "
            f"true effect about {m * a.alpha:.1f} would exclude 0 by chance.")


def calibration_vs_discrimination(a: ModelComparison) -> str | None:
    """Whether AUROC and ECE of the best condition moved the same way (point estimates)."""
    if a.calibration is None or a.best is None:
        return None
    d_auc, d_ece = a.calibration
    disc, cal = _direction(d_auc, True), _direction(d_ece, False)
    link = "and" if disc == cal else "while"
    return (f"Calibration vs discrimination for {condition_label(a.best['selector'], a.best['k'])}: AUROC "
            f"{fmt_delta(d_auc)} and ECE {fmt_delta(d_ece)} vs single (lower ECE is better): discrimination {disc} "
            f"{link} calibration {cal} (point estimates; no paired interval for ECE).")


def resolution_differs(a: ModelComparison) -> str | None:
    """Said when a model's conditions encoded the query at different resolutions (LLaVA-OneVision tiles the
    image of a one-image prompt but not those of a several-image prompt), so their difference is not the
    references' effect alone."""
    if len({value for _, _, value in a.query_resolutions if value}) < 2:
        return None
    described = "; ".join(f"{mode} k={k}: {value or 'not recorded'}" for mode, k, value in a.query_resolutions)
    return (f"the conditions saw the query at different resolutions ({described}): this model encodes a one-image "
            "prompt at anyres (base view plus tiles) and the images of a several-image prompt at base resolution "
            "only, so the single-vs-paired difference includes the change of resolution.")


#: the claims about one model, in reading order
MODEL_CLAIMS: tuple[Claim, ...] = (
    metric_not_computed, failed_training, single_baseline_failed, no_single_baseline, single_undefined,
    single_baseline, no_paired_condition, paired_undefined, best_condition, beat_single, undefined_conditions,
    favourable_intervals, unfavourable_intervals, mcnemar_count, multiplicity, calibration_vs_discrimination,
    resolution_differs,
)


def model_findings(a: ModelComparison, prefix: str = "") -> list[str]:
    """The sentences about one model, each starting with ``prefix`` (the model's name when there are several)."""
    return [prefix + sentence for sentence in (claim(a) for claim in MODEL_CLAIMS) if sentence]


# ------------------------------------------------------------------- the patient's own prior study
def prior_study(row: pd.Series, metric: str) -> str:
    """A prior-study comparison, a separate mode that is never pooled with the paired conditions."""
    delta = fmt_delta(row[f"delta_{metric}"], row.get(f"delta_{metric}_lo"), row.get(f"delta_{metric}_hi"))
    return (f"Comparison with the patient's own earlier healthy study (prior_study, k={row['k']}; a separate mode, "
            f"not leakage-free): {metric_name(metric)} minus single = {delta} on the {fmt_n(row['n'])} queries "
            "that have such a prior.")


# ------------------------------------------------------------------- sample efficiency
def given_ratio(value: float) -> str:
    """A bare ratio passed without curves: stated as given, with no ladder or spread to show."""
    if finite(value):
        return (f"Sample-efficiency ratio as given (training cases single needs / paired needs; no learning curves "
                f"came with it, so neither its ladder nor its spread can be shown): {float(value):.2f}.")
    return "Sample-efficiency ratio: undefined (paired or single never reached the target)."


def _ratio_stated(e: SampleEfficiency) -> bool:
    return finite(e.target) and e.estimable


def no_target(e: SampleEfficiency) -> str | None:
    if finite(e.target):
        return None
    return (f"Sample efficiency: no single-mode learning curve with a finite {metric_name(e.metric)}, so there is "
            "no target.")


def ladder_too_small(e: SampleEfficiency) -> str | None:
    """What a ladder too small for a ratio does show: the mean metric per training-set size."""
    if not finite(e.target) or e.estimable:
        return None

    def curve(points: Sequence[tuple[float, float]]) -> str:
        return ", ".join(f"n={fmt_n(n)} {fmt(v)}" for n, v in points) or "not run"

    sizes = "size" if e.n_sizes == 1 else "sizes"
    seeds = "seed" if e.n_seeds == 1 else "seeds"
    return (f"The learning-curve ladder is too small to estimate a sample-efficiency ratio ({e.n_sizes} "
            f"training-set {sizes} and {e.n_seeds} {seeds} in both modes; at least {MIN_LADDER_SIZES} sizes and "
            f"{MIN_LADDER_SEEDS} seeds are needed for a ratio with a spread). {metric_name(e.metric)} by "
            f"training-set size{' (mean over seeds)' if e.n_seeds > 1 else ''}: single {curve(e.single_curve)}; "
            f"paired {curve(e.paired_curve)}.")


def efficiency_target(e: SampleEfficiency) -> str | None:
    if not _ratio_stated(e):
        return None
    name = metric_name(e.metric)
    if e.target_from_single:
        return (f"Sample efficiency target: the single model's {name} at its largest training set "
                f"(n={fmt_n(e.largest_n_single)}), {fmt(e.target)}.")
    return f"Sample efficiency target: {name} {fmt(e.target)} ({e.target_source})."


def paired_not_reached(e: SampleEfficiency) -> str | None:
    """Paired training never reached the target (or was not run): the ratio is undefined."""
    if not _ratio_stated(e) or finite(e.n_paired):
        return None
    if finite(e.largest_n_paired):
        return (f"Paired training never reaches it within the ladder (largest n={fmt_n(e.largest_n_paired)}, best "
                f"paired {metric_name(e.metric)} {fmt(e.best_paired)}), so the sample-efficiency ratio is undefined.")
    return "No paired learning curve was run, so the sample-efficiency ratio is undefined."


def _spread_text(e: SampleEfficiency) -> str:
    """The range of the per-seed ratios, and how many seeds had none."""
    low, high, undefined = e.spread()
    seeds = len(e.seed_ratios)
    text = (f"range over {seeds} seeds {low:.2f} to {high:.2f}" if finite(low)
            else f"undefined in each of the {seeds} seeds alone")
    if undefined and finite(low):
        text += f"; undefined in {undefined} of {seeds} seeds"
    return text


def _ratio_text(e: SampleEfficiency) -> str:
    bound = " (a lower bound)" if e.paired_censored and not e.single_censored else ""
    if e.ratio >= 1:
        meaning = f"single training needs {e.ratio:.2f}x as many training cases"
    else:
        meaning = f"paired training needs {1 / e.ratio:.2f}x as many training cases as single"
    return f": sample-efficiency ratio n_single/n_paired = {e.ratio:.2f}{bound} ({_spread_text(e)}), {meaning}"


def reached_and_ratio(e: SampleEfficiency) -> str | None:
    """Where paired training reaches the target, where single does, and the ratio of the two."""
    if not _ratio_stated(e) or not finite(e.n_paired):
        return None
    if e.paired_censored:
        text = (f"Paired training already reaches it at the smallest training set tried "
                f"(n={fmt_n(e.paired_first_n)}), so the true n it needs may be smaller")
    else:
        text = (f"Paired training first reaches it at n={fmt_n(e.paired_first_n)} on the ladder "
                f"(n≈{e.n_paired:.0f} by log-linear interpolation)")
    if not finite(e.n_single):
        return text + "; single training never reaches the target, so the ratio is undefined."
    text += f"; single training reaches it at n≈{e.n_single:.0f}"
    return text + (_ratio_text(e) if finite(e.ratio) else "") + "."


#: the claims about sample efficiency, in reading order
EFFICIENCY_CLAIMS: tuple[Callable[[SampleEfficiency], "str | None"], ...] = (
    no_target, ladder_too_small, efficiency_target, paired_not_reached, reached_and_ratio,
)


def efficiency_findings(value: SampleEfficiency | float | None) -> list[str]:
    """Sentences about sample efficiency; a ratio only where the ladder can carry one (see ``estimable``)."""
    if value is None:
        return []
    if not isinstance(value, SampleEfficiency):
        return [given_ratio(value)]
    return [sentence for sentence in (claim(value) for claim in EFFICIENCY_CLAIMS) if sentence]


# ------------------------------------------------------------------- all of it
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
    curve frame (analysed with :func:`~.analysis.sample_efficiency`). A paired condition
    "beats" single when its point estimate is better; that it is established
    is said only when the 95% CI of the difference excludes 0.
    """
    summary, paired_tests, prior_tests = split_prior(summary, paired_tests)
    out: list[str] = []
    if is_empty(summary):
        out.append(NO_RESULTS)
    else:
        described = subjects(summary, paired_tests)
        for subject in described:
            prefix = f"{subject.model}: " if len(described) > 1 else ""
            comparison = compare_model(subject.rows, paired_tests, metric, subject.model, alpha, subject.baseline)
            out.extend(model_findings(comparison, prefix))
    if not is_empty(prior_tests) and f"delta_{metric}" in prior_tests.columns:
        out.extend(prior_study(row, metric) for _, row in prior_tests.iterrows())
    out.extend(efficiency_findings(coerce_efficiency(sample_efficiency, metric)))
    return out
