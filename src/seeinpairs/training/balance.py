"""Class-balanced training and the training-loss signature of a model that learned nothing.

On an imbalanced task (e.g. 73% healthy) the cheapest way to lower the answer loss
is to answer every case with the class shares; a small model trained from scratch
can settle there and never leave: its training loss stays flat at the entropy of
the class prior. Two remedies, chosen by ``class_balance``:

* ``loss``: each example's answer loss is multiplied by its class weight
  ``n / (C * n_c)`` (inverse class frequency, normalised so that the mean weight over
  the training examples is 1). The expected loss of a uniformly drawn example is
  then the mean over classes of the per-class loss, so answering with the class
  shares is no longer a minimum: the constant answer that minimises it is uniform.
* ``sampler``: each epoch draws ``n`` examples with every class equally often
  (``n / C`` each); a class's members are repeated (minority) or subsampled
  (majority) as evenly as possible.
* ``auto`` (the default): ``sampler`` when the largest class has at least
  :data:`AUTO_RATIO` times as many training examples as the smallest, else
  ``none`` (so balanced data trains exactly as before).

``balance_labels`` (:class:`~.config.TrainConfig`) is a different thing: it only
decides which cases an ``n_train`` subset holds.

:func:`flat_loss` reads the per-step training losses afterwards and says whether
the loss stayed at the entropy of the class prior, the signature of that collapse.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

ClassBalance = Literal["none", "loss", "sampler", "auto"]

#: ``auto`` balances (with :data:`AUTO_MODE`) when the largest class has at least this many times
#: as many training examples as the smallest; below it the draw is left as it is.
AUTO_RATIO = 1.5
#: the sampler: on a BreastMNIST-shaped task (RetinaMNIST no-DR vs DR, 73% healthy, 546 cases) it gave
#: the tiny paired model the best validation balanced accuracy (benchmarks/bench_imbalance.py), and
#: unlike loss weights it never multiplies a rare class's gradient by a large factor
AUTO_MODE: Literal["loss", "sampler"] = "sampler"

#: flat-loss verdict: tolerance as a fraction of the class prior's loss, and the windows used
FLAT_TOLERANCE = 0.05
LATE_FRACTION = 0.2
#: fewest optimizer steps for a flat-loss verdict (each window then holds at least 4 steps)
FLAT_MIN_STEPS = 20


def resolve_class_balance(mode: str, labels: Sequence[str]) -> str:
    """The balancing actually applied: ``mode`` itself, or for ``auto`` :data:`AUTO_MODE` when the
    training labels are imbalanced (largest / smallest class count >= :data:`AUTO_RATIO`), else ``none``."""
    if mode != "auto":
        return mode
    counts = Counter(labels)
    if len(counts) < 2:
        return "none"
    return AUTO_MODE if max(counts.values()) >= AUTO_RATIO * min(counts.values()) else "none"


def class_weights(labels: Sequence[str]) -> dict[str, float]:
    """Per-class loss weights ``n / (C * n_c)`` over the classes present: inverse frequency, with
    mean weight 1 over the examples (so the loss keeps its scale and the learning rate its meaning)."""
    counts = Counter(labels)
    n, c = len(labels), len(counts)
    return {label: n / (c * count) for label, count in sorted(counts.items())}


def example_weights(labels: Sequence[str]) -> np.ndarray:
    """The class weight of each example, in ``labels`` order."""
    weights = class_weights(labels)
    return np.array([weights[label] for label in labels], dtype=np.float64)


def balanced_order(labels: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """One epoch of ``len(labels)`` example indices in which every class is drawn equally often.

    Each class gets ``n // C`` draws (the remainder goes to classes chosen by ``rng``). Within a
    class, draws cycle through fresh permutations of its members, so a minority example appears
    ``floor`` or ``ceil`` of its share and a majority example at most once. The result is shuffled.
    """
    n = len(labels)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    names = sorted(by_class)
    quota = np.full(len(names), n // len(names))
    quota[rng.permutation(len(names))[: n - int(quota.sum())]] += 1
    drawn: list[np.ndarray] = []
    for name, m in zip(names, quota):
        members = np.asarray(by_class[name])
        cycles = [rng.permutation(members) for _ in range(math.ceil(m / len(members)))]
        drawn.append(np.concatenate(cycles)[:m] if cycles else members[:0])
    return rng.permutation(np.concatenate(drawn))


def answer_loss(log_probs: Sequence[torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of one batch: the gold answer tokens' mean negative log-likelihood.

    ``log_probs``: per example, its answer tokens' log-probabilities. With ``weights`` (one per
    example), each example's summed NLL is multiplied by its weight before dividing by the number
    of answer tokens, so weights of 1 give the unweighted loss.
    """
    if weights is None:
        return -torch.cat(list(log_probs)).mean()
    n_tokens = sum(len(values) for values in log_probs)
    per_example = torch.stack([values.sum() for values in log_probs])
    return -(weights.to(per_example) * per_example).sum() / n_tokens


def prior_entropy(shares: Sequence[float]) -> float:
    """Entropy (nats) of a class distribution: the answer loss of a model that knows only the shares."""
    p = np.asarray([s for s in shares if s > 0], dtype=float)
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def flat_loss(step_losses: Sequence[float], prior_loss: float, tolerance: float = FLAT_TOLERANCE) -> dict[str, Any]:
    """Whether the training loss plateaued at the class prior's loss, with the numbers it rests on.

    ``step_losses``: the training loss of every optimizer step; ``prior_loss``: the per-token loss of a
    model that answers every example with the class shares it was trained towards (see
    :func:`prior_entropy`). ``late`` is the mean over the last 20% of steps and ``before`` the mean over
    the 20% of steps before those. Flagged when both hold:

    * ``late >= (1 - tolerance) * prior_loss``: the model did not fit the training answers better than
      the class shares do;
    * ``before - late <= tolerance * prior_loss``: the loss was no longer falling (a plateau, not a
      run stopped while still learning).

    ``flagged`` is ``None`` (no verdict) with fewer than :data:`FLAT_MIN_STEPS` steps or a prior loss
    of 0 (a single class).
    """
    losses = np.asarray(step_losses, dtype=float)
    losses = losses[np.isfinite(losses)]
    record: dict[str, Any] = {"flagged": None, "prior_loss": float(prior_loss), "tolerance": tolerance,
                              "steps": int(len(losses))}
    if len(losses) < FLAT_MIN_STEPS or not prior_loss > 0:
        record["why"] = ("fewer than %d steps" % FLAT_MIN_STEPS if len(losses) < FLAT_MIN_STEPS
                         else "one class only")
        return record
    window = max(1, round(LATE_FRACTION * len(losses)))
    late, before = float(losses[-window:].mean()), float(losses[-2 * window:-window].mean())
    at_prior = late >= (1 - tolerance) * prior_loss
    plateau = before - late <= tolerance * prior_loss
    record.update({"late": late, "before": before, "at_prior": bool(at_prior), "plateau": bool(plateau),
                   "flagged": bool(at_prior and plateau)})
    if record["flagged"]:
        record["why"] = (f"flat training loss: {late:.3f} over the last {window} steps, {before:.3f} before, "
                         f"at the class prior's {prior_loss:.3f}")
    return record
