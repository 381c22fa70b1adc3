"""Detect models that did not learn, before any table or sentence draws a conclusion from them.

A model that collapsed to the class prior answers every case with the same
probabilities: its balanced accuracy is chance, its AUROC is noise around 0.5,
and its ECE is near zero because a constant answer equal to the class share is
trivially calibrated. Reported as it is, such a condition reads as "calibration
improved". So each condition's predictions are checked for the two signatures
of failed training, and a condition that shows one is labelled as failed and
left out of best-condition and calibration claims.

A served model can produce the same picture without any training problem: when
the options fall outside the ``top_logprobs`` a server returns, their scores are
only bounds (``bounded`` in the record), every case gets the same tied
probabilities, and AUROC 0.500 [0.50, 0.50] with ECE 0.000 would read as a
result. Such a condition is labelled too (:func:`scoring_reason`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the largest per-class standard deviation of the probabilities below which answers count as constant
CONSTANT_SD = 0.005
#: fewest scored cases for a verdict (with fewer, one class for all cases may be honest)
MIN_CASES = 10
#: share of cases with bounded or tied option scores above which a condition's scores are not a result
MAX_UNSCORED_SHARE = 0.5


def degenerate_reason(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> str:
    """Why the predictions look like failed training, or ``""`` when they do not.

    ``gold``: class indices ``int[n]``; ``probs``: ``float[n, C]`` in ``classes`` order. Two
    signatures: near-constant probabilities (every class column's sd below :data:`CONSTANT_SD`),
    and one predicted class for every case although the gold labels hold several classes.
    """
    probs = np.asarray(probs, dtype=float)
    gold = np.asarray(gold, dtype=int)
    if len(gold) < MIN_CASES or probs.ndim != 2 or not np.isfinite(probs).all():
        return ""
    spread = float(probs.std(axis=0).max())
    if spread < CONSTANT_SD:
        return f"near-constant probabilities (largest sd over cases {spread:.4f} < {CONSTANT_SD})"
    predicted = np.unique(probs.argmax(axis=1))
    if len(predicted) == 1 and len(np.unique(gold)) > 1:
        return f"one predicted class ('{classes[int(predicted[0])]}') for all {len(gold)} cases"
    return ""


def scoring_reason(records: Sequence[dict]) -> str:
    """Why a condition's option scores are not measurements, or ``""``: most of its cases have bounded
    scores (an option outside the returned log-probabilities), an unmatched generation fallback,
    or all options tied."""
    records = list(records)
    if len(records) < MIN_CASES:
        return ""
    bounded = tied = 0
    for record in records:
        how = record.get("scoring") or {}
        notes = how.get("notes") or []
        if any(str(note).startswith("bounded") for note in notes) or how.get("method") == "generation-unmatched":
            bounded += 1
        probabilities = record.get("probabilities") or []
        if len(probabilities) > 1 and np.ptp(np.asarray(probabilities, dtype=float)) < 1e-9:
            tied += 1
    n = len(records)
    if bounded / n > MAX_UNSCORED_SHARE:
        return (f"option scores are bounds, not measurements, in {bounded} of {n} cases (options outside the "
                "server's top_logprobs, or an unmatched generated answer)")
    if tied / n > MAX_UNSCORED_SHARE:
        return f"all options tied in {tied} of {n} cases"
    return ""


def failed_rows(frame) -> np.ndarray:
    """Boolean mask of the rows of a summary frame whose condition is labelled as failed training."""
    if frame is None or "degenerate" not in getattr(frame, "columns", ()):
        return np.zeros(0 if frame is None else len(frame), dtype=bool)
    return frame["degenerate"].fillna("").astype(str).str.len().to_numpy() > 0
