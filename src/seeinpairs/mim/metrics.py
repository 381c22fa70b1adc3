"""Scoring multi-image QA: letter extraction, open-ended text metrics, per-group accuracy with CIs.

Multiple-choice items are scored by option log-likelihood (no parsing) or, as
an alternative, by parsing a generated answer; :func:`extract_letter` reads the
letter robustly and the parse-failure rate is reported beside the accuracy.

Open-ended items have no published metric in Med-MIM, so several labelled ones
are offered through :data:`OPEN_METRICS`: ``bleu`` (sacrebleu sentence BLEU,
0-100), ``rouge_l`` (rouge-score ROUGE-L F1), ``embedding`` (cosine similarity
of all-MiniLM-L6-v2 sentence embeddings, offline) and ``llm_judge`` (a judge
backend's probability that the answer agrees with the reference). Each reads
differently; none is the paper's.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..registry import Registry
from .format import LETTERS

_LEADING = re.compile(r"^\W*\(?([A-Z])\)?(?:\s*[:.)\]]|\s|$)")
_STATED = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)
_ALONE = re.compile(r"(?<![A-Za-z])\(?([A-Z])\)?(?![A-Za-z])")


def extract_letter(text: str, options: Sequence[str]) -> str | None:
    """The option letter a generated answer chooses, or None when it cannot be read.

    In order: a leading letter (``"C"``, ``"C: ..."``, ``"(C)"``), a stated one (``"the answer
    is C"``), the one option whose text the answer contains (longest match, when unique), and a
    lone capital letter among the valid ones when exactly one appears.
    """
    valid = LETTERS[:len(options)]
    text = text.strip()
    if not text or not valid:
        return None
    match = _LEADING.match(text)
    if match and match[1] in valid and not (match[1] in ("A", "I") and re.match(r"^(A|I)\s+[a-z]", text)):
        return match[1]
    match = _STATED.search(text)
    if match and match[1].upper() in valid:
        return match[1].upper()
    lowered = text.lower()
    hits = [(len(o), LETTERS[i]) for i, o in enumerate(options) if o.strip() and o.strip().lower() in lowered]
    if hits:
        hits.sort(reverse=True)
        if len(hits) == 1 or hits[0][0] > hits[1][0]:
            return hits[0][1]
    alone = {m for m in _ALONE.findall(text) if m in valid and m not in ("A", "I")}
    if len(alone) == 1:
        return alone.pop()
    return None


def letter_text_mismatch(text: str, options: Sequence[str]) -> float:
    """1.0 when an answer starts with one option's letter but goes on with another option's text
    (``"B: the first image"`` while A is "the first image"), 0.0 when they agree, NaN when either
    part is missing. A model can learn the content of the answer before the letter that names it;
    this rate shows it."""
    valid = LETTERS[:len(options)]
    match = _LEADING.match(text.strip())
    if not match or match[1] not in valid:
        return float("nan")
    rest = text.strip()[match.end():].strip().lower()
    hits = [i for i, o in enumerate(options) if o.strip() and rest.startswith(o.strip().lower())]
    if not hits:
        return float("nan")
    best = max(hits, key=lambda i: len(options[i]))
    return float(LETTERS[best] != match[1])


# ----- open-ended metrics --------------------------------------------------------------------------------
OpenMetric = Callable[[Sequence[str], Sequence[str]], np.ndarray]
OPEN_METRICS: Registry[OpenMetric] = Registry("open-ended metric")


def _text_extra(module: str):
    """Import a module of the ``text`` extra, or a one-line error saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"open-ended metrics need the text extra: pip install 'seeinpairs[text]' "
                          f"({module} is missing)") from None


@OPEN_METRICS.register("bleu")
def _bleu(**_: Any) -> OpenMetric:
    """sacrebleu sentence BLEU of each prediction against its reference (0-100)."""
    sacrebleu = _text_extra("sacrebleu")

    def score(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        return np.array([sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(predictions, references)])
    return score


@OPEN_METRICS.register("rouge_l")
def _rouge_l(**_: Any) -> OpenMetric:
    """ROUGE-L F-measure of each prediction against its reference (stemmed)."""
    rouge_scorer = _text_extra("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def score(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        return np.array([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)])
    return score


@OPEN_METRICS.register("embedding")
def _embedding(model: str | None = None, **_: Any) -> OpenMetric:
    """Cosine similarity of the text embeddings of prediction and reference."""
    from ..embeddings.text import DEFAULT_TEXT_MODEL, get_text_embedder

    embedder = get_text_embedder(model or DEFAULT_TEXT_MODEL)

    def score(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        if not predictions:
            return np.zeros(0)
        return np.einsum("ij,ij->i", embedder.encode(list(predictions)), embedder.encode(list(references)))
    return score


JUDGE_PROMPT = ("Reference answer: {reference}\nCandidate answer: {prediction}\n"
                "Does the candidate answer mean the same as the reference answer? Answer yes or no.")


@OPEN_METRICS.register("llm_judge")
def _llm_judge(backend=None, **_: Any) -> OpenMetric:
    """P("yes") from a judge backend's option scores over ("yes", "no"): any backend can judge."""
    from ..backends.base import option_probabilities
    from ..errors import ConfigError
    from ..prompts import Request

    if backend is None:
        raise ConfigError("open-ended metric 'llm_judge' needs a judge backend")

    def score(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        requests = [Request([{"role": "user", "content": [{"type": "text", "text": JUDGE_PROMPT.format(
            reference=r, prediction=p)}]}], [], ["yes", "no"]) for p, r in zip(predictions, references)]
        scores = backend.score_options(requests) if requests else []
        return np.array([option_probabilities(s)[0] for s in scores])
    return score


def open_metric_names(judge: bool = False) -> list[str]:
    """The metrics computed by default (``llm_judge`` only when a judge backend is given)."""
    return [n for n in OPEN_METRICS.list_names() if judge or n != "llm_judge"]


def score_open(predictions: pd.DataFrame, metrics: Sequence[str] | None = None, **options: Any) -> pd.DataFrame:
    """Add one column per open-ended metric (``open_<name>``) to the open-ended rows."""
    frame = predictions.copy()
    rows = frame["open"].astype(bool)
    names = list(metrics) if metrics is not None else open_metric_names("backend" in options)
    for name in names:
        column = f"open_{name}"
        frame[column] = np.nan
        if rows.any():
            fn = OPEN_METRICS.create(name, **options)
            frame.loc[rows, column] = fn(frame.loc[rows, "text"].fillna("").tolist(),
                                         frame.loc[rows, "answer"].tolist())
    return frame


# ----- summaries --------------------------------------------------------------------------------------------
def mean_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """95% percentile-bootstrap interval of a mean over items (NaN when there are none)."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, array.size, size=(n_boot, array.size))
    lo, hi = np.quantile(array[draws].mean(axis=1), [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


GROUPS = (("all", None), ("split", "split"), ("subset", "subset"), ("dataset", "dataset"))


def summarise(predictions: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Accuracy of multiple-choice items per split, ability/held-out set and source data set.

    Columns: ``level``, ``group``, ``n``, ``accuracy`` with ``accuracy_lo``/``accuracy_hi``
    (95% percentile bootstrap over items), ``chance`` (mean of 1 / number of options),
    ``parse_failure_rate`` (generate-and-parse only), and for open-ended items ``n_open`` and the
    mean of each ``open_*`` metric with its interval. ``level == "macro"`` rows average the
    subsets of a split with equal weight (as benchmark tables do).
    """
    rows: list[dict[str, Any]] = []
    open_columns = [c for c in predictions.columns if c.startswith("open_")]
    for level, column in GROUPS:
        groups = [("all", predictions)] if column is None else list(predictions.groupby(column, sort=True))
        for name, frame in groups:
            rows.append(_row(level, str(name), frame, open_columns, n_boot, seed))
    for split, frame in predictions.groupby("split", sort=True):
        per_subset = [_row("subset", s, f, [], n_boot, seed) for s, f in frame.groupby("subset", sort=True)]
        accuracies = [r["accuracy"] for r in per_subset if r["n"]]
        if accuracies:
            rows.append({"level": "macro", "group": str(split), "n": int(sum(r["n"] for r in per_subset)),
                         "accuracy": float(np.mean(accuracies)),
                         "chance": float(np.mean([r["chance"] for r in per_subset if r["n"]]))})
    return pd.DataFrame(rows)


def _row(level: str, group: str, frame: pd.DataFrame, open_columns: Sequence[str], n_boot: int,
         seed: int) -> dict[str, Any]:
    mc = frame[~frame["open"].astype(bool)]
    row: dict[str, Any] = {"level": level, "group": group, "n": len(mc)}
    if len(mc):
        correct = mc["correct"].astype(float).to_numpy()
        lo, hi = mean_ci(correct, n_boot=n_boot, seed=seed)
        row.update(accuracy=float(correct.mean()), accuracy_lo=lo, accuracy_hi=hi,
                   chance=float((1.0 / mc["n_options"]).mean()))
        if "parse_failed" in mc and mc["parse_failed"].notna().any():
            row["parse_failure_rate"] = float(mc["parse_failed"].astype(float).mean())
        if "letter_text_mismatch" in mc and mc["letter_text_mismatch"].notna().any():
            row["letter_text_mismatch_rate"] = float(mc["letter_text_mismatch"].dropna().astype(float).mean())
    opened = frame[frame["open"].astype(bool)]
    row["n_open"] = len(opened)
    for column in open_columns:
        values = opened[column].dropna().astype(float).to_numpy()
        if len(values):
            lo, hi = mean_ci(values, n_boot=n_boot, seed=seed)
            row.update({column: float(values.mean()), f"{column}_lo": lo, f"{column}_hi": hi})
    return row


def paired_difference(full: pd.DataFrame, reduced: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Accuracy of ``full`` minus ``reduced`` on the same multiple-choice items (matched by ``uid``),
    per subset, per split and overall, with a paired 95% bootstrap interval over items.

    Used for the single-image ablation: pairing removes item difficulty from the comparison, so
    the interval is about seeing the images together, not about which items were drawn.
    """
    columns = ["uid", "split", "subset", "correct"]
    merged = full[~full["open"].astype(bool)][columns].merge(
        reduced[~reduced["open"].astype(bool)][["uid", "correct"]], on="uid", suffixes=("_full", "_reduced"))
    merged["delta"] = merged["correct_full"].astype(float) - merged["correct_reduced"].astype(float)
    rows = []
    groups = [("all", "all", merged)] + [("split", str(k), f) for k, f in merged.groupby("split", sort=True)] + \
        [("subset", str(k), f) for k, f in merged.groupby("subset", sort=True)]
    for level, group, frame in groups:
        lo, hi = mean_ci(frame["delta"].to_numpy(), n_boot=n_boot, seed=seed)
        rows.append({"level": level, "group": group, "n": len(frame),
                     "delta": float(frame["delta"].mean()) if len(frame) else float("nan"),
                     "delta_lo": lo, "delta_hi": hi})
    return pd.DataFrame(rows)
