"""Bootstrap intervals, McNemar and paired deltas, and table writing."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from seeinpairs.errors import SeeInPairsError
from seeinpairs.evaluation import stats
from seeinpairs.evaluation.metrics import METRICS, compute_metrics
from seeinpairs.evaluation.stats import (
    bootstrap_ci,
    mcnemar,
    paired_bootstrap_delta,
    summarise,
    to_markdown,
    write_tables,
)

CLASSES = ["normal", "tumor"]


def make_records(n: int = 60, seed: int = 0, skill: float = 1.5) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = int(rng.integers(2))
        p_t = 1 / (1 + np.exp(-(skill * (2 * g - 1) + rng.normal())))
        probs = [1 - p_t, p_t]
        out.append(
            {
                "case_id": f"c{i}",
                "gold": CLASSES[g],
                "options": CLASSES,
                "probabilities": probs,
                "predicted": CLASSES[int(np.argmax(probs))],
            }
        )
    return out


def correctness_records(flags: list[bool]) -> list[dict]:
    """Records whose correctness is exactly ``flags`` (gold always 'tumor')."""
    return [
        {
            "case_id": f"c{i}",
            "gold": "tumor",
            "options": CLASSES,
            "probabilities": [0.2, 0.8] if ok else [0.8, 0.2],
            "predicted": "tumor" if ok else "normal",
        }
        for i, ok in enumerate(flags)
    ]


@pytest.mark.parametrize("metric", METRICS.list_names())
def test_bootstrap_ci_contains_estimate_and_is_deterministic(metric):
    records = make_records()
    point = compute_metrics(records, CLASSES, "normal", [metric])[metric]
    lo, hi = bootstrap_ci(records, CLASSES, "normal", metric, n_boot=400, seed=3)
    assert lo <= point <= hi and lo < hi
    assert bootstrap_ci(records, CLASSES, "normal", metric, n_boot=400, seed=3) == (lo, hi)
    assert bootstrap_ci(records, CLASSES, "normal", metric, n_boot=400, seed=4) != (lo, hi)


def test_bootstrap_ignores_nan_replicates_and_handles_undefined():
    records = correctness_records([True] * 19)
    records[0]["gold"] = "normal"  # a single negative: many resamples lack it, AUROC NaN there
    lo, hi = bootstrap_ci(records, CLASSES, "normal", "auroc", n_boot=200)
    assert not math.isnan(lo) and not math.isnan(hi)
    one_class = correctness_records([True, False, True])
    assert all(math.isnan(v) for v in bootstrap_ci(one_class, CLASSES, "normal", "auroc", n_boot=50))
    assert all(math.isnan(v) for v in bootstrap_ci([], CLASSES, "normal", "accuracy"))


def test_scalar_fallback_matches_batched(monkeypatch):
    records = make_records(30)
    batched = {m: bootstrap_ci(records, CLASSES, "normal", m, n_boot=100, seed=1) for m in METRICS.list_names()}
    monkeypatch.setattr(stats, "batched", lambda name: None)
    for m, (lo, hi) in batched.items():
        assert bootstrap_ci(records, CLASSES, "normal", m, n_boot=100, seed=1) == pytest.approx((lo, hi))


def test_summarise_columns_and_values():
    records = make_records()
    with_unlabelled = records + [{"case_id": "u", "gold": None, "probabilities": [0.5, 0.5]}]
    frame = summarise({"single": with_unlabelled, "paired": records[:20], "empty": []}, CLASSES, "normal", n_boot=200)
    names = METRICS.list_names()
    assert list(frame.columns) == ["condition", "n", "degenerate"] + [c for m in names for c in (m, f"{m}_lo", f"{m}_hi")]
    assert frame["n"].tolist() == [60, 20, 0]
    expected = compute_metrics(records, CLASSES, "normal")
    row = frame.iloc[0]
    for m in names:
        assert row[m] == pytest.approx(expected[m])
        assert row[f"{m}_lo"] <= row[m] <= row[f"{m}_hi"]
    assert frame.iloc[2][names].isna().all()


def test_mcnemar_counts_and_exact_p():
    a = correctness_records([True] * 10 + [True] * 7 + [False] * 1 + [False] * 2)
    b = correctness_records([True] * 10 + [False] * 7 + [True] * 1 + [False] * 2)
    b.append(correctness_records([True] * 30)[25])  # case c25 only in b: ignored
    a.append({**a[0], "case_id": "unlabelled", "gold": None})
    out = mcnemar(a, b)
    assert (out["n"], out["b"], out["c"]) == (20, 7, 1)
    assert out["p"] == pytest.approx(binomtest(7, 8, 0.5).pvalue)
    assert out["p"] == pytest.approx(2 * 9 / 256)  # P(X<=1)+P(X>=7), X~Bin(8, 1/2)
    same = mcnemar(a, a)
    assert (same["b"], same["c"], same["p"]) == (0, 0, 1.0)


def test_mismatched_gold_is_an_error():
    a = correctness_records([True])
    b = [{**a[0], "gold": "normal"}]
    with pytest.raises(SeeInPairsError, match="case 'c0' has gold"):
        mcnemar(a, b)


def test_paired_bootstrap_delta():
    a = correctness_records([True] * 10 + [False] * 10)
    b = correctness_records([True] * 16 + [False] * 4)
    out = paired_bootstrap_delta(a, b, CLASSES, "normal", "accuracy", n_boot=500, seed=0)
    assert out["n"] == 20 and out["delta"] == pytest.approx(0.3)
    assert out["lo"] <= 0.3 <= out["hi"] and out["lo"] > 0  # b never worse than a on any case
    assert paired_bootstrap_delta(a, b, CLASSES, "normal", "accuracy", n_boot=500, seed=0) == out
    same = paired_bootstrap_delta(a, a, CLASSES, "normal", "accuracy", n_boot=100)
    assert (same["delta"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)
    empty = paired_bootstrap_delta(a, [], CLASSES, "normal", "accuracy")
    assert empty["n"] == 0 and math.isnan(empty["delta"])


def test_write_tables(tmp_path):
    frame = pd.DataFrame({"condition": ["single", "pa|red"], "n": [3, 4], "auroc": [0.51234, float("nan")]})
    paths = write_tables(frame, tmp_path / "out", "summary")
    assert set(paths) == {"csv", "md", "json"} and all(p.exists() for p in paths.values())
    back = pd.read_csv(paths["csv"])
    assert back["condition"].tolist() == ["single", "pa|red"] and math.isnan(back["auroc"][1])
    rows = json.loads(paths["json"].read_text())
    assert rows[0] == {"condition": "single", "n": 3, "auroc": pytest.approx(0.51234)} and rows[1]["auroc"] is None
    md = paths["md"].read_text().splitlines()
    assert md[0] == "| condition | n | auroc |" and md[1] == "|:---|---:|---:|"
    assert md[2] == "| single | 3 | 0.5123 |" and md[3] == "| pa\\|red | 4 | NA |"


def test_to_markdown_keeps_meaningful_index(tmp_path):
    frame = pd.DataFrame({"acc": [0.5]}, index=pd.Index(["single"], name="condition"))
    paths = write_tables(frame, tmp_path, "t")
    assert paths["md"].read_text().startswith("| condition | acc |")
    assert to_markdown(pd.DataFrame({"x": [1]})).count("\n") == 3


def test_bca_matches_scipy_on_a_skewed_mean():
    from scipy.stats import bootstrap

    from seeinpairs.evaluation.stats import bootstrap_mean_ci

    values = np.random.default_rng(3).exponential(1.0, 80)  # skewed: BCa and percentile differ
    mean, lo, hi = bootstrap_mean_ci(values, n_boot=4000)
    reference = bootstrap((values,), np.mean, n_resamples=4000, method="BCa", random_state=0).confidence_interval
    assert mean == pytest.approx(values.mean())
    assert lo == pytest.approx(reference.low, abs=0.03) and hi == pytest.approx(reference.high, abs=0.03)


def _ece_records(seed, n, miscalibrated):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n)
    truth = np.clip(0.8 * p + 0.05, 0, 1) if miscalibrated else p
    gold = (rng.random(n) < truth).astype(int)
    return [{"case_id": f"c{i}", "gold": CLASSES[g], "probabilities": [1 - q, q]} for i, (q, g) in enumerate(zip(p, gold))]


def test_ece_interval_is_bca_or_not_given():
    # miscalibrated: ECE is large, resampling bias moderate, and the BCa interval contains the estimate
    frame = summarise({"x": _ece_records(2, 200, True)}, CLASSES, "normal", n_boot=1000, metrics=["ece"])
    estimate, lo, hi = frame.loc[0, ["ece", "ece_lo", "ece_hi"]]
    assert lo < estimate < hi and (estimate - lo) > 0.2 * (hi - lo)
    # well calibrated: ECE is small and every resample inflates it, so no bootstrap interval holds the
    # estimate (the percentile one lies entirely above it): the bounds are not given rather than wrong
    records = _ece_records(0, 300, False)
    frame = summarise({"x": records}, CLASSES, "normal", n_boot=1000, metrics=["ece"])
    gold, probs, _, h = stats.to_arrays(records, CLASSES, "normal")
    replicates = stats._replicates("ece", gold, probs, CLASSES, h, stats._resample_indices(len(gold), 1000, 0))
    assert np.quantile(replicates, 0.025) > frame.loc[0, "ece"]  # why: the percentile interval misses it
    assert math.isnan(frame.loc[0, "ece_lo"]) and math.isnan(frame.loc[0, "ece_hi"])
