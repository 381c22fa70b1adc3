"""The HTML report: sections, empty inputs, escaping, findings as measured, sample efficiency."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from frames import curves_frame, make_results
from PIL import Image

from seeinpairs.cases import Case, CaseTable
from seeinpairs.report import (
    ReportInputs,
    aggregate_curves,
    aggregate_seeds,
    examples_from_records,
    findings_from,
    fmt_ci,
    plot_example,
    sample_efficiency,
    sample_efficiency_ratio,
    write_report,
)

SECTIONS = ("Findings", "Metrics", "Paired vs single", "Metrics by selector and k", "Sample efficiency", "Examples",
            "What this can and cannot show")
IMG = '<img src="data:image/png;base64,'


def write_png(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((48, 40)) * 255).astype(np.uint8)).save(path)
    return path


# ------------------------------------------------------------------- full report
def test_report_renders_all_sections_self_contained(tmp_path):
    summary, tests = make_results({("embedding", 1): 0.83, ("embedding", 2): 0.812, ("random", 1): 0.79,
                                   ("random", 2): float("nan")})
    summary.loc[summary["selector"] == "random", "ece_lo"] = float("nan")  # a missing CI
    tests.loc[tests["selector"] == "random", "mcnemar_p"] = float("nan")
    curves = curves_frame([0.6, 0.7, 0.8, 0.85], [0.65, 0.78, 0.86, 0.88])
    curves["auroc_lo"], curves["auroc_hi"] = curves["auroc"] - 0.04, curves["auroc"] + 0.04
    curves["accuracy"] = curves["auroc"] - 0.1
    images = tmp_path / "images"
    images.mkdir()
    query, ref1, ref2 = (write_png(images / f"{name}.png", i) for i, name in enumerate(("q", "r1", "r2")))
    examples = [
        {"query": query, "references": [ref1, ref2], "gold": "abnormal", "predicted": "normal",
         "probabilities": [0.6, 0.4], "options": ["normal", "abnormal"], "title": "case q"},
        {"query": images / "missing.png", "references": [], "gold": "normal", "predicted": "normal"},
    ]
    out = write_report(tmp_path / "out" / "report.html", ReportInputs(
        title="Pairs on synthetic", summary=summary, paired_tests=tests, learning_curves=curves, examples=examples,
        metadata={"data set": "synthetic", "model": "m", "date": "2025-01-01", "config": {"seeds": [0], "k": [1, 2]}}))
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["report.html"]
    html = out.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in html
    assert html.count(IMG) == 4  # metric by k, learning curves, two examples
    assert not re.search(r'src="(?!data:)', html)  # nothing refers to another file
    assert "0.830 [0.78, 0.88]" in html  # metric with CI, as in the tables
    assert "NA" in html  # NaN shown, not crashed
    assert "&#34;seeds&#34;" in html or "&quot;seeds&quot;" in html  # config rendered as JSON
    # filled sections do not say "not run"
    for section in ("metrics", "paired", "by-k", "sample-efficiency", "examples"):
        body = html.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert "Not run" not in body, section
    assert "sample-efficiency ratio" in html


def test_empty_inputs_render_not_run(tmp_path):
    out = write_report(tmp_path / "r.html", ReportInputs(title="empty", summary=pd.DataFrame(), paired_tests=None))
    html = out.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in html
    for section in ("metrics", "paired", "by-k", "sample-efficiency", "examples"):
        body = html.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert "Not run" in body, section
    assert "not run" in html.split('<section id="findings">')[1].split("</section>")[0]
    assert IMG not in html
    assert "What this can show" in html  # default limitations text


def test_summary_without_paired_conditions(tmp_path):
    summary, _ = make_results({})
    out = write_report(tmp_path / "r.html", ReportInputs(title="baseline only", summary=summary,
                                                         paired_tests=pd.DataFrame()))
    html = out.read_text(encoding="utf-8")
    assert "No paired condition (k&gt;0) was run." in html
    assert html.count(IMG) == 1


def test_html_escapes_malicious_names(tmp_path):
    evil = "<script>alert(1)</script>"
    summary, tests = make_results({("embedding", 1): 0.82}, model=evil)
    out = write_report(tmp_path / "r.html", ReportInputs(
        title=evil, summary=summary, paired_tests=tests, findings=[f"model {evil} did things"],
        metadata={"model": evil, "config": {"name": evil}}, limitations=evil))
    html = out.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


# ------------------------------------------------------------------- findings
def test_findings_say_paired_did_not_beat_single():
    summary, tests = make_results({("embedding", 1): 0.78, ("embedding", 2): 0.75, ("random", 1): 0.70},
                                  delta_half_width=0.03)
    text = " ".join(findings_from(summary, tests))
    assert "Paired did not beat single in any condition" in text
    assert "Best paired condition: embedding k=1, AUROC 0.780 [0.73, 0.83] vs single 0.800 [0.75, 0.85]" in text
    assert "-0.020 [-0.050, 0.010]" in text
    assert "no improvement is established" in text
    assert "Paired was worse than single with the 95% CI excluding 0 in 2 of 3 comparisons" in text
    assert "paired's favour in" not in text
    assert "beat single on the point estimate" not in text


def test_findings_say_paired_beat_single_when_it_did():
    summary, tests = make_results({("embedding", 2): 0.88, ("random", 1): 0.81}, delta_half_width=0.03, p=0.003,
                                  ece_paired=0.15)
    findings = findings_from(summary, tests)
    text = " ".join(findings)
    assert "did not beat" not in text
    assert "Paired beat single on the point estimate of AUROC in 2 of 2 conditions" in text
    assert "Best paired condition: embedding k=2" in text
    assert "+0.080 [0.050, 0.110], its 95% CI excludes 0 (McNemar on per-case correctness: p=0.003, significant" \
        in text
    assert "excluded 0 in paired's favour in 1 of 2 comparisons: embedding k=2" in text
    assert "discrimination improved while calibration worsened" in text


def test_findings_point_gain_without_significance():
    summary, tests = make_results({("embedding", 2): 0.83}, delta_half_width=0.05, p=0.41)
    text = " ".join(findings_from(summary, tests))
    assert "Paired beat single on the point estimate of AUROC in 1 of 1 conditions" in text
    assert "+0.030 [-0.020, 0.080], its 95% CI includes 0, not significant (McNemar on per-case correctness: " \
           "p=0.41, not significant at 0.05)" in text
    assert "no improvement is established" in text


def test_findings_multiple_seeds_and_models():
    a_summary, a_tests = make_results({("embedding", 1): 0.85}, seeds=(0, 1, 2), model="A")
    b_summary, b_tests = make_results({("embedding", 1): 0.70}, seeds=(0, 1, 2), model="B")
    findings = findings_from(pd.concat([a_summary, b_summary]), pd.concat([a_tests, b_tests]))
    text = " ".join(findings)
    assert "A: Paired beat single" in text
    assert "B: Paired did not beat single in any condition" in text
    assert "mean over 3 seeds" in text
    assert "3 comparisons against the same baseline without correction" in text


def test_findings_handle_nan_and_empty():
    summary, tests = make_results({("embedding", 1): 0.82}, single_auroc=float("nan"))
    assert any("undefined" in f for f in findings_from(summary, tests))
    summary, tests = make_results({("embedding", 1): float("nan")})
    tests["delta_auroc"] = float("nan")
    assert any("undefined (NaN) in every paired condition" in f for f in findings_from(summary, tests))
    assert findings_from(None, None) == ["No evaluation results: the single-vs-paired comparison was not run."]
    # no paired tests at all: the difference comes from the summary, without a CI
    summary, _ = make_results({("embedding", 1): 0.85})
    text = " ".join(findings_from(summary, None))
    assert "+0.050 (no paired CI available)" in text


# ------------------------------------------------------------------- sample efficiency
def test_ratio_on_constructed_curves():
    single = [0.6, 0.7, 0.8, 0.9]  # target = 0.9, reached at n=128
    assert sample_efficiency_ratio(curves_frame(single, [0.7, 0.8, 0.9, 0.95])) == pytest.approx(2.0)
    # crossing half way between 64 (0.85) and 128 (0.95) in log2(n): n = 2**6.5
    ratio = sample_efficiency_ratio(curves_frame(single, [0.65, 0.75, 0.85, 0.95]))
    assert ratio == pytest.approx(128 / 2 ** 6.5)
    assert math.isnan(sample_efficiency_ratio(curves_frame(single, [0.5, 0.6, 0.7, 0.85])))
    censored = sample_efficiency(curves_frame(single, [0.95, 0.95, 0.96, 0.97]))
    assert censored.ratio == pytest.approx(8.0) and censored.paired_censored
    # an explicit target
    assert sample_efficiency_ratio(curves_frame(single, [0.7, 0.8, 0.9, 0.95]), target=0.8) == pytest.approx(2.0)
    # lower is better (ECE): reaching means going at or below the target
    ece = curves_frame([0.3, 0.2, 0.1, 0.05], [0.2, 0.1, 0.05, 0.04], metric="ece")
    assert sample_efficiency_ratio(ece, metric="ece") == pytest.approx(2.0)


def test_ratio_averages_seeds_and_ignores_nan():
    rows = curves_frame([0.6, 0.7, 0.8, 0.9], [0.7, 0.8, 0.9, 0.95], seeds=(0,))
    noisy = curves_frame([0.6, 0.7, 0.8, 0.9], [0.7, 0.8, 0.9, 0.95], seeds=(1, 2))
    noisy.loc[noisy["seed"] == 1, "auroc"] += 0.02
    noisy.loc[noisy["seed"] == 2, "auroc"] -= 0.02
    nan_row = pd.DataFrame([{"mode": "paired", "n_train": 64, "seed": 3, "auroc": float("nan")}])
    assert sample_efficiency_ratio(pd.concat([rows, noisy, nan_row])) == pytest.approx(2.0)


def test_findings_on_sample_efficiency():
    seeds = (0, 1, 2)
    reached = curves_frame([0.6, 0.7, 0.8, 0.9], [0.7, 0.8, 0.9, 0.95], seeds=seeds)
    reached.loc[reached["seed"] == 1, "auroc"] += np.where(reached.loc[reached["seed"] == 1, "mode"] == "paired",
                                                           0.02, 0.0)
    efficiency = sample_efficiency(reached)
    assert efficiency.estimable and efficiency.n_sizes == 4 and efficiency.n_seeds == 3
    low, high, undefined = efficiency.spread()
    assert low < efficiency.ratio < high and undefined == 0  # seed 1's paired curve is better: a larger ratio
    text = " ".join(findings_from(None, None, efficiency))
    assert "single model's AUROC at its largest training set (n=128), 0.900" in text
    assert "Paired training first reaches it at n=64" in text
    assert f"ratio n_single/n_paired = {efficiency.ratio:.2f} (range over 3 seeds {low:.2f} to {high:.2f})" in text
    never = curves_frame([0.6, 0.7, 0.8, 0.9], [0.5, 0.6, 0.7, 0.85], seeds=(0, 1))
    text = " ".join(findings_from(None, None, never))
    assert "Paired training never reaches it" in text and "ratio is undefined" in text


def test_a_two_point_one_seed_ladder_states_no_ratio_only_its_values():
    small = curves_frame([0.703, 0.766], [0.692, 0.816], ladder=(32, 128))
    efficiency = sample_efficiency(small)
    assert efficiency.ratio == pytest.approx(128 / efficiency.n_paired)  # the number exists...
    assert not efficiency.estimable
    text = " ".join(findings_from(None, None, efficiency))
    assert "as many training cases" not in text and "n_single/n_paired" not in text  # ...but is not stated
    assert "too small to estimate a sample-efficiency ratio (2 training-set sizes and 1 seed" in text
    assert "single n=32 0.703, n=128 0.766; paired n=32 0.692, n=128 0.816" in text
    # three sizes but one seed: still no ratio; two seeds on two sizes: neither
    for frame in (curves_frame([0.6, 0.7, 0.8], [0.7, 0.8, 0.9], ladder=(16, 32, 64)),
                  curves_frame([0.6, 0.7], [0.7, 0.8], ladder=(16, 32), seeds=(0, 1))):
        assert "too small to estimate" in " ".join(findings_from(None, None, sample_efficiency(frame)))
    # the dict form (as stored in JSON) keeps the rule
    stored = json.loads(json.dumps(efficiency.as_dict()))
    assert "too small to estimate" in " ".join(findings_from(None, None, stored))


# ------------------------------------------------------------------- aggregation and plots
def test_aggregation_bands():
    summary, _ = make_results({("embedding", 1): 0.82}, seeds=(0, 1))
    summary.loc[summary["seed"] == 1, "auroc"] += 0.02
    summary.loc[summary["seed"] == 1, "auroc_hi"] += 0.02
    agg = aggregate_seeds(summary, "auroc").set_index(["selector", "k"])
    assert agg.loc[("embedding", 1), "value"] == pytest.approx(0.83)
    assert agg.loc[("embedding", 1), "lo"] == pytest.approx(0.77)  # envelope of the per-seed CIs
    assert agg.loc[("embedding", 1), "hi"] == pytest.approx(0.89)
    one = curves_frame([0.6, 0.7], [0.65, 0.75], ladder=(8, 16))
    one["auroc_lo"], one["auroc_hi"] = one["auroc"] - 0.1, one["auroc"] + 0.1
    assert set(aggregate_curves(one, "auroc")["band"]) == {"bootstrap"}
    several = curves_frame([0.6, 0.7], [0.65, 0.75], ladder=(8, 16), seeds=(0, 1))
    assert set(aggregate_curves(several, "auroc")["band"]) == {"seeds"}
    assert fmt_ci(0.8123, 0.751, 0.874) == "0.812 [0.75, 0.87]"
    assert fmt_ci(float("nan"), 0.1, 0.2) == "NA"


def test_plot_example_writes_png(tmp_path):
    png = plot_example(np.zeros((20, 20)), [Image.new("RGB", (30, 20))], title="t", gold="a", predicted="a",
                       probabilities={"a": 0.9, "b": 0.1}, path=tmp_path / "ex.png")
    assert png.startswith(b"\x89PNG") and (tmp_path / "ex.png").read_bytes() == png


def test_examples_from_records(tmp_path):
    cases = CaseTable([Case(name, (str(write_png(tmp_path / f"{name}.png", i)),), label="normal")
                       for i, name in enumerate(("q1", "q2", "r1"))])
    records = [
        {"case_id": "q1", "reference_ids": ["r1"], "probabilities": [0.2, 0.8], "options": ["normal", "abnormal"],
         "predicted": "abnormal", "gold": "normal"},
        {"case_id": "q2", "reference_ids": ["r1"], "probabilities": [0.9, 0.1], "options": ["normal", "abnormal"],
         "predicted": "normal", "gold": "normal"},
        {"case_id": "unknown", "reference_ids": [], "probabilities": [0.5, 0.5], "predicted": "normal",
         "gold": "abnormal"},
    ]
    specs = examples_from_records(records, cases, n=4, title="embedding k=1")
    assert [s["title"] for s in specs] == ["embedding k=1: case q1", "embedding k=1: case q2"]
    assert specs[0]["references"] == [str(tmp_path / "r1.png")]
    html = write_report(tmp_path / "r.html", ReportInputs(title="x", examples=specs)).read_text(encoding="utf-8")
    assert html.count(IMG) == 2 and "normal 0.20, abnormal 0.80" in html


def test_findings_use_another_models_baseline_when_tests_name_one():
    base, _ = make_results({}, model="zero-shot", single_auroc=0.70)
    tuned, tests = make_results({("embedding", 1): 0.80}, single_auroc=0.70, model="paired-tuned")
    tuned = tuned[tuned["k"] > 0]
    tests.insert(1, "baseline", "zero-shot")
    findings = findings_from(pd.concat([base, tuned]), tests)
    text = " ".join(findings)
    assert "Single-image baseline (k=0, model zero-shot): AUROC 0.700" in text
    assert "Paired beat single on the point estimate of AUROC in 1 of 1 conditions" in text
    assert not any(f.startswith("zero-shot") for f in findings)  # the baseline gets no block of its own


def test_extra_sections_follow_the_examples_and_keep_their_own_escaping(tmp_path):
    from seeinpairs.report import ReportSection, render_report

    body = "<p>map of <b>query</b></p>"
    html = render_report(ReportInputs(title="t", sections=[ReportSection("attribution", "Attribution <maps>", body)]))
    assert '<section id="attribution">' in html
    assert "<h2>Attribution &lt;maps&gt;</h2>" in html  # the title is data, escaped
    assert body in html  # the body was rendered (and escaped) by its own template
    assert html.index('id="examples"') < html.index('id="attribution"') < html.index('id="limits"')


def test_a_collapsed_paired_model_is_labelled_failed_and_never_a_finding(tmp_path):
    # the BreastMNIST case: the paired model answers the class prior for every case, so its ECE is
    # near 0 and it "wins" on calibration; it must be named as failed and left out of every claim
    summary, tests = make_results({("embedding", 1): 0.52, ("random", 1): 0.83}, ece_single=0.10, ece_paired=0.10,
                                  p=0.003, delta_half_width=0.02)
    collapsed = (summary["selector"] == "embedding").to_numpy()
    summary["degenerate"] = np.where(collapsed, "near-constant probabilities (largest sd over cases 0.0002 < 0.005)", "")
    summary.loc[collapsed, "ece"] = 0.001
    summary.loc[collapsed, "auroc"] = 0.95  # even a lucky AUROC must not make it the best condition
    findings = findings_from(summary, tests)
    text = " ".join(findings)
    assert findings[0].startswith("Failed training") and "embedding k=1: near-constant probabilities" in findings[0]
    assert "Best paired condition: random k=1" in text
    assert not any("embedding" in sentence for sentence in findings[1:])
    assert "in 1 of 1 comparison" in text  # the failed condition's comparison is left out
    report = write_report(tmp_path / "r.html", ReportInputs(title="t", summary=summary, paired_tests=tests))
    html = report.read_text()
    assert "FAILED: near-constant probabilities" in html and ">training<" in html


def test_a_failed_single_baseline_stops_every_comparison():
    summary, tests = make_results({("random", 1): 0.83})
    summary["degenerate"] = np.where(summary["k"] == 0, "one predicted class ('normal') for all 120 cases", "")
    text = " ".join(findings_from(summary, tests))
    assert "single-image: one predicted class" in text
    assert "The single-image baseline failed training" in text and "Best paired" not in text


# ------------------------------------------------------------------- metric by k: baseline and legend
def test_every_paired_panel_draws_the_single_baseline_and_names_each_selector():
    from study_results import SELECTORS, study_results

    from seeinpairs.report import baselines_from_tests, metric_by_k_figure

    summary, tests = study_results()
    single = summary[summary["k"] == 0].iloc[0]
    fig = metric_by_k_figure(summary, baselines=baselines_from_tests(tests))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["AUROC", "accuracy"]  # one row: the paired model against single
    for ax, metric in zip(axes, ("auroc", "accuracy")):
        flat = [line for line in ax.get_lines() if len(set(line.get_ydata())) == 1 and line.get_linestyle() == "--"]
        assert len(flat) == 1 and flat[0].get_ydata()[0] == pytest.approx(single[metric])
        assert flat[0].get_label() == "single-image (k=0, single-trained)"
        band = [p for p in ax.patches if p.get_label() == "single-image 95% CI"]
        assert len(band) == 1
        assert band[0].get_y() == pytest.approx(single[f"{metric}_lo"])
        assert band[0].get_y() + band[0].get_height() == pytest.approx(single[f"{metric}_hi"])
    legend = axes[-1].get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert set(SELECTORS) <= set(texts) and "single-image (k=0, single-trained)" in texts


def test_a_model_with_its_own_single_run_is_drawn_against_it():
    from seeinpairs.report import metric_by_k_figure

    summary, _ = make_results({("embedding", 1): 0.83, ("random", 2): 0.78}, model="m")
    fig = metric_by_k_figure(summary, metrics=("auroc",))
    (ax,) = fig.axes
    flat = [line for line in ax.get_lines() if line.get_label() == "single-image (k=0)"]
    assert len(flat) == 1 and flat[0].get_ydata()[0] == pytest.approx(0.80)
    assert {"embedding", "random"} <= {t.get_text() for t in ax.get_legend().get_texts()}


def test_a_published_anchor_is_a_sentence_under_the_metrics_not_json_in_the_header(tmp_path):
    summary, tests = make_results({("embedding", 1): 0.83})
    anchor = {"source": "MedMNIST v2, ResNet-18 (28)", "metrics": {"auroc": 0.944, "accuracy": 0.854},
              "note": "official imbalanced split; ours is a balanced subset"}
    html = write_report(tmp_path / "r.html", ReportInputs(title="t", summary=summary, paired_tests=tests, anchor=anchor,
                                                          metadata={"study": "s"})).read_text(encoding="utf-8")
    metrics = html.split('<section id="metrics">')[1].split("</section>")[0]
    assert ("Published anchor (MedMNIST v2, ResNet-18 (28)): AUROC 0.944, accuracy 0.854 — official imbalanced "
            "split; ours is a balanced subset") in metrics
    header = html.split('<header id="header">')[1].split("</header>")[0]
    assert "0.944" not in header and "anchor" not in header.lower()
