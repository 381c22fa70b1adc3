"""Failed-training detection on predictions: a collapsed model is caught, a weak but real one is not."""

import numpy as np
import pytest

from seeinpairs.evaluation.degenerate import degenerate_reason
from seeinpairs.evaluation.stats import summarise

CLASSES = ["normal", "malignant"]


def _records(probs, gold):
    return [{"case_id": f"c{i}", "gold": CLASSES[g], "probabilities": list(p), "options": CLASSES}
            for i, (p, g) in enumerate(zip(probs, gold))]


def test_the_class_prior_for_every_case_is_failed_training():
    rng = np.random.default_rng(0)
    gold = (rng.random(200) < 0.27).astype(int)
    prior = 0.732 + rng.normal(0, 0.0002, 200)  # what the BreastMNIST paired model answered
    probs = np.stack([prior, 1 - prior], axis=1)
    reason = degenerate_reason(gold, probs, CLASSES)
    assert reason.startswith("near-constant probabilities")
    summary = summarise({"paired": _records(probs, gold)}, CLASSES, "normal", n_boot=50)
    assert summary.loc[0, "degenerate"] == reason
    assert summary.loc[0, "ece"] < 0.05  # trivially "calibrated": why the label is needed


def test_one_predicted_class_is_failed_training_but_a_weak_model_is_not():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 100)
    varied_but_one_sided = np.clip(0.6 + rng.normal(0, 0.05, 100), 0.51, 0.99)
    probs = np.stack([varied_but_one_sided, 1 - varied_but_one_sided], axis=1)
    assert degenerate_reason(gold, probs, CLASSES) == "one predicted class ('normal') for all 100 cases"
    weak = np.clip(0.5 + 0.05 * (gold - 0.5) + rng.normal(0, 0.1, 100), 0.01, 0.99)  # AUROC about 0.6
    probs = np.stack([1 - weak, weak], axis=1)
    assert degenerate_reason(gold, probs, CLASSES) == ""


@pytest.mark.parametrize("n", [0, 1, 9])
def test_too_few_cases_give_no_verdict(n):
    probs = np.full((n, 2), 0.5)
    assert degenerate_reason(np.zeros(n, dtype=int), probs, CLASSES) == ""


def test_bounded_or_tied_scores_of_a_served_model_are_labelled():
    from seeinpairs.evaluation.degenerate import scoring_reason

    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 40)
    tied = [{**r, "probabilities": [0.5, 0.5], "scoring": {"method": "logprobs", "notes": ["bounded:normal",
                                                                                          "bounded:malignant"]}}
            for r in _records(np.full((40, 2), 0.5), gold)]
    summary = summarise({"served": tied}, CLASSES, "normal", n_boot=50)
    assert summary.loc[0, "degenerate"].startswith("near-constant")  # the probabilities alone already say it
    assert scoring_reason(tied).startswith("option scores are bounds, not measurements, in 40 of 40 cases")
    varied = rng.uniform(0.2, 0.8, 40)
    half_bounded = [{**r, "scoring": {"method": "logprobs", "notes": ["bounded:normal"] if i < 30 else []}}
                    for i, r in enumerate(_records(np.stack([varied, 1 - varied], 1), gold))]
    summary = summarise({"served": half_bounded}, CLASSES, "normal", n_boot=50)
    assert "30 of 40 cases" in summary.loc[0, "degenerate"]
    measured = [{**r, "scoring": {"method": "logprobs", "notes": []}} for r in half_bounded]
    assert scoring_reason(measured) == ""
