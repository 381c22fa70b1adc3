"""The report's analysis on its own numbers: each model's comparison and the splits it relies on, no HTML."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from frames import make_results

import seeinpairs.report as report
from seeinpairs.report.analysis import Stop, compare_model, is_empty, split_failed, split_prior, subjects

REPORT = Path(report.__file__).parent


@pytest.mark.parametrize("module", ["analysis.py", "findings.py", "format.py"])
def test_analysis_and_prose_import_no_template_code(module):
    tree = ast.parse((REPORT / module).read_text())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {"jinja2", "markupsafe", "html", "tables"} & {name.split(".")[0] for name in imported}



@pytest.mark.parametrize("module", ["seeinpairs.report.analysis", "seeinpairs.report.tables",
                                    "seeinpairs.report.findings"])
def test_the_numbers_import_without_matplotlib_or_templates(module):
    """A caller of the numbers alone (the suite's tables, a notebook) should not pay for plotting or HTML."""
    probe = (f"import sys, {module}; "
             "print(sorted({'matplotlib', 'jinja2'} & {name.split('.')[0] for name in sys.modules}))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"

def test_the_best_condition_is_the_largest_gain_and_its_tests_come_with_it():
    summary, tests = make_results({("embedding", 1): 0.83, ("random", 2): 0.86, ("random", 1): 0.78})
    result = compare_model(summary, tests, "auroc", "m")
    assert result.stop is None
    assert (result.best["selector"], result.best["k"]) == ("random", 2)
    assert result.best["delta"] == pytest.approx(0.06)
    assert len(result.best_comparisons) == 1 and result.best_comparisons.iloc[0]["delta"] == pytest.approx(0.06)
    assert result.single["value"] == pytest.approx(0.80) and result.n_cases == 120
    assert sorted(result.gain.round(3)) == [-0.02, 0.03, 0.06]
    assert len(result.intervals) == 3 and result.calibration == pytest.approx((0.06, 0.0))


def test_for_a_lower_is_better_metric_the_best_condition_has_the_lowest_value():
    summary, tests = make_results({("embedding", 1): 0.83, ("random", 1): 0.78}, ece_paired=0.05)
    summary.loc[summary["selector"] == "random", "ece"] = 0.02
    result = compare_model(summary, tests, "ece", "m")
    assert not result.higher
    assert result.best["selector"] == "random"  # ECE 0.02 beats 0.05 and single's 0.10
    assert (result.gain > 0).all()


def test_without_paired_tests_the_difference_is_taken_from_the_values():
    summary, _ = make_results({("embedding", 1): 0.85})
    result = compare_model(summary, None, "auroc", "m")
    assert result.best["delta"] == pytest.approx(0.05) and result.best_comparisons.empty
    assert result.intervals.empty


@pytest.mark.parametrize("case, stop", [
    ("no metric", Stop.METRIC_MISSING), ("single failed", Stop.SINGLE_FAILED), ("no single", Stop.NO_SINGLE),
    ("single NaN", Stop.SINGLE_UNDEFINED), ("no paired", Stop.NO_PAIRED), ("paired NaN", Stop.PAIRED_UNDEFINED),
])
def test_each_reason_to_stop_is_named_and_leaves_no_best_condition(case, stop):
    summary, tests = make_results({("random", 1): 0.83}, single_auroc=float("nan") if case == "single NaN" else 0.8)
    if case == "no metric":
        summary = summary.drop(columns=["auroc"])
    elif case == "single failed":
        summary["degenerate"] = np.where(summary["k"] == 0, "one predicted class", "")
    elif case == "no single":
        summary = summary[summary["k"] > 0]
    elif case == "no paired":
        summary = summary[summary["k"] == 0]
    elif case == "paired NaN":
        summary.loc[summary["k"] > 0, "auroc"] = float("nan")
        tests["delta_auroc"] = float("nan")
    result = compare_model(summary, tests, "auroc", "m")
    assert result.stop is stop and result.best is None and result.intervals.empty and result.calibration is None


def test_failed_rows_are_set_apart_and_their_comparisons_dropped():
    summary, tests = make_results({("embedding", 1): 0.95, ("random", 1): 0.83}, seeds=(0, 1))
    summary["degenerate"] = np.where((summary["selector"] == "embedding") & (summary["seed"] == 1), "collapsed", "")
    trained, failed = split_failed(summary)
    assert len(failed) == 1 and len(trained) == len(summary) - 1
    result = compare_model(summary, tests, "auroc", "m")
    assert result.seeds_run == 2 and len(result.failed) == 1
    kept = set(zip(result.comparisons["selector"], result.comparisons["seed"]))
    assert ("embedding", 1) not in kept and ("embedding", 0) in kept and ("random", 1) in kept


def test_a_failed_single_seed_drops_that_seeds_comparisons_but_another_single_seed_keeps_the_comparison():
    summary, tests = make_results({("random", 1): 0.83}, seeds=(0, 1))
    summary["degenerate"] = np.where((summary["k"] == 0) & (summary["seed"] == 1), "one class", "")
    result = compare_model(summary, tests, "auroc", "m")
    assert result.stop is None and set(result.comparisons["seed"]) == {0}


def test_a_model_compared_with_another_models_single_run_is_one_subject():
    base, _ = make_results({}, model="zero-shot")
    tuned, tests = make_results({("embedding", 1): 0.85}, model="tuned")
    tests.insert(1, "baseline", "zero-shot")
    (subject,) = subjects(pd.concat([base, tuned[tuned["k"] > 0]]), tests)
    assert (subject.model, subject.baseline) == ("tuned", "zero-shot")
    assert set(subject.rows["model"]) == {"tuned"} and sorted(subject.rows["k"]) == [0, 1]
    assert [s.model for s in subjects(make_results({("a", 1): 0.8})[0].drop(columns=["model"]), None)] == [None]


def test_prior_study_rows_are_split_off_and_never_pooled():
    summary, tests = make_results({("random", 1): 0.83})
    prior = tests.assign(mode="prior")
    summary_out, tests_out, prior_out = split_prior(summary, pd.concat([tests.assign(mode="paired"), prior]))
    assert len(tests_out) == 1 and len(prior_out) == 1 and (prior_out["mode"] == "prior").all()
    assert len(summary_out) == len(summary)
    assert split_prior(None, None) == (None, None, None)


def test_is_empty():
    assert is_empty(None) and is_empty(pd.DataFrame()) and is_empty("table")
    assert not is_empty(pd.DataFrame({"a": [1]}))


def test_an_undefined_condition_is_counted_not_compared():
    summary, tests = make_results({("embedding", 1): 0.83, ("random", 1): float("nan")})
    tests.loc[tests["selector"] == "random", "delta_auroc"] = float("nan")
    result = compare_model(summary, tests, "auroc", "m")
    assert result.undefined == 1 and len(result.valid) == 1 and not math.isnan(result.best["delta"])
