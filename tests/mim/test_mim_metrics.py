import numpy as np
import pandas as pd
import pytest

from seeinpairs.errors import RegistryError
from seeinpairs.mim.metrics import (
    OPEN_METRICS,
    extract_letter,
    mean_ci,
    open_metric_names,
    score_open,
    summarise,
)

OPTIONS = ["the first image", "the second image", "the third image"]


@pytest.mark.parametrize("text, letter", [
    ("C", "C"), ("C: the third image", "C"), ("(B)", "B"), ("B.", "B"), ("  A: the first image", "A"),
    ("The answer is B", "B"), ("Answer: (C)", "C"), ("I think the second image", "B"),
    ("the third image shows it", "C"), ("A lesion is visible in the first image", "A"),
    ("Option C seems right", "C"), ("", None), ("no idea", None), ("D: the fourth image", None),
    ("image image image", None),
])
def test_letter_extraction(text, letter):
    assert extract_letter(text, OPTIONS) == letter


@pytest.mark.parametrize("name", OPEN_METRICS.list_names())
def test_open_metrics_rank_exact_answers_first(name):
    if name == "llm_judge":
        with pytest.raises(Exception, match="judge backend"):
            OPEN_METRICS.create(name)
        return
    fn = OPEN_METRICS.create(name)
    reference = "The opacity has progressed."
    scores = fn([reference, "The opacity has resolved.", "banana"], [reference] * 3)
    assert scores[0] > scores[1] > scores[2] or (scores[0] > scores[2] and scores[0] >= scores[1])
    assert scores[0] == pytest.approx({"bleu": 100.0, "rouge_l": 1.0, "embedding": 1.0}[name], abs=1e-4)


def test_llm_judge_uses_any_backend():
    class Judge:
        def score_options(self, requests):
            return [[0.0, -2.0] if "progressed" in r.messages[0]["content"][0]["text"].split("Candidate")[1]
                    else [-2.0, 0.0] for r in requests]

    fn = OPEN_METRICS.create("llm_judge", backend=Judge())
    scores = fn(["It progressed", "It resolved"], ["The opacity has progressed."] * 2)
    assert scores[0] > 0.5 > scores[1]
    assert open_metric_names() == ["bleu", "embedding", "rouge_l"]
    with pytest.raises(RegistryError):
        OPEN_METRICS.create("meteor")


def _predictions() -> pd.DataFrame:
    rows = []
    for i in range(40):
        subset = "temporal" if i < 20 else "comparison"
        rows.append({"split": "held_in" if i < 30 else "held_out", "subset": subset if i < 30 else "odir",
                     "dataset": "A" if i % 2 else "B", "open": i % 10 == 9, "n_options": 2 if subset == "comparison" else 5,
                     "correct": float(i % 3 == 0), "parse_failed": np.nan, "text": "x", "answer": "x y"})
    return pd.DataFrame(rows)


def test_summary_groups_and_chance():
    frame = score_open(_predictions(), ["rouge_l"])
    summary = summarise(frame, n_boot=200)
    row = summary[(summary.level == "subset") & (summary.group == "temporal")].iloc[0]
    mc = frame[(frame.subset == "temporal") & ~frame.open]
    assert row["n"] == len(mc) and row["accuracy"] == pytest.approx(mc["correct"].mean())
    assert row["chance"] == pytest.approx(0.2) and row["accuracy_lo"] <= row["accuracy"] <= row["accuracy_hi"]
    assert set(summary.level) == {"all", "split", "subset", "dataset", "macro"}
    macro = summary[(summary.level == "macro") & (summary.group == "held_in")].iloc[0]
    subsets = summary[(summary.level == "subset") & summary.group.isin(["temporal", "comparison"])]
    assert macro["accuracy"] == pytest.approx(subsets["accuracy"].mean())
    everything = summary[summary.level == "all"].iloc[0]
    assert everything["n_open"] == 4 and 0 < everything["open_rouge_l"] < 1
    lo, hi = mean_ci([1.0] * 10)
    assert lo == hi == 1.0 and np.isnan(mean_ci([])[0])


@pytest.mark.parametrize("text, expected", [
    ("B: the second image", 0.0), ("B: the first image.", 1.0), ("A: the third image shows it", 1.0),
    ("the first image", None), ("B: something else", None), ("", None)])
def test_letter_text_mismatch(text, expected):
    from seeinpairs.mim.metrics import letter_text_mismatch

    value = letter_text_mismatch(text, OPTIONS)
    assert (np.isnan(value) if expected is None else value == expected)


def test_paired_difference_matches_items():
    from seeinpairs.mim.metrics import paired_difference

    full = _predictions().assign(uid=[f"u{i}" for i in range(40)])
    reduced = full.assign(correct=0.0).iloc[::-1]  # another order: matched by uid
    gaps = paired_difference(full, reduced, n_boot=200)
    row = gaps[(gaps.level == "subset") & (gaps.group == "temporal")].iloc[0]
    expected = full[(full.subset == "temporal") & ~full.open]["correct"].mean()
    assert row["delta"] == pytest.approx(expected) and row["delta_lo"] <= row["delta"] <= row["delta_hi"]
    assert gaps[gaps.level == "all"].iloc[0]["n"] == int((~full.open).sum())


def test_a_missing_text_extra_is_a_one_line_install_hint():
    from seeinpairs.errors import ConfigError
    from seeinpairs.mim.metrics import _text_extra

    with pytest.raises(ConfigError, match=r"pip install 'seeinpairs\[text\]' \(no_such_text_module is missing\)"):
        _text_extra("no_such_text_module")
