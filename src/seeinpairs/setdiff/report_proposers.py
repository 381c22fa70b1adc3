"""Report-guided proposers and the feedback that drives refinement rounds (RadDiff's report reasoning
and iterative refinement).

Registered in the proposer registry (``create_proposer``):

* ``reports_lm`` -- per sampled round, the findings/impression of set A's and set B's reports (trimmed
  to a budget; optionally beside image grids for a vision backend) go to any generating backend,
  which replies with hypotheses as JSON, as the other proposers do;
* ``report_contrast`` -- extractive, needs no model: word n-grams (negated clauses removed) that
  occur in a larger share of set A's reports than of set B's, so the offline benchmark can measure
  what report guidance buys.

Both refine: round r+1 gets a :class:`RoundFeedback` (round r's top hypotheses with their ranking
scores, and counter-examples: set-B images that score high, set-A images that score low). The LM
sees them in its prompt; the extractive proposer re-weights the counter-examples' reports and
proposes phrases it has not proposed before.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..backends.base import Backend
from ..imaging import load_image
from .inputs import SetPair
from .proposers import (
    DIFFERENCE_INSTRUCTION,
    Proposal,
    Proposer,
    one_turn_request,
    collect_proposal,
    image_grid,
    sample_rounds,
)
from .reports import report_sections


@dataclass
class RoundFeedback:
    """What round ``round`` found: ``scored`` (hypothesis, ranking score such as AUROC) best first, and
    counter-example image indices: ``set2_high`` (set-B images the top hypotheses fit) and
    ``set1_low`` (set-A images they miss)."""

    round: int
    scored: list[tuple[str, float]]
    set1_low: list[int] = field(default_factory=list)
    set2_high: list[int] = field(default_factory=list)

    @classmethod
    def from_ranking(cls, round_no: int, ranked: Sequence[Any], top: int = 5, examples_of: int = 3) -> RoundFeedback:
        """From ranked hypotheses (:class:`~.rankers.RankedHypothesis`): the ``top`` best with AUROC, and the
        least typical set-A / most typical set-B images of the best ``examples_of`` of them."""
        set1_low: list[int] = []
        set2_high: list[int] = []
        for hypothesis in ranked[:examples_of]:
            set1_low += hypothesis.examples.get("set1_least", [])
            set2_high += hypothesis.examples.get("set2_most", [])
        return cls(round_no, [(h.text, float(h.auroc)) for h in ranked[:top]],
                   list(dict.fromkeys(set1_low)), list(dict.fromkeys(set2_high)))


class RefiningProposer(Proposer):
    """A proposer that can run further rounds from a :class:`RoundFeedback`."""

    @abstractmethod
    def refine(self, pair: SetPair, feedback: RoundFeedback, seed: int = 0) -> Proposal:
        """Sharper hypotheses for ``pair`` given the previous round's scores and counter-examples."""


def _reports(pair: SetPair, side: int, indices: Sequence[int], budget: int) -> list[str]:
    image_set = pair.set1 if side == 1 else pair.set2
    return [report_sections(image_set.reports[i], budget) for i in indices if image_set.reports[i] is not None]


#: the report-guided prompt, in one place: reports of both sets, then (from round 2) the feedback
REPORT_PROMPT = ("Radiology reports (findings and impression) of studies from set A:\n{set1}\n"
                 "Radiology reports of studies from set B:\n{set2}\n{images}{feedback}{instruction}")
FEEDBACK_PROMPT = ("Hypotheses of the previous round, with how well each separates the sets (AUROC: 1 = every set A "
                   "image fits better than every set B image, 0.5 = no separation):\n{scored}\n"
                   "Set B studies the best hypotheses wrongly fit:\n{set2_high}\n"
                   "Set A studies they miss:\n{set1_low}\n"
                   "Propose sharper differences that hold for these studies too.\n")


def _listed(texts: Sequence[str]) -> str:
    return "\n".join(f"- {t}" for t in texts) if texts else "- (no report)"


class ReportLMProposer(RefiningProposer):
    """Sampled reports of both sets (and image grids with ``with_images``) to a generating backend.

    ``budget``: characters kept of each report's findings and impression, so that
    ``sample_size`` reports per set fit the model's context.
    """

    name = "reports_lm"

    def __init__(self, model: Backend, sample_size: int = 20, rounds: int = 3, budget: int = 400,
                 n_differences: tuple[int, int] = (5, 10), with_images: bool = False, cell: int = 96,
                 max_new_tokens: int = 160, n_counter_examples: int = 3,
                 image_loader: Callable[[str], Image.Image] = load_image) -> None:
        self.model = model
        self.sample_size, self.rounds = sample_size, rounds
        self.budget = budget
        self.n_differences = n_differences
        self.with_images, self.cell = with_images, cell
        self.max_new_tokens = max_new_tokens
        self.n_counter_examples = n_counter_examples
        self.load = image_loader

    def _request(self, pair: SetPair, idx1: Sequence[int], idx2: Sequence[int], feedback: str) -> Any:
        text = REPORT_PROMPT.format(
            set1=_listed(_reports(pair, 1, idx1, self.budget)), set2=_listed(_reports(pair, 2, idx2, self.budget)),
            images="The images of the sampled studies follow: set A, then set B.\n" if self.with_images else "",
            feedback=feedback,
            instruction=DIFFERENCE_INSTRUCTION.format(low=self.n_differences[0], high=self.n_differences[1]))
        if not self.with_images:
            return one_turn_request([text])
        grids = [image_grid([self.load(s.images[i]) for i in idx], cell=self.cell)
                 for s, idx in ((pair.set1, idx1), (pair.set2, idx2))]
        return one_turn_request([text, "Set A:", None, "Set B:", None], grids)

    def _samples(self, pair: SetPair, seed: int, salt: str) -> list[tuple[list[int], list[int]]]:
        return list(zip(sample_rounds(pair.set1, self.sample_size, self.rounds, seed, f"{pair.pair_id}:1{salt}"),
                        sample_rounds(pair.set2, self.sample_size, self.rounds, seed, f"{pair.pair_id}:2{salt}")))

    def propose(self, pair: SetPair, seed: int = 0) -> Proposal:
        requests = [self._request(pair, i1, i2, "") for i1, i2 in self._samples(pair, seed, "")]
        return collect_proposal(self.model.generate(requests, max_new_tokens=self.max_new_tokens), len(requests))

    def refine(self, pair: SetPair, feedback: RoundFeedback, seed: int = 0) -> Proposal:
        k = self.n_counter_examples
        text = FEEDBACK_PROMPT.format(
            scored="\n".join(f"- {t} (AUROC {s:.2f})" for t, s in feedback.scored) or "- none",
            set2_high=_listed(_reports(pair, 2, feedback.set2_high[:k], self.budget)),
            set1_low=_listed(_reports(pair, 1, feedback.set1_low[:k], self.budget)))
        salt = f":round{feedback.round + 1}"
        requests = [self._request(pair, i1, i2, text) for i1, i2 in self._samples(pair, seed, salt)]
        return collect_proposal(self.model.generate(requests, max_new_tokens=self.max_new_tokens), len(requests))


# ----- extractive: n-grams that separate the sets' reports -----------------------------------------------------
#: a negation cue and the rest of its sentence, lists included: "no focal consolidation, pleural effusion or
#: pneumothorax", "without focal consolidation"
NEGATED = re.compile(r"\b(?:no|not|without|negative for|free of|resolved|clear of)\b[^.;:]*", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.;:\n]+")


def affirmed(text: str) -> str:
    """The report with negated clauses removed (a lite NegEx): "no effusion" must not count as "effusion"."""
    return NEGATED.sub(" ", text)


class ReportContrastProposer(RefiningProposer):
    """Word 1-3-grams whose share of set-A reports exceeds their share of set-B reports, as hypotheses.

    Negated clauses are removed first (:func:`affirmed`); n-grams that start or end with a stop word
    are skipped, and so is a phrase whose words all lie in a phrase already chosen (the longer,
    more specific phrase is kept when it separates as well). A phrase needs ``min_support`` of
    set A's reports. Refinement weights the counter-examples' reports ``counter_weight`` times and
    proposes phrases not proposed before. Needs no language model.
    """

    name = "report_contrast"

    def __init__(self, n_hypotheses: int = 10, ngram_range: tuple[int, int] = (1, 3), min_support: float = 0.2,
                 counter_weight: float = 3.0, budget: int = 600) -> None:
        self.n_hypotheses = n_hypotheses
        self.ngram_range = ngram_range
        self.min_support = min_support
        self.counter_weight = counter_weight
        self.budget = budget
        self._proposed: dict[str, set[str]] = {}

    def _contrast(self, pair: SetPair, weights1: np.ndarray, weights2: np.ndarray,
                  exclude: set[str]) -> list[str]:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

        texts, side, weights = [], [], []
        for number, image_set, w in ((1, pair.set1, weights1), (2, pair.set2, weights2)):
            for report, weight in zip(image_set.reports, w):
                if report is not None:
                    texts.append(affirmed(report_sections(report, self.budget)).lower())
                    side.append(number)
                    weights.append(weight)
        side_arr, weight_arr = np.array(side), np.array(weights, dtype=np.float64)
        if not (side_arr == 1).any() or not (side_arr == 2).any():
            return []
        words = CountVectorizer(ngram_range=self.ngram_range, token_pattern=r"(?u)\b[a-z][a-z]+\b").build_analyzer()
        # n-grams within a sentence only: "... lung. The heart ..." must not yield "lung the heart"
        vectorizer = CountVectorizer(binary=True, analyzer=lambda doc: [g for part in SENTENCE_END.split(doc)
                                                                        for g in words(part)])
        try:
            counts = vectorizer.fit_transform(texts)
        except ValueError:  # no words at all (every report negated away or empty)
            return []
        present = counts.toarray().astype(np.float64)
        share = {}
        for number in (1, 2):
            mask = side_arr == number
            share[number] = (present[mask] * weight_arr[mask, None]).sum(0) / weight_arr[mask].sum()
        support1 = present[side_arr == 1].mean(0)
        difference = share[1] - share[2]
        names = vectorizer.get_feature_names_out()
        order = sorted(range(len(names)), key=lambda i: (-difference[i], -len(names[i].split()), names[i]))
        chosen: list[str] = []
        for i in order:
            if len(chosen) >= self.n_hypotheses or difference[i] <= 0:
                break
            phrase = str(names[i])
            words = phrase.split()
            if support1[i] < self.min_support or phrase in exclude:
                continue
            if words[0] in ENGLISH_STOP_WORDS or words[-1] in ENGLISH_STOP_WORDS:
                continue
            if any(set(words) <= set(c.split()) for c in chosen):
                continue
            chosen.append(phrase)
        return chosen

    def propose(self, pair: SetPair, seed: int = 0) -> Proposal:
        hypotheses = self._contrast(pair, np.ones(len(pair.set1)), np.ones(len(pair.set2)), set())
        self._proposed[pair.pair_id] = set(hypotheses)
        return Proposal(hypotheses)

    def refine(self, pair: SetPair, feedback: RoundFeedback, seed: int = 0) -> Proposal:
        weights1, weights2 = np.ones(len(pair.set1)), np.ones(len(pair.set2))
        weights1[[i for i in feedback.set1_low if i < len(weights1)]] = self.counter_weight
        weights2[[i for i in feedback.set2_high if i < len(weights2)]] = self.counter_weight
        before = self._proposed.setdefault(pair.pair_id, set()) | {t for t, _ in feedback.scored}
        hypotheses = self._contrast(pair, weights1, weights2, before)
        self._proposed[pair.pair_id] = before | set(hypotheses)
        return Proposal(hypotheses)
