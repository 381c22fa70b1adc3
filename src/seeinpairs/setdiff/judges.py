"""Judges: does a hypothesis state the known difference? Scores 2 (matches set 1's condition),
1 (partly), 0 (no, or it describes set 2), and the acc@k figures built on them.

Registered by name (``create_judge``):

* ``lm`` -- a language model (any backend that generates) applies the 0/1/2
  rubric; a reply without a readable score counts 0 and is counted as a parse failure;
* ``embedding`` -- offline: sentence-embedding cosine similarity of the
  hypothesis with the set-1 condition (s1) and the set-2 condition (s2):
  2 when s1 >= ``match`` and s1 - s2 >= ``margin``; 1 when s1 >= ``partial``
  and s1 > s2; else 0. The thresholds are stated in every report.

acc@k of a pair is the best score among the top k ranked hypotheses divided by
2 (acc@1: the top hypothesis alone), averaged over pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..prompts import Request
from ..registry import Registry
from .inputs import SetDiffError, SetPair
from .parsing import parse_judge_score


@dataclass
class Judgement:
    """One hypothesis's score; ``parsed`` is False when the judge's reply had no readable score."""

    hypothesis: str
    score: int
    parsed: bool = True
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"hypothesis": self.hypothesis, "score": self.score, "parsed": self.parsed, "detail": self.detail}


class Judge(ABC):
    name: str = "base"

    @abstractmethod
    def judge(self, hypotheses: Sequence[str], pair: SetPair) -> list[Judgement]:
        """A judgement per hypothesis, in order."""

    def describe(self) -> str:
        """How this judge scores, for reports."""
        return self.name


JUDGES: Registry[Judge] = Registry("set-difference judge", expects=Judge, name_attribute="name")


def create_judge(name: str, **kwargs: Any) -> Judge:
    return JUDGES.create(name, **kwargs)


def list_judges(pattern: str = "*") -> list[str]:
    return JUDGES.list_names(pattern)


def _truth(pair: SetPair) -> tuple[str, str | None]:
    if pair.difference is None and pair.set1_condition is None:
        raise SetDiffError(f"pair '{pair.pair_id}': no ground truth to judge against (set1 condition or difference)")
    if pair.set1_condition is not None:
        return pair.set1_condition, pair.set2_condition
    return str(pair.difference), None


JUDGE_RUBRIC = (
    "Two groups of medical images were compared. Ground truth: {truth}\n"
    "Proposed difference (what group A shows more than group B): \"{hypothesis}\"\n"
    "Score it: 2 if it states group A's condition, 1 if it partly states it or is closely related, "
    "0 if it is unrelated or describes group B. Reply with the score only (0, 1 or 2)."
)


@JUDGES.register("lm")
class LanguageModelJudge(Judge):
    """The 0/1/2 rubric answered by a generating backend; unreadable replies score 0 and are counted."""

    name = "lm"

    def __init__(self, backend: Backend, rubric: str = JUDGE_RUBRIC, max_new_tokens: int = 8) -> None:
        self.backend = backend
        self.rubric = rubric
        self.max_new_tokens = max_new_tokens

    def _truth_text(self, pair: SetPair) -> str:
        set1, set2 = _truth(pair)
        if pair.set1_condition is None:
            return f"group A shows more {set1.strip()} than group B."
        text = f"group A shows {set1.strip()}"
        return text + (f"; group B shows {set2.strip()}." if set2 is not None else ".")

    def judge(self, hypotheses: Sequence[str], pair: SetPair) -> list[Judgement]:
        truth = self._truth_text(pair)
        requests = [Request([{"role": "user", "content": [{"type": "text", "text": self.rubric.format(
            truth=truth, hypothesis=h)}]}], [], []) for h in hypotheses]
        replies = self.backend.generate(requests, max_new_tokens=self.max_new_tokens) if requests else []
        out = []
        for hypothesis, reply in zip(hypotheses, replies):
            parsed = parse_judge_score(reply)
            out.append(Judgement(hypothesis, int(parsed.value) if parsed.ok else 0, parsed.ok, reply))
        return out

    def describe(self) -> str:
        return "language-model judge (0/1/2 rubric; unreadable replies score 0 and are counted)"


@JUDGES.register("embedding")
class EmbeddingJudge(Judge):
    """Offline rubric by sentence-embedding similarity (see the module docstring for the rule)."""

    name = "embedding"

    def __init__(self, match: float = 0.8, partial: float = 0.7, margin: float = 0.02, model: str | None = None,
                 embedder: Any = None) -> None:
        if not 0 <= partial <= match <= 1:
            raise SetDiffError(f"embedding judge: need 0 <= partial ({partial}) <= match ({match}) <= 1")
        self.match, self.partial, self.margin = match, partial, margin
        self.model = model
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from ..embeddings.text import DEFAULT_TEXT_MODEL, get_text_embedder

            self._embedder = get_text_embedder(self.model or DEFAULT_TEXT_MODEL)
        return self._embedder

    def judge(self, hypotheses: Sequence[str], pair: SetPair) -> list[Judgement]:
        if not hypotheses:
            return []
        set1, set2 = _truth(pair)
        truths = [set1] + ([set2] if set2 is not None else [])
        sims = self.embedder.similarity(list(hypotheses), truths)
        out = []
        for hypothesis, row in zip(hypotheses, sims):
            s1 = float(row[0])
            s2 = float(row[1]) if len(row) > 1 else -1.0
            if s1 >= self.match and s1 - s2 >= self.margin:
                score = 2
            elif s1 >= self.partial and s1 > s2:
                score = 1
            else:
                score = 0
            out.append(Judgement(hypothesis, score, True, f"s1={s1:.3f} s2={s2:.3f}"))
        return out

    def describe(self) -> str:
        return (f"sentence-embedding judge: cosine s1 with the set-1 condition, s2 with the set-2 condition; "
                f"2 if s1 >= {self.match} and s1 - s2 >= {self.margin}; 1 if s1 >= {self.partial} and s1 > s2; else 0")


# ----- accuracy over pairs ---------------------------------------------------------------------------------------
def acc_at(scores: Sequence[int], k: int | None) -> float:
    """Best score among the first ``k`` (all when ``None``) divided by 2; 0 for no hypotheses."""
    top = list(scores)[: k if k is not None else len(scores)]
    return max(top) / 2.0 if top else 0.0


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval over pairs (resampling pairs)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, array.size, size=(n_boot, array.size))
    means = array[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(array.mean()), float(lo), float(hi)


def expected_random_acc(scores: Sequence[int], k: int | None) -> float:
    """acc@k expected when the hypotheses are ranked uniformly at random (exact, no sampling).

    The top k of a random order is a uniform k-subset, so P(best >= s) = 1 - C(n - m_s, k) / C(n, k)
    with m_s the number of hypotheses scoring at least s; acc@k = E[best] / 2 = sum_s P(best >= s) / 2.
    """
    from math import comb

    n = len(scores)
    if n == 0:
        return 0.0
    k = n if k is None else min(k, n)
    total = comb(n, k)
    return sum(1 - comb(n - sum(v >= s for v in scores), k) / total for s in (1, 2)) / 2.0
