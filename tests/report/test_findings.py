"""Each claim of the findings on its own: a case where its sentence appears and one where it does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from frames import curves_frame, make_results

from seeinpairs.report import findings as claims
from seeinpairs.report.analysis import SampleEfficiency, compare_model, sample_efficiency


def comparison(paired: dict, metric: str = "auroc", tests: bool = True, edit=None, **options):
    """compare_model on frames from :func:`make_results`; ``edit(summary, tests)`` changes them first."""
    summary, paired_tests = make_results(paired, **options)
    if edit is not None:
        summary, paired_tests = edit(summary, paired_tests)
    return compare_model(summary, paired_tests if tests else None, metric, options.get("model", "m"))


def labelled(summary: pd.DataFrame, mask, reason: str) -> pd.DataFrame:
    return summary.assign(degenerate=np.where(mask(summary), reason, ""))


NORMAL = {("embedding", 1): 0.83, ("random", 1): 0.78}


# ------------------------------------------------------------------- why there is no comparison
def test_metric_not_computed():
    missing = comparison(NORMAL, edit=lambda s, t: (s.drop(columns=["auroc"]), t))
    assert claims.metric_not_computed(missing) == "AUROC was not computed, so single and paired cannot be compared on it."
    assert claims.metric_not_computed(comparison(NORMAL)) is None
    assert claims.model_findings(missing) == [claims.metric_not_computed(missing)]  # and nothing else


def test_failed_training_names_each_degenerate_run_with_its_label():
    def edit(s, t):
        return labelled(s, lambda f: (f["selector"] == "embedding") & (f["seed"] == 1), "near-constant probabilities"), t

    sentence = claims.failed_training(comparison(NORMAL, seeds=(0, 1), edit=edit))
    assert sentence.startswith("Failed training (the model did not learn")
    assert sentence.endswith(": embedding k=1 seed 1: near-constant probabilities.")
    single = comparison(NORMAL, edit=lambda s, t: (labelled(s, lambda f: f["k"] == 0, "one predicted class"), t))
    assert claims.failed_training(single).endswith(": single-image: one predicted class.")  # one seed: no seed named
    assert claims.failed_training(comparison(NORMAL)) is None
    assert claims.failed_training(comparison(NORMAL, edit=lambda s, t: (s.assign(degenerate=""), t))) is None


def test_single_baseline_failed():
    def failed_single(seeds):
        return lambda s, t: (labelled(s, lambda f: (f["k"] == 0) & (f["seed"] == seeds[-1]), "one class"), t)

    stopped = comparison(NORMAL, edit=failed_single((0,)))
    assert claims.single_baseline_failed(stopped) == ("The single-image baseline failed training, so no paired "
                                                      "condition is compared with it.")
    assert [claims.failed_training(stopped), claims.single_baseline_failed(stopped)] == claims.model_findings(stopped)
    # another seed's single-image run trained: the comparison goes on
    assert claims.single_baseline_failed(comparison(NORMAL, seeds=(0, 1), edit=failed_single((0, 1)))) is None


def test_no_single_baseline():
    no_single = comparison(NORMAL, edit=lambda s, t: (s[s["k"] > 0], t))
    assert claims.no_single_baseline(no_single).startswith("No single-image (k=0) baseline was run")
    assert claims.no_single_baseline(comparison(NORMAL)) is None


def test_single_undefined():
    undefined = comparison(NORMAL, single_auroc=float("nan"))
    assert claims.single_undefined(undefined).startswith("The single-image AUROC is undefined (NaN")
    assert claims.single_baseline(undefined) is None
    assert claims.single_undefined(comparison(NORMAL)) is None


# ------------------------------------------------------------------- the comparison
def test_single_baseline():
    assert claims.single_baseline(comparison(NORMAL)) == ("Single-image baseline (k=0): AUROC 0.800 [0.75, 0.85] "
                                                          "on 120 cases.")
    assert claims.single_baseline(comparison(NORMAL, seeds=(0, 1, 2))).endswith("on 120 cases (mean over 3 seeds).")
    other = compare_model(make_results(NORMAL)[0], None, "auroc", "tuned", baseline="zero-shot")
    assert claims.single_baseline(other).startswith("Single-image baseline (k=0, model zero-shot): AUROC")
    assert claims.single_baseline(comparison(NORMAL, edit=lambda s, t: (s[s["k"] > 0], t))) is None


def test_no_paired_condition():
    run = comparison(NORMAL, edit=lambda s, t: (s[s["k"] == 0], t))
    assert claims.no_paired_condition(run) == "No paired condition (k>0) was run."
    failed = comparison(NORMAL, edit=lambda s, t: (labelled(s, lambda f: f["k"] > 0, "one class"), t))
    assert claims.no_paired_condition(failed) == "No paired condition (k>0) trained."
    assert claims.no_paired_condition(comparison(NORMAL)) is None


def test_paired_undefined():
    def nan(s, t):
        s.loc[s["k"] > 0, "auroc"] = float("nan")
        return s, t.assign(delta_auroc=float("nan"))

    assert claims.paired_undefined(comparison(NORMAL, edit=nan)) == ("AUROC is undefined (NaN) in every paired "
                                                                     "condition; no comparison is possible.")
    assert claims.best_condition(comparison(NORMAL, edit=nan)) is None
    assert claims.paired_undefined(comparison(NORMAL)) is None


def test_best_condition_with_one_seed_several_seeds_and_no_test():
    one = claims.best_condition(comparison(NORMAL, p=0.003, delta_half_width=0.02))
    assert one == ("Best paired condition: embedding k=1, AUROC 0.830 [0.78, 0.88] vs single 0.800 [0.75, 0.85]; "
                   "the difference is +0.030 [0.010, 0.050], its 95% CI excludes 0 (McNemar on per-case correctness: "
                   "p=0.003, significant at 0.05).")
    several = claims.best_condition(comparison(NORMAL, seeds=(0, 1), delta_half_width=0.01))
    assert several.endswith("the difference is +0.030 (mean over 2 seeds); its 95% CI excludes 0 in 2 of 2 seeds and "
                            "McNemar p<0.05 in 0 of 2.")
    assert claims.best_condition(comparison(NORMAL, tests=False)).endswith("+0.030 (no paired CI available).")
    not_significant = claims.best_condition(comparison(NORMAL, delta_half_width=0.05))
    assert "+0.030 [-0.020, 0.080], its 95% CI includes 0, not significant (McNemar" in not_significant
    assert claims.best_condition(comparison({})) is None


def test_beat_single_or_not():
    assert claims.beat_single(comparison(NORMAL)) == ("Paired beat single on the point estimate of AUROC in 1 of 2 "
                                                      "conditions (embedding k=1).")
    worse = claims.beat_single(comparison({("embedding", 1): 0.78, ("random", 1): 0.80}))
    assert worse == ("Paired did not beat single in any condition: none of the 2 paired conditions had a higher AUROC "
                     "than single-image (0.800) (1 tied).")
    assert claims.beat_single(comparison({})) is None


def test_undefined_conditions():
    def one_nan(s, t):
        t.loc[t["selector"] == "random", "delta_auroc"] = float("nan")
        return s, t

    with_nan = comparison({("embedding", 1): 0.83, ("random", 1): float("nan")}, edit=one_nan)
    assert claims.undefined_conditions(with_nan) == ("AUROC was undefined (NaN) in 1 paired condition(s), "
                                                     "left out above.")
    assert claims.undefined_conditions(comparison(NORMAL)) is None


def test_favourable_intervals():
    better = comparison({("embedding", 1): 0.88, ("random", 1): 0.81}, delta_half_width=0.03)
    assert claims.favourable_intervals(better) == ("The 95% CI of the AUROC difference excluded 0 in paired's favour "
                                                   "in 1 of 2 comparisons: embedding k=1 (+0.080 [0.050, 0.110]).")
    none = claims.favourable_intervals(comparison({("embedding", 1): 0.81}))
    assert none == ("In none of the 1 paired-vs-single comparison did the 95% CI of the AUROC difference exclude 0 in "
                    "paired's favour, so no improvement is established.")
    assert claims.favourable_intervals(comparison(NORMAL, tests=False)) is None  # no interval, no claim


def test_unfavourable_intervals():
    worse = comparison({("embedding", 1): 0.83, ("random", 1): 0.70}, delta_half_width=0.03)
    assert claims.unfavourable_intervals(worse) == ("Paired was worse than single with the 95% CI excluding 0 in 1 "
                                                    "of 2 comparisons: random k=1 (-0.100 [-0.130, -0.070]).")
    assert claims.unfavourable_intervals(comparison({("embedding", 1): 0.81})) is None


def test_mcnemar_count():
    assert claims.mcnemar_count(comparison(NORMAL, p=0.01)) == ("McNemar (per-case correctness) gave p<0.05 in 2 of 2 "
                                                                "comparisons.")
    assert claims.mcnemar_count(comparison(NORMAL, p=float("nan"))) is None


def test_multiplicity():
    assert claims.multiplicity(comparison(NORMAL)) == ("These are 2 comparisons against the same baseline without "
                                                       "correction for multiple testing; with no true effect about "
                                                       "0.1 would exclude 0 by chance.")
    assert claims.multiplicity(comparison({("embedding", 1): 0.83})) is None


def test_calibration_vs_discrimination():
    moved = claims.calibration_vs_discrimination(comparison(NORMAL, ece_paired=0.15))
    assert moved == ("Calibration vs discrimination for embedding k=1: AUROC +0.030 and ECE +0.050 vs single (lower "
                     "ECE is better): discrimination improved while calibration worsened (point estimates; no paired "
                     "interval for ECE).")
    both = claims.calibration_vs_discrimination(comparison(NORMAL, ece_paired=0.05))
    assert "discrimination improved and calibration improved" in both
    assert claims.calibration_vs_discrimination(comparison(NORMAL, edit=lambda s, t: (s.drop(columns=["ece"]), t))) \
        is None


def test_a_degenerate_model_is_named_once_and_in_no_other_claim():
    def collapse(s, t):
        s = labelled(s, lambda f: f["selector"] == "embedding", "near-constant probabilities")
        s.loc[s["selector"] == "embedding", "auroc"] = 0.99  # a lucky value must not make it the best condition
        return s, t

    sentences = claims.model_findings(comparison(NORMAL, edit=collapse), prefix="m: ")
    assert sentences[0].startswith("m: Failed training") and "embedding k=1: near-constant" in sentences[0]
    assert all(s.startswith("m: ") for s in sentences)
    assert not any("embedding" in s for s in sentences[1:])
    assert any(s.startswith("m: Best paired condition: random k=1") for s in sentences)


# ------------------------------------------------------------------- prior study
def test_prior_study_comparisons_are_their_own_sentences():
    summary, tests = make_results({("random", 1): 0.83})
    prior = tests.assign(mode="prior")
    text = claims.findings_from(summary, pd.concat([tests.assign(mode="paired"), prior]))
    assert text[-1].startswith("Comparison with the patient's own earlier healthy study (prior_study, k=1;")
    assert not any("prior_study" in s for s in claims.findings_from(summary, tests))


# ------------------------------------------------------------------- sample efficiency
def efficiency(single, paired, seeds=(0, 1), ladder=(16, 32, 64, 128), **options) -> SampleEfficiency:
    return sample_efficiency(curves_frame(single, paired, ladder=ladder, seeds=seeds), **options)


REACHED = ([0.6, 0.7, 0.8, 0.9], [0.7, 0.8, 0.9, 0.95])


def test_given_ratio():
    assert claims.efficiency_findings(2.5) == [claims.given_ratio(2.5)]
    assert claims.given_ratio(2.5).endswith("nor its spread can be shown): 2.50.")
    assert claims.given_ratio(float("nan")).startswith("Sample-efficiency ratio: undefined")
    assert claims.efficiency_findings(None) == []


def test_no_target():
    no_single = sample_efficiency(curves_frame(*REACHED, seeds=(0, 1)).query("mode == 'paired'"))
    assert claims.no_target(no_single) == ("Sample efficiency: no single-mode learning curve with a finite AUROC, so "
                                           "there is no target.")
    assert claims.efficiency_findings(no_single) == [claims.no_target(no_single)]
    assert claims.no_target(efficiency(*REACHED)) is None


def test_ladder_too_small():
    small = efficiency([0.7, 0.76], [0.69, 0.81], ladder=(32, 128), seeds=(0,))
    assert claims.ladder_too_small(small).startswith("The learning-curve ladder is too small to estimate a "
                                                     "sample-efficiency ratio (2 training-set sizes and 1 seed")
    assert claims.efficiency_target(small) is None and claims.reached_and_ratio(small) is None
    assert claims.ladder_too_small(efficiency(*REACHED)) is None


def test_efficiency_target():
    assert claims.efficiency_target(efficiency(*REACHED)) == ("Sample efficiency target: the single model's AUROC at "
                                                              "its largest training set (n=128), 0.900.")
    assert claims.efficiency_target(efficiency(*REACHED, target=0.85)) == ("Sample efficiency target: AUROC 0.850 "
                                                                           "(given target).")


def test_paired_not_reached():
    never = efficiency([0.6, 0.7, 0.8, 0.9], [0.5, 0.6, 0.7, 0.85])
    assert claims.paired_not_reached(never) == ("Paired training never reaches it within the ladder (largest n=128, "
                                                "best paired AUROC 0.850), so the sample-efficiency ratio is "
                                                "undefined.")
    assert claims.reached_and_ratio(never) is None
    assert claims.paired_not_reached(efficiency(*REACHED)) is None


def test_reached_and_ratio():
    reached = claims.reached_and_ratio(efficiency(*REACHED))
    assert reached == ("Paired training first reaches it at n=64 on the ladder (n≈64 by log-linear interpolation); "
                       "single training reaches it at n≈128: sample-efficiency ratio n_single/n_paired = 2.00 (range "
                       "over 2 seeds 2.00 to 2.00), single training needs 2.00x as many training cases.")
    censored = claims.reached_and_ratio(efficiency([0.6, 0.7, 0.8, 0.9], [0.95, 0.95, 0.96, 0.97]))
    assert "already reaches it at the smallest training set tried (n=16)" in censored and "(a lower bound)" in censored
    single_never = claims.reached_and_ratio(efficiency(*REACHED, target=0.92))
    assert single_never.endswith("; single training never reaches the target, so the ratio is undefined.")
    assert claims.reached_and_ratio(efficiency([0.6, 0.7, 0.8, 0.9], [0.5, 0.6, 0.7, 0.85])) is None


@pytest.mark.parametrize("claim", claims.MODEL_CLAIMS)
def test_without_a_single_baseline_only_that_claim_speaks(claim):
    summary, tests = make_results(NORMAL)
    no_single = compare_model(summary[summary["k"] > 0], tests, "auroc")
    assert (claim(no_single) is not None) == (claim is claims.no_single_baseline)


def test_resolution_differs():
    def resolutions(*values):
        return lambda s, t: (s.assign(query_resolution=list(values)), t)

    differs = claims.resolution_differs(comparison(NORMAL, edit=resolutions("anyres", "base", "")))
    assert differs.startswith("the conditions saw the query at different resolutions (single k=0: anyres; paired "
                              "k=1: base; paired k=1: not recorded)")
    assert claims.resolution_differs(comparison(NORMAL, edit=resolutions("base", "base", ""))) is None
    assert claims.resolution_differs(comparison(NORMAL)) is None
