"""Class-balanced training (sampler, loss weights, the auto rule) and the flat-loss signature."""

from collections import Counter

import numpy as np
import pytest
import torch

from seeinpairs.training.balance import (answer_loss, balanced_order, class_weights, example_weights, flat_loss,
                                         prior_entropy, resolve_class_balance)

LABELS = ["normal"] * 30 + ["abnormal"] * 10


def test_the_sampler_draws_every_class_equally_often_and_spreads_repeats():
    order = balanced_order(LABELS, np.random.default_rng([0, 3]))
    assert len(order) == len(LABELS)
    drawn = Counter(LABELS[i] for i in order)
    assert drawn == {"normal": 20, "abnormal": 20}
    uses = Counter(int(i) for i in order)
    assert all(uses[i] == 2 for i in range(30, 40))  # each minority case twice, none three times
    assert max(uses[i] for i in range(30)) == 1 and sum(uses[i] for i in range(30)) == 20
    again = balanced_order(LABELS, np.random.default_rng([0, 3]))
    assert order.tolist() == again.tolist()
    assert order.tolist() != balanced_order(LABELS, np.random.default_rng([0, 4])).tolist()


def test_the_sampler_shares_an_uneven_remainder_and_handles_three_classes():
    labels = ["a"] * 7 + ["b"] * 2 + ["c"] * 1
    counts = Counter(labels[i] for i in balanced_order(labels, np.random.default_rng(1)))
    assert sum(counts.values()) == 10 and sorted(counts.values()) == [3, 3, 4]


def test_class_weights_are_inverse_frequency_with_mean_one():
    weights = class_weights(LABELS)
    assert weights == pytest.approx({"abnormal": 2.0, "normal": 40 / 60})
    per_example = example_weights(LABELS)
    assert per_example.mean() == pytest.approx(1.0)
    # each class then carries the same total weight
    assert per_example[:30].sum() == pytest.approx(per_example[30:].sum())


def test_weights_multiply_each_examples_answer_loss():
    log_probs = [torch.tensor([-0.5, -0.1]), torch.tensor([-2.0])]
    plain = answer_loss(log_probs)
    assert float(plain) == pytest.approx((0.6 + 2.0) / 3)
    assert float(answer_loss(log_probs, torch.ones(2))) == pytest.approx(float(plain))
    weighted = answer_loss(log_probs, torch.tensor([0.5, 2.0]))
    assert float(weighted) == pytest.approx((0.5 * 0.6 + 2.0 * 2.0) / 3)
    assert float(weighted) > float(plain)  # the poorly answered example counts more


def test_weighted_loss_passes_gradients_through_the_weights_of_each_example():
    first, second = torch.tensor([-1.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    answer_loss([first, second], torch.tensor([3.0, 1.0])).backward()
    assert float(first.grad) == pytest.approx(3 * float(second.grad))


def test_auto_balances_only_imbalanced_labels():
    assert resolve_class_balance("auto", LABELS) == "sampler"
    assert resolve_class_balance("auto", ["a"] * 14 + ["b"] * 12) == "none"  # the demo's 139/122 share
    assert resolve_class_balance("auto", ["a"] * 5) == "none"
    assert resolve_class_balance("sampler", ["a"] * 5 + ["b"] * 5) == "sampler"
    assert resolve_class_balance("none", LABELS) == "none"


PRIOR = prior_entropy([0.73, 0.27])  # 0.583 nats: the loss of answering the class shares


def _noise(n, seed=0):
    return np.random.default_rng(seed).normal(0, 0.02, n)


def test_a_loss_flat_at_the_class_prior_is_flagged():
    losses = np.r_[np.linspace(3.0, PRIOR, 40), np.full(260, PRIOR)] + _noise(300)
    verdict = flat_loss(losses.tolist(), PRIOR)
    assert verdict["flagged"] is True
    assert verdict["late"] == pytest.approx(PRIOR, abs=0.01) and "flat training loss" in verdict["why"]


def test_a_falling_loss_and_a_loss_converged_below_the_prior_are_not_flagged():
    falling = np.linspace(3.0, 0.2, 300) + _noise(300)
    assert flat_loss(falling.tolist(), PRIOR)["flagged"] is False
    converged = np.r_[np.linspace(3.0, 0.1, 30), np.full(270, 0.1)] + _noise(300)
    verdict = flat_loss(converged.tolist(), PRIOR)
    assert verdict["flagged"] is False and verdict["plateau"] is True and verdict["at_prior"] is False


def test_a_loss_still_falling_through_the_prior_is_not_a_plateau():
    still_learning = np.r_[np.full(200, 0.7), np.linspace(0.7, 0.55, 100)]
    verdict = flat_loss(still_learning.tolist(), PRIOR)
    assert verdict["plateau"] is False and verdict["flagged"] is False


def test_no_flat_loss_verdict_on_too_few_steps_or_one_class():
    assert flat_loss([PRIOR] * 5, PRIOR)["flagged"] is None
    assert flat_loss([0.0] * 50, prior_entropy([1.0]))["flagged"] is None


def test_the_train_command_names_the_balancing_and_warns_of_a_flat_loss(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    import seeinpairs.training.sft as sft
    from seeinpairs.cli.app import app
    from seeinpairs.datasets.synthetic import SYNTHETIC_TASK

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"task": SYNTHETIC_TASK.model_dump(), "data": {"manifest": "m.csv"},
                                      "model": {"tiny": "qwen2_vl"}}))
    summary = {"class_balance": {"mode": "auto", "applied": "none", "label_counts": {"normal": 400, "abnormal": 146}},
               "training_flags": {"flat_loss": {"flagged": True, "why": "flat training loss: 0.583 at the prior"}}}
    result = sft.TrainResult(tmp_path / "final", tmp_path, [], [], 1.0, 300, None, False, "full", summary=summary)
    monkeypatch.setattr(sft, "train", lambda *args, **kwargs: result)
    out = CliRunner().invoke(app, ["train", str(config)])
    assert out.exit_code == 0, out.output
    assert "class balance: none (class_balance: auto; training cases: normal 400, abnormal 146)" in out.output
    assert "warning: failed training: flat training loss: 0.583 at the prior" in out.output
