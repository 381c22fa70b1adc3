import numpy as np
import pytest
from explain_data import TASK

from seeinpairs.explain.representation import (
    layer_alignment,
    linear_cka,
    probe_accuracy,
    query_states,
    text_states,
)
from seeinpairs.prompts import PromptBuilder


def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8))
    rotation = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ rotation + 1) == pytest.approx(1.0)  # invariant to rotation, scale, shift
    assert linear_cka(x, rng.standard_normal((50, 8))) < 0.4


def test_probe_separates_separable_features_and_says_nan_when_it_cannot():
    rng = np.random.default_rng(0)
    labels = ["a"] * 20 + ["b"] * 20
    separable = rng.standard_normal((40, 5)) + np.array([[3.0]] * 20 + [[-3.0]] * 20)
    assert probe_accuracy(separable, labels) > 0.95
    assert np.isnan(probe_accuracy(separable[:21], labels[:21]))  # one case of class b: no folds


def test_layers_of_a_trained_model_carry_the_label(region_model):
    backend, table, _ = region_model
    prompts = PromptBuilder(TASK)
    cases = [c for c in table if c.split == "test"][:30]
    queries = query_states(backend.model, backend.processor, [prompts.build(c) for c in cases])
    classes = text_states(backend.model, backend.processor, ["normal", "abnormal"])
    layers = backend.model.config.text_config.num_hidden_layers + 1
    assert queries.shape[:2] == (30, layers) and classes.shape[:2] == (2, layers)
    frame = layer_alignment(queries, classes, TASK.classes, [c.label for c in cases])
    assert list(frame["layer"]) == list(range(layers))
    assert frame[["cosine_gold", "cosine_margin", "cka", "probe_accuracy"]].notna().all().all()
    assert frame["probe_accuracy"].iloc[-1] >= 0.9  # the last layer holds the answer the model gives
