import numpy as np
import pytest

from seeinpairs.evaluation.metrics import compute_metrics
from seeinpairs.siteshift import (
    RecalibrationError,
    apply_healthy_bias,
    fit_healthy_bias,
    fit_healthy_bias_records,
    predicted_healthy_rate,
    record_scores,
    specificity,
)

CLASSES = ["normal", "abnormal"]


def rate(scores, healthy, bias):
    shifted = np.array(scores, dtype=float)
    shifted[:, healthy] += bias
    return float((shifted.argmax(axis=1) == healthy).mean())


def records(scores, golds, options=CLASSES):
    out = []
    for i, (row, gold) in enumerate(zip(scores, golds)):
        probs = np.exp(np.asarray(row) - np.max(row))
        probs /= probs.sum()
        out.append({"case_id": f"c{i}", "options": list(options), "option_logprobs": [float(x) for x in row],
                    "probabilities": probs.tolist(), "predicted": options[int(np.argmax(probs))], "gold": gold})
    return out


@pytest.mark.parametrize("target", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_binary_bias_hits_the_target_rate(target):
    # margins abnormal - normal: 0.5, 1.0, ..., 10.0 for twenty references (all look abnormal at a new site)
    margins = np.arange(1, 21) * 0.5
    scores = np.stack([np.zeros(20), margins], axis=1)
    bias = fit_healthy_bias(scores, 0, target)
    assert rate(scores, 0, bias) == pytest.approx(target)
    assert rate(scores, 0, 0.0) == 0.0


def test_multiclass_bias_hits_the_target_rate():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 5))
    scores[:, 2] -= 1.5  # the healthy option (index 2) is rarely chosen
    for target in (0.3, 0.75, 0.9):
        bias = fit_healthy_bias(scores, 2, target)
        assert rate(scores, 2, bias) == pytest.approx(target)
    # a negative bias lowers the rate when the model calls too much healthy
    scores[:, 2] += 5
    bias = fit_healthy_bias(scores, 2, 0.5)
    assert bias < 0 and rate(scores, 2, bias) == pytest.approx(0.5)


def test_unreachable_rates_go_to_the_nearest_reachable_one():
    scores = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 3.0]])  # three tied margins
    assert rate(scores, 0, fit_healthy_bias(scores, 0, 0.5)) == pytest.approx(0.75)  # 0.75 is nearer than 0
    assert rate(scores, 0, fit_healthy_bias(scores, 0, 0.3)) == pytest.approx(0.0)
    three = np.stack([np.zeros(3), [1.0, 2.0, 3.0]], axis=1)
    assert rate(three, 0, fit_healthy_bias(three, 0, 0.5)) == pytest.approx(1 / 3)  # ties go to the lower count


def test_records_round_trip_and_binary_auroc_is_unchanged():
    rng = np.random.default_rng(1)
    # references: healthy images of the new site, all scored as rather abnormal
    refs = records(np.stack([rng.normal(0, 1, 30), rng.normal(1.5, 1, 30)], axis=1), ["normal"] * 30)
    train_healthy = records(np.stack([rng.normal(1, 1, 50), rng.normal(0, 1, 50)], axis=1), ["normal"] * 50)
    target = specificity(train_healthy, "normal")
    assert 0.6 < target < 0.95
    calibration = fit_healthy_bias_records(refs, "normal", target)
    assert calibration.rate_before < 0.3
    assert calibration.achieved_rate == pytest.approx(round(target * 30) / 30)
    assert predicted_healthy_rate(refs, "normal", calibration.bias) == calibration.achieved_rate
    golds = ["normal"] * 20 + ["abnormal"] * 20
    shift = np.r_[np.zeros(20), np.full(20, 1.0)]
    queries = records(np.stack([rng.normal(0, 1, 40), rng.normal(1.2, 1, 40) + shift], axis=1), golds)
    fixed = apply_healthy_bias(queries, calibration)
    assert all(r["recalibration"]["bias"] == calibration.bias for r in fixed)
    assert [r["option_logprobs"] for r in fixed] == [r["option_logprobs"] for r in queries]
    assert all(r["predicted"] == CLASSES[int(np.argmax(r["probabilities"]))] for r in fixed)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-9 for r in fixed)
    before = compute_metrics(queries, CLASSES, "normal")
    after = compute_metrics(fixed, CLASSES, "normal")
    assert after["auroc"] == pytest.approx(before["auroc"], abs=1e-12)
    assert after["accuracy"] != before["accuracy"]
    assert queries[0]["probabilities"] != fixed[0]["probabilities"]  # inputs untouched, copies changed


def test_probabilities_alone_are_enough():
    rows = [[-0.2, -1.7], [-2.0, -0.14], [-0.9, -0.5]]
    with_logprobs = records(rows, ["normal"] * 3)
    without = [{k: v for k, v in r.items() if k != "option_logprobs"} for r in with_logprobs]
    a, _ = record_scores(with_logprobs)
    b, _ = record_scores(without)
    assert np.allclose(a - a.max(axis=1, keepdims=True), b - b.max(axis=1, keepdims=True))


@pytest.mark.parametrize("call, word", [
    (lambda: fit_healthy_bias([[0.0, 1.0]], 0, 1.5), "target_rate"),
    (lambda: fit_healthy_bias([[0.0, 1.0]], 2, 0.5), "healthy_index"),
    (lambda: fit_healthy_bias([0.0, 1.0], 0, 0.5), "shape"),
    (lambda: fit_healthy_bias([[0.0, float("nan")]], 0, 0.5), "NaN"),
    (lambda: fit_healthy_bias([[0.0, -1.0], [-np.inf, -np.inf]], 0, 0.5), "no finite"),
    (lambda: fit_healthy_bias_records([], "normal", 0.5), "none given"),
    (lambda: fit_healthy_bias_records(records([[0.0, 1.0]], ["normal"]), "healthy", 0.5), "healthy class"),
    (lambda: record_scores([{"case_id": "x", "options": CLASSES}]), "neither"),
    (lambda: record_scores(records([[0, 1]], ["normal"]) + records([[0, 1]], ["normal"], ["abnormal", "normal"])),
     "differ"),
    (lambda: specificity(records([[0, 1]], ["abnormal"]), "normal"), "gold"),
])
def test_bad_inputs_are_one_line_errors(call, word):
    with pytest.raises(RecalibrationError, match=word) as info:
        call()
    assert "\n" not in str(info.value)


def test_recalibrate_fits_on_references_and_applies_to_queries():
    from seeinpairs.siteshift import recalibrate

    refs = records([[0.0, m] for m in (0.5, 1.0, 1.5, 2.0)], ["normal"] * 4)
    queries = records([[0.0, 1.2], [0.0, 3.0]], ["normal", "abnormal"])
    fixed, calibration = recalibrate(queries, refs, "normal", 0.5)
    assert 1.0 < calibration.bias < 1.5 and calibration.achieved_rate == 0.5
    assert [r["predicted"] for r in fixed] == ["normal", "abnormal"]
