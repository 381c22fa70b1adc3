"""Named diagnostic metrics over closed-set class probabilities.

Every metric has the same signature,
``f(gold: int[n], probs: float[n, C], classes, healthy_index) -> float``,
and lives in :data:`METRICS` as one :class:`MetricSpec` (the function, its
batched twin, its direction and its display name), so reports and tests can
iterate over all of them and no table elsewhere repeats what a metric is.

Most metrics also have a *batched* twin (``gold: int[B, n]``,
``probs: float[B, n, C]`` -> ``float[B]``) that the bootstrap uses to evaluate
a thousand resamples in a few array operations instead of a thousand sklearn
calls. The scalar versions of balanced accuracy, macro-F1 and AUROC are the
sklearn reference implementations; tests check the batched twins against them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from ..errors import SeeInPairsError
from ..registry import Registry

MetricFn = Callable[[np.ndarray, np.ndarray, Sequence[str], int], float]
BatchFn = Callable[[np.ndarray, np.ndarray, Sequence[str], int], np.ndarray]

ECE_BINS = 15


@dataclass(frozen=True)
class MetricSpec:
    """Everything about one metric: how to compute it per case set and per batch of resamples,
    which way is better, and how reports name it. Calling the spec computes the metric."""

    function: MetricFn
    #: the name in tables and figures (``AUROC``)
    display_name: str
    #: the vectorised twin over resamples (``gold: int[B, n]`` -> ``float[B]``), or None
    batch: BatchFn | None = None
    higher_is_better: bool = True

    @property
    def description(self) -> str:
        """The function's docstring (``seeinpairs list`` shows its first sentence)."""
        return self.function.__doc__ or ""

    def __call__(self, gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> float:
        return self.function(gold, probs, classes, healthy_index)


METRICS: Registry[MetricSpec] = Registry("metric", expects=MetricSpec)


def batched(name: str) -> BatchFn | None:
    """The vectorised version of metric ``name``, or None if it only has a scalar form."""
    return METRICS.get(name).batch


# --------------------------------------------------------------- batched kernels
def _confusion(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts ``[B, gold, pred]`` for a batch of label vectors."""
    b = gold.shape[0]
    flat = (np.arange(b)[:, None] * n_classes + gold) * n_classes + pred
    return np.bincount(flat.ravel(), minlength=b * n_classes * n_classes).reshape(b, n_classes, n_classes)


def _accuracy_batch(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> np.ndarray:
    return (probs.argmax(-1) == gold).mean(axis=1)


def _balanced_accuracy_batch(
    gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int
) -> np.ndarray:
    # Mean recall over the classes that occur in gold (sklearn drops the others).
    cm = _confusion(gold, probs.argmax(-1), probs.shape[-1])
    support = cm.sum(axis=2)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    present = support > 0
    recall = np.where(present, tp / np.maximum(support, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return recall.sum(axis=1) / present.sum(axis=1)


def _macro_f1_batch(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> np.ndarray:
    # F1 = 2TP / (2TP + FP + FN); a class absent from gold and predictions scores 0
    # (sklearn's zero_division=0), and all C classes count in the average.
    cm = _confusion(gold, probs.argmax(-1), probs.shape[-1])
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(float)
    denom = cm.sum(axis=2) + cm.sum(axis=1)  # (TP+FN) + (TP+FP)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return f1.mean(axis=1)


def _ovr_auc_batch(gold: np.ndarray, scores: np.ndarray, cls: int) -> np.ndarray:
    """One-vs-rest AUROC per batch row via the Mann-Whitney rank formula (ties count 1/2)."""
    positive = gold == cls
    n_pos = positive.sum(axis=1).astype(float)
    n_neg = gold.shape[1] - n_pos
    ranks = rankdata(scores, axis=1)  # average ranks for ties, like roc_auc_score
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _auroc_batch(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> np.ndarray:
    n_classes = probs.shape[-1]
    if n_classes == 2:
        positive = 1 - healthy_index
        return _ovr_auc_batch(gold, probs[..., positive], positive)
    per_class = np.stack([_ovr_auc_batch(gold, probs[..., c], c) for c in range(n_classes)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN, as intended
        return np.nanmean(per_class, axis=1)


def _ece_batch(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> np.ndarray:
    # Bins are (i/15, (i+1)/15]; sum_b |acc_b - conf_b| * n_b / n == sum_b |Σcorrect - Σconf| / n.
    b, n = gold.shape
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == gold).astype(float)
    bins = np.clip(np.ceil(conf * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
    flat = (np.arange(b)[:, None] * ECE_BINS + bins).ravel()
    size = b * ECE_BINS
    gap = np.bincount(flat, weights=(correct - conf).ravel(), minlength=size).reshape(b, ECE_BINS)
    return np.abs(gap).sum(axis=1) / n


# ------------------------------------------------------------------ metrics
def _one(batch: BatchFn, gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> float:
    return float(batch(np.asarray(gold)[None], np.asarray(probs, dtype=float)[None], classes, healthy_index)[0])


def accuracy(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> float:
    """Fraction of cases whose most probable option is the gold class."""
    return _one(_accuracy_batch, gold, probs, classes, healthy_index)


def balanced_accuracy(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> float:
    """Mean per-class recall: robust to the heavy healthy/abnormal imbalance of medical sets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # predicted classes absent from gold
        return float(balanced_accuracy_score(gold, np.asarray(probs).argmax(-1)))


def macro_f1(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> float:
    """Unweighted mean F1 over all task classes (absent classes count as 0)."""
    return float(
        f1_score(gold, np.asarray(probs).argmax(-1), labels=list(range(len(classes))), average="macro", zero_division=0)
    )


def auroc(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> float:
    """Threshold-free ranking quality.

    Binary tasks: AUROC of the abnormal class's probability. Multi-class: macro
    mean of one-vs-rest AUROCs over the classes that have both positives and
    negatives in gold. NaN when undefined (e.g. gold holds a single class), so a
    tiny or one-sided subset never reports a misleading 0.5 or 1.0.
    """
    gold = np.asarray(gold)
    probs = np.asarray(probs, dtype=float)
    n_classes = probs.shape[1]
    targets = [1 - healthy_index] if n_classes == 2 else list(range(n_classes))
    values = []
    for c in targets:
        positive = gold == c
        if positive.any() and not positive.all():
            values.append(roc_auc_score(positive, probs[:, c]))
    return float(np.mean(values)) if values else float("nan")


def ece(gold: np.ndarray, probs: np.ndarray, classes: Sequence[str], healthy_index: int) -> float:
    """Expected calibration error of the top-label confidence, 15 equal-width bins.

    Tells whether the option probabilities can be read as confidences, which
    matters when reference images shift the model's certainty but not its answer.
    """
    return _one(_ece_batch, gold, probs, classes, healthy_index)


METRICS.register("accuracy", MetricSpec(accuracy, "accuracy", batch=_accuracy_batch))
METRICS.register("balanced_accuracy", MetricSpec(balanced_accuracy, "balanced accuracy",
                                                 batch=_balanced_accuracy_batch))
METRICS.register("macro_f1", MetricSpec(macro_f1, "macro F1", batch=_macro_f1_batch))
METRICS.register("auroc", MetricSpec(auroc, "AUROC", batch=_auroc_batch))
METRICS.register("ece", MetricSpec(ece, "ECE", batch=_ece_batch, higher_is_better=False))


# ------------------------------------------------------------------ records
def to_arrays(
    records: Iterable[dict[str, Any]], classes: Sequence[str], healthy_class: str
) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """Gold indices ``int[n]``, probabilities ``float[n, C]`` in ``classes`` order, case ids, healthy index.

    Records without gold are skipped (unlabelled cases can be predicted but not
    scored). A record's probabilities are reordered by its ``options`` if those
    list the classes in another order; anything else inconsistent is an error.
    """
    classes = list(classes)
    if healthy_class not in classes:
        raise SeeInPairsError(f"healthy class '{healthy_class}' is not one of the classes {classes}")
    index = {c: i for i, c in enumerate(classes)}
    golds: list[int] = []
    rows: list[list[float]] = []
    case_ids: list[str] = []
    seen: set[str] = set()
    for rec in records:
        label = rec.get("gold")
        if label is None:
            continue
        case = str(rec.get("case_id", f"#{len(golds)}"))
        if "case_id" in rec:
            if case in seen:
                raise SeeInPairsError(f"case '{case}' appears twice in the records (records of two runs mixed?)")
            seen.add(case)
        if label not in index:
            raise SeeInPairsError(f"case '{case}': gold label '{label}' is not one of the classes {classes}")
        probs = list(rec.get("probabilities") or [])
        options = rec.get("options")
        if options is not None and list(options) != classes:
            if sorted(options) != sorted(classes) or len(probs) != len(options):
                raise SeeInPairsError(f"case '{case}': options {list(options)} do not match the classes {classes}")
            by_option = dict(zip(options, probs))
            probs = [by_option[c] for c in classes]
        if len(probs) != len(classes):
            raise SeeInPairsError(
                f"case '{case}': {len(probs)} probabilities for {len(classes)} classes {classes}"
            )
        golds.append(index[label])
        rows.append([float(p) for p in probs])
        case_ids.append(case)
    gold = np.asarray(golds, dtype=int)
    prob = np.asarray(rows, dtype=float).reshape(len(rows), len(classes))
    return gold, prob, case_ids, index[healthy_class]


def default_metric_names() -> list[str]:
    """All registered metric names (sorted), the default set for reports."""
    return METRICS.list_names()


def compute_metrics(
    records: Iterable[dict[str, Any]],
    classes: Sequence[str],
    healthy_class: str,
    metrics: Sequence[str] | None = None,
) -> dict[str, float]:
    """Score one condition's records; every metric is NaN when no record has gold."""
    names = list(metrics) if metrics is not None else default_metric_names()
    fns = {name: METRICS.get(name) for name in names}
    gold, probs, _, healthy_index = to_arrays(records, classes, healthy_class)
    if len(gold) == 0:
        return {name: float("nan") for name in names}
    return {name: float(fn(gold, probs, list(classes), healthy_index)) for name, fn in fns.items()}
