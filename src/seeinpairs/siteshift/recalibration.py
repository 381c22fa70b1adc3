"""Recalibrating a single-image model on a site's healthy references: the control for paired models.

At a new site a model's scores may all move in one direction (e.g. everything
looks abnormal because the images are washed out). A paired model shown
same-site healthy references can correct for that, but so can a single-image
model given the *same* healthy images: shift the healthy option's log-probability
by a bias ``b`` so that the share of those references predicted healthy equals a
target (the rate at which healthy training cases were predicted healthy, or a
chosen specificity), then apply ``b`` to every query of the site. If the paired
model gains no more than this control, its references acted as calibration, not
as comparison.

A constant bias on one option changes decisions and calibration only: for two
classes the ranking of cases, hence AUROC, is unchanged (the healthy-vs-rest
ranking is unchanged for any number of classes). Comparing accuracy and AUROC
before and after tells calibration apart from discrimination.

Pure functions on arrays and on evaluation records (the fields written by
:meth:`seeinpairs.evaluation.runner.ExperimentRunner._predict`: ``options``,
``option_logprobs``, ``probabilities``, ``predicted``, ``gold``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import SeeInPairsError

__all__ = ["HealthyBias", "RecalibrationError", "apply_healthy_bias", "fit_healthy_bias", "fit_healthy_bias_records",
           "predicted_healthy_rate", "recalibrate", "record_scores", "specificity"]


class RecalibrationError(SeeInPairsError):
    """Scores or records cannot be recalibrated (wrong shape, missing fields, unknown class)."""


def _scores(scores: Any, where: str = "scores") -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < 2:
        raise RecalibrationError(f"{where}: expected an (n cases, n options >= 2) array of log-probabilities "
                                 f"(got shape {array.shape})")
    if np.isnan(array).any() or np.isposinf(array).any():
        raise RecalibrationError(f"{where}: log-probabilities must not be NaN or +inf")
    if not np.isfinite(array).any(axis=1).all():
        raise RecalibrationError(f"{where}: a case has no finite log-probability (row {int(np.argmin(np.isfinite(array).any(axis=1)))})")
    return array


def _index(n_options: int, healthy_index: int) -> int:
    if isinstance(healthy_index, bool) or not 0 <= int(healthy_index) < n_options:
        raise RecalibrationError(f"healthy_index {healthy_index} is outside 0..{n_options - 1}")
    return int(healthy_index)


def _margins(scores: np.ndarray, healthy: int) -> np.ndarray:
    """Per case, how far the best other option is above the healthy one: healthy wins iff bias > margin."""
    others = np.delete(scores, healthy, axis=1).max(axis=1)
    return others - scores[:, healthy]


def _predicted_healthy(scores: np.ndarray, healthy: int, bias: float) -> np.ndarray:
    """argmax with the bias, ties to the lower option index (``numpy.argmax``, as the runner predicts)."""
    shifted = scores.copy()
    shifted[:, healthy] += bias
    return shifted.argmax(axis=1) == healthy


def fit_healthy_bias(scores: Any, healthy_index: int, target_rate: float) -> float:
    """The bias on the healthy option's log-probability that makes ``target_rate`` of these cases healthy.

    ``scores``: (n, C) per-option log-probabilities (or log-likelihoods) of the site's healthy
    references. With n cases only multiples of 1/n are reachable (fewer with tied scores): the
    reachable rate nearest ``target_rate`` is hit, and the bias is the midpoint between the two
    neighbouring cases' margins, so it does not sit on a decision boundary. At the extremes (rate 0 or
    1) it lies one unit of log-probability beyond the last case.
    """
    array = _scores(scores)
    healthy = _index(array.shape[1], healthy_index)
    if not 0.0 <= float(target_rate) <= 1.0:
        raise RecalibrationError(f"target_rate must be within 0..1 (got {target_rate})")
    margins = np.sort(_margins(array, healthy))
    finite = margins[np.isfinite(margins)]
    n = len(margins)
    # the achievable counts: a cut between two distinct margins (or before the first / after the last)
    cuts = [0] + [p for p in range(1, n) if margins[p - 1] < margins[p]] + [n]
    wanted = float(target_rate) * n
    count = min(cuts, key=lambda p: (abs(p - wanted), p))
    low = finite.min() if finite.size else 0.0
    high = finite.max() if finite.size else 0.0
    if count == 0:
        bias = (margins[0] if np.isfinite(margins[0]) else low) - 1.0
    elif count == n:
        bias = (margins[-1] if np.isfinite(margins[-1]) else high) + 1.0
    else:
        a, b = margins[count - 1], margins[count]
        bias = (a + b) / 2 if np.isfinite(a) and np.isfinite(b) else (b - 1.0 if np.isfinite(b) else a + 1.0)
    return float(bias)


def record_scores(records: Sequence[dict[str, Any]], classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-option log-probabilities of evaluation records as an (n, C) array, and the options.

    ``option_logprobs`` when present (the model's own numbers), else the log of ``probabilities``;
    every record must list the same options (``classes`` when given).
    """
    records = list(records)
    if not records:
        raise RecalibrationError("records: none given")
    options = list(classes) if classes is not None else list(records[0].get("options") or [])
    if len(options) < 2:
        raise RecalibrationError("records: the first record lists fewer than two 'options'")
    rows = []
    for i, record in enumerate(records):
        where = f"record {i} (case '{record.get('case_id', '?')}')"
        if list(record.get("options") or options) != options:
            raise RecalibrationError(f"{where}: options {record.get('options')} differ from {options}")
        if record.get("option_logprobs") is not None:
            row = np.asarray(record["option_logprobs"], dtype=np.float64)
        elif record.get("probabilities") is not None:
            with np.errstate(divide="ignore"):
                row = np.log(np.asarray(record["probabilities"], dtype=np.float64))
        else:
            raise RecalibrationError(f"{where}: has neither 'option_logprobs' nor 'probabilities'")
        if row.shape != (len(options),):
            raise RecalibrationError(f"{where}: {row.size} scores for {len(options)} options")
        rows.append(row)
    return _scores(np.stack(rows), "records"), options


def _healthy(options: Sequence[str], healthy_class: str) -> int:
    if healthy_class not in options:
        raise RecalibrationError(f"healthy class '{healthy_class}' is not one of the options {list(options)}")
    return list(options).index(healthy_class)


def predicted_healthy_rate(records: Sequence[dict[str, Any]], healthy_class: str, bias: float = 0.0) -> float:
    """The share of records predicted ``healthy_class`` after adding ``bias`` to its log-probability."""
    scores, options = record_scores(records)
    return float(_predicted_healthy(scores, _healthy(options, healthy_class), bias).mean())


def specificity(records: Sequence[dict[str, Any]], healthy_class: str) -> float:
    """The share of records with gold ``healthy_class`` predicted healthy (e.g. on healthy training cases:
    the target rate for :func:`fit_healthy_bias_records`)."""
    healthy = [r for r in records if r.get("gold") == healthy_class]
    if not healthy:
        raise RecalibrationError(f"records: none has gold '{healthy_class}'")
    return predicted_healthy_rate(healthy, healthy_class)


@dataclass(frozen=True)
class HealthyBias:
    """A fitted recalibration: ``bias`` added to ``healthy_class``'s log-probability."""

    healthy_class: str
    bias: float
    target_rate: float
    #: the rate reached on the references (the nearest reachable to the target)
    achieved_rate: float
    #: the rate on the references before recalibration
    rate_before: float
    n_references: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_healthy_bias_records(reference_records: Sequence[dict[str, Any]], healthy_class: str,
                             target_rate: float) -> HealthyBias:
    """:func:`fit_healthy_bias` on the records of a site's healthy references."""
    scores, options = record_scores(reference_records)
    healthy = _healthy(options, healthy_class)
    bias = fit_healthy_bias(scores, healthy, target_rate)
    return HealthyBias(healthy_class, bias, float(target_rate),
                       float(_predicted_healthy(scores, healthy, bias).mean()),
                       float(_predicted_healthy(scores, healthy, 0.0).mean()), len(scores))


def apply_healthy_bias(records: Iterable[dict[str, Any]], calibration: HealthyBias) -> list[dict[str, Any]]:
    """Copies of query records with the bias applied: new ``probabilities`` and ``predicted``.

    ``option_logprobs`` stay the model's own numbers; ``recalibration`` records the bias, so
    metrics are recomputed from the new probabilities and the raw scores are not lost.
    """
    records = list(records)
    if not records:
        return []
    scores, options = record_scores(records)
    healthy = _healthy(options, calibration.healthy_class)
    shifted = scores.copy()
    shifted[:, healthy] += calibration.bias
    shifted -= shifted.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    out = []
    for record, probs in zip(records, probabilities):
        updated = dict(record)
        updated["probabilities"] = [float(p) for p in probs]
        updated["predicted"] = options[int(np.argmax(probs))]
        updated["recalibration"] = calibration.to_dict()
        out.append(updated)
    return out


def recalibrate(query_records: Iterable[dict[str, Any]], reference_records: Sequence[dict[str, Any]],
                healthy_class: str, target_rate: float) -> tuple[list[dict[str, Any]], HealthyBias]:
    """The control in one call: fit the bias on a site's healthy references, apply it to its queries.

    ``target_rate``: e.g. :func:`specificity` of the same model on healthy training cases.
    """
    calibration = fit_healthy_bias_records(reference_records, healthy_class, target_rate)
    return apply_healthy_bias(query_records, calibration), calibration
