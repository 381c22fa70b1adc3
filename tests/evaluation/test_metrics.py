"""Metrics: hand-computed values, agreement with sklearn, and batched == scalar."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from seeinpairs.errors import RegistryError, SeeInPairsError
from seeinpairs.evaluation.metrics import METRICS, batched, compute_metrics, to_arrays

BIN = ["normal", "tumor"]
TRI = ["normal", "benign", "malignant"]


def recs(golds, probs, classes, **extra):
    return [
        {"case_id": f"c{i}", "gold": g, "probabilities": list(p), "options": list(classes), **extra}
        for i, (g, p) in enumerate(zip(golds, probs))
    ]


def test_registry_has_the_metrics():
    assert set(METRICS.list_names()) >= {"accuracy", "balanced_accuracy", "macro_f1", "auroc", "ece"}


def test_hand_computed_binary():
    # gold:      N  N  N  T  T ; pred: N  N  T  T  N
    gold = np.array([0, 0, 0, 1, 1])
    p_t = np.array([0.1, 0.2, 0.7, 0.8, 0.4])
    probs = np.stack([1 - p_t, p_t], axis=1)
    m = {name: METRICS.get(name)(gold, probs, BIN, 0) for name in METRICS.list_names()}
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # F1(N) = 2*2/(2*2+1+1) = 2/3 ; F1(T) = 2*1/(2*1+1+1) = 1/2
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # positives (T) scores 0.8, 0.4 vs negatives 0.1, 0.2, 0.7: pairs won 3 + 2 = 5 of 6
    assert m["auroc"] == pytest.approx(5 / 6)


def test_auroc_uses_abnormal_class_even_when_healthy_is_second():
    gold = np.array([0, 0, 1, 1])  # class 0 = tumor (abnormal), class 1 = normal (healthy)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    expected = roc_auc_score(gold == 0, probs[:, 0])
    assert METRICS.get("auroc")(gold, probs, ["tumor", "normal"], 1) == pytest.approx(expected)


def test_auroc_nan_when_one_class():
    gold = np.zeros(4, dtype=int)
    probs = np.full((4, 2), 0.5)
    assert math.isnan(METRICS.get("auroc")(gold, probs, BIN, 0))
    assert math.isnan(batched("auroc")(gold[None], probs[None], BIN, 0)[0])
    assert math.isnan(METRICS.get("auroc")(np.zeros(3, dtype=int), np.full((3, 3), 1 / 3), TRI, 0))


def test_multiclass_auroc_skips_absent_classes():
    rng = np.random.default_rng(1)
    gold = np.array([0, 0, 2, 2, 0, 2])  # class 1 never occurs
    probs = rng.dirichlet([1, 1, 1], size=6)
    expected = np.mean([roc_auc_score(gold == c, probs[:, c]) for c in (0, 2)])
    assert METRICS.get("auroc")(gold, probs, TRI, 0) == pytest.approx(expected)


def test_ece_zero_when_perfectly_calibrated():
    gold = np.array([1] * 8 + [0] * 2)
    probs = np.tile([0.2, 0.8], (10, 1))  # 80% confident in "tumor", right 8 of 10
    assert METRICS.get("ece")(gold, probs, BIN, 0) == pytest.approx(0.0, abs=1e-12)
    certain = np.eye(3)[[0, 1, 2]]
    assert METRICS.get("ece")(np.array([0, 1, 2]), certain, TRI, 0) == pytest.approx(0.0)


def test_ece_known_value():
    # Two cases at 0.9 (both right) and two at 0.6 (one right): 0.5*0.1 + 0.5*0.1.
    gold = np.array([1, 1, 1, 0])
    probs = np.array([[0.1, 0.9], [0.1, 0.9], [0.4, 0.6], [0.4, 0.6]])
    assert METRICS.get("ece")(gold, probs, BIN, 0) == pytest.approx(0.1)


@st.composite
def problems(draw):
    n_classes = draw(st.integers(2, 4))
    n = draw(st.integers(1, 25))
    gold = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)))
    # Coarse grid of probabilities so ties (argmax and ranking) are exercised.
    raw = np.array(draw(st.lists(st.integers(0, 4), min_size=n * n_classes, max_size=n * n_classes)), dtype=float)
    raw = raw.reshape(n, n_classes) + 0.5
    return gold, raw / raw.sum(axis=1, keepdims=True), draw(st.integers(0, n_classes - 1))


@settings(max_examples=60, deadline=None)
@given(problems())
def test_batched_matches_scalar_and_sklearn(problem):
    gold, probs, healthy = problem
    classes = [f"c{i}" for i in range(probs.shape[1])]
    pred = probs.argmax(1)
    for name in METRICS.list_names():
        scalar = METRICS.get(name)(gold, probs, classes, healthy)
        batch = batched(name)
        if batch is not None:
            value = batch(np.stack([gold, gold]), np.stack([probs, probs]), classes, healthy)
            np.testing.assert_allclose(value, [scalar, scalar], rtol=1e-9, atol=1e-12, equal_nan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert METRICS.get("balanced_accuracy")(gold, probs, classes, healthy) == pytest.approx(
            balanced_accuracy_score(gold, pred)
        )
    expected_f1 = f1_score(gold, pred, labels=list(range(len(classes))), average="macro", zero_division=0)
    assert METRICS.get("macro_f1")(gold, probs, classes, healthy) == pytest.approx(expected_f1)


def test_compute_metrics_skips_unlabelled_and_reorders_options():
    records = recs(["tumor", "normal"], [[0.3, 0.7], [0.6, 0.4]], BIN)
    records.append({"case_id": "u", "gold": None, "probabilities": [0.5, 0.5], "options": BIN})
    # Same prediction, options listed in the other order.
    records.append({"case_id": "r", "gold": "tumor", "probabilities": [0.9, 0.1], "options": ["tumor", "normal"]})
    gold, probs, cases, healthy = to_arrays(records, BIN, "normal")
    assert cases == ["c0", "c1", "r"] and healthy == 0
    np.testing.assert_allclose(probs[2], [0.1, 0.9])
    out = compute_metrics(records, BIN, "normal", metrics=["accuracy", "auroc"])
    assert out == {"accuracy": 1.0, "auroc": 1.0}


def test_compute_metrics_defaults_and_empty():
    assert set(compute_metrics(recs(["normal"], [[0.6, 0.4]], BIN), BIN, "normal")) == set(METRICS.list_names())
    out = compute_metrics([{"case_id": "u", "gold": None}], BIN, "normal")
    assert all(math.isnan(v) for v in out.values())


@pytest.mark.parametrize(
    "records, message",
    [
        (recs(["cyst"], [[0.5, 0.5]], BIN), "gold label 'cyst'"),
        (recs(["normal"], [[0.2, 0.3, 0.5]], BIN, options=None), "3 probabilities for 2 classes"),
        (recs(["normal"], [[0.5, 0.5]], BIN, options=["normal", "cyst"]), "do not match the classes"),
        (recs(["normal", "tumor"], [[0.5, 0.5]] * 2, BIN, case_id="same"), "appears twice"),
    ],
)
def test_bad_records_are_clear_errors(records, message):
    with pytest.raises(SeeInPairsError, match=message):
        compute_metrics(records, BIN, "normal")


def test_unknown_metric_and_healthy_class():
    with pytest.raises(RegistryError, match="unknown metric"):
        compute_metrics(recs(["normal"], [[0.5, 0.5]], BIN), BIN, "normal", metrics=["nope"])
    with pytest.raises(SeeInPairsError, match="healthy class"):
        compute_metrics([], BIN, "healthy")
