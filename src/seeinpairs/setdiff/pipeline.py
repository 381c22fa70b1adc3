"""The set-difference pipeline: propose, deduplicate, rank, (refine, rank again), judge.

Proposals are made once per pair and shared by every ranker given, so a
comparison of rankers (the model against random ranking and against the
ground-truth ranking) differs in the ranking alone. With a ``refiner`` (the
zoom iteration) the second iteration starts from the first ranker's top
hypotheses and the refined candidates join the shared list. With ``rounds`` > 1 a
:class:`~.report_proposers.RefiningProposer` runs further rounds: round r+1 sees round r's top
hypotheses under the first ranker, with their AUROC and counter-examples, and its new hypotheses
join the pool; every round's ranking is judged and recorded (:attr:`PairOutcome.rounds`,
:meth:`SetDiffRun.round_summary`), so what each extra round buys is measurable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import FileSet
from ..runtime import environment_record
from .inputs import SetDiffError, SetPair
from .judges import Judge, Judgement, acc_at, bootstrap_mean_ci, expected_random_acc
from .proposers import Proposal, Proposer, ZoomRefinementProposer, deduplicate
from .rankers import RankedHypothesis, Ranker
from .report_proposers import RefiningProposer, RoundFeedback

#: the summary's row for acc@k expected under a uniformly random ranking
CHANCE = "chance (exact)"


@dataclass
class PairOutcome:
    """One pair under one ranking method: ranked hypotheses and their judgements (same order)."""

    pair_id: str
    method: str
    difficulty: str | None
    truth: dict[str, str | None]
    ranked: list[RankedHypothesis]
    judgements: list[Judgement]
    n_proposed: int = 0
    proposal_parse_failures: int = 0
    #: per round: ``round``, ``n_hypotheses``, ``new`` (hypotheses first proposed that round), ``top``
    #: (best five with AUROC and judge score), ``scores`` (judge scores in ranked order), acc@1/@5/@N
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scores(self) -> list[int]:
        return [j.score for j in self.judgements]

    def acc(self, k: int | None) -> float:
        return acc_at(self.scores, k)

    @property
    def judge_parse_failures(self) -> int:
        return sum(not j.parsed for j in self.judgements)

    def to_dict(self) -> dict[str, Any]:
        return {"pair_id": self.pair_id, "method": self.method, "difficulty": self.difficulty, "truth": self.truth,
                "n_proposed": self.n_proposed, "proposal_parse_failures": self.proposal_parse_failures,
                "rounds": self.rounds,
                "ranked": [{**r.to_dict(), **{"judge_" + k: v for k, v in j.to_dict().items() if k != "hypothesis"}}
                           for r, j in zip(self.ranked, self.judgements)]}


@dataclass
class SetDiffRun:
    """All outcomes of one run, with the judge's rule and the settings that produced them."""

    outcomes: list[PairOutcome]
    judge: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(o.method for o in self.outcomes))

    def summary(self, ks: Sequence[int | None] = (1, 5, None), n_boot: int = 2000, seed: int = 0,
                chance: bool = True) -> pd.DataFrame:
        """acc@k mean and 95% bootstrap CI over pairs, per method, overall and per difficulty.

        ``chance`` adds the method ``chance (exact)``: acc@k expected under a uniformly random
        ranking of the same judged hypotheses (:func:`~.judges.expected_random_acc`), computed
        from the first method's judgements (the judge scores a hypothesis whatever its rank).
        """
        groups: list[tuple[str, list[PairOutcome], Any]] = [
            (m, [o for o in self.outcomes if o.method == m], PairOutcome.acc) for m in self.methods]
        if chance and self.outcomes:
            groups.append((CHANCE, [o for o in self.outcomes if o.method == self.methods[0]],
                           lambda o, k: expected_random_acc(o.scores, k)))
        rows = []
        for method, chosen, value in groups:
            levels = sorted({o.difficulty for o in chosen if o.difficulty}, key=_difficulty_order)
            for level in ["all", *levels]:
                subset = chosen if level == "all" else [o for o in chosen if o.difficulty == level]
                row: dict[str, Any] = {"method": method, "difficulty": level, "n_pairs": len(subset)}
                for k in ks:
                    name = f"acc@{k}" if k is not None else "acc@N"
                    mean, lo, hi = bootstrap_mean_ci([value(o, k) for o in subset], n_boot=n_boot, seed=seed)
                    row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
                row["mean_hypotheses"] = sum(len(o.ranked) for o in subset) / max(1, len(subset))
                row["judge_parse_failures"] = sum(o.judge_parse_failures for o in subset)
                row["proposal_parse_failures"] = sum(o.proposal_parse_failures for o in subset)
                rows.append(row)
        return pd.DataFrame(rows)

    def round_summary(self, ks: Sequence[int | None] = (1, 5, None), n_boot: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
        """acc@k mean and 95% bootstrap CI over pairs per method and refinement round, with exact
        chance per round (from the first method's judged hypotheses of that round)."""
        rows = []
        first = self.methods[0] if self.methods else None
        n_rounds = max((len(o.rounds) for o in self.outcomes), default=0)
        for method in [*self.methods, CHANCE]:
            source = first if method == CHANCE else method
            chosen = [o for o in self.outcomes if o.method == source]
            for number in range(1, n_rounds + 1):
                records = [o.rounds[number - 1] for o in chosen if len(o.rounds) >= number]
                row: dict[str, Any] = {"method": method, "round": number, "n_pairs": len(records)}
                for k in ks:
                    name = f"acc@{k}" if k is not None else "acc@N"
                    values = ([expected_random_acc(r["scores"], k) for r in records] if method == CHANCE
                              else [acc_at(r["scores"], k) for r in records])
                    mean, lo, hi = bootstrap_mean_ci(values, n_boot=n_boot, seed=seed)
                    row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
                row["mean_hypotheses"] = sum(r["n_hypotheses"] for r in records) / max(1, len(records))
                rows.append(row)
        return pd.DataFrame(rows)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``outcomes.jsonl`` (everything, one line per pair and method), ``summary.csv`` and ``run.json``
        (judge, settings and where it was computed); ``rounds.csv`` (:meth:`round_summary`) after
        more than one round."""
        out = Path(out_dir)
        paths = {"outcomes": out / "outcomes.jsonl", "summary": out / "summary.csv", "run": out / "run.json"}
        if any(len(o.rounds) > 1 for o in self.outcomes):
            paths["rounds"] = out / "rounds.csv"
        with FileSet(out, "setdiff-results") as files:  # a kill leaves the old files or the new ones
            if "rounds" in paths:
                self.round_summary().to_csv(files.path(paths["rounds"].name), index=False)
            with open(files.path(paths["outcomes"].name), "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(outcome.to_dict(), default=_json_default) + "\n"
                                  for outcome in self.outcomes)
            self.summary().to_csv(files.path(paths["summary"].name), index=False)
            files.path(paths["run"].name).write_text(json.dumps({"judge": self.judge, "settings": self.settings,
                                                                 "environment": environment_record()},
                                                                indent=2, default=_json_default))
        return paths


def _difficulty_order(level: str) -> tuple[int, str]:
    order = {"easy": 0, "medium": 1, "hard": 2}
    return (order.get(level, 3), level)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def propose_candidates(pair: SetPair, proposer: Proposer, seed: int = 0, dedup_threshold: float | None = 0.9,
                       embedder: Any = None) -> Proposal:
    """Iteration 1: the proposer's hypotheses, near-duplicates merged."""
    proposal = proposer.propose(pair, seed)
    if dedup_threshold is not None:
        proposal.hypotheses = deduplicate(proposal.hypotheses, embedder, dedup_threshold)
    return proposal


class _RoundScoreCache(Ranker):
    """Scores each hypothesis once per pair across refinement rounds: a later round scores only its new
    hypotheses (a VLM ranker's cost grows with the new ones, not with the pool)."""

    def __init__(self, ranker: Ranker) -> None:
        self.inner = ranker
        self.name = ranker.name
        self._images: tuple[str, ...] = ()
        self._rows: dict[str, np.ndarray] = {}

    def score(self, hypotheses, images, metadata) -> np.ndarray:
        if tuple(images) != self._images:
            self._images, self._rows = tuple(images), {}
        missing = [h for h in dict.fromkeys(hypotheses) if h not in self._rows]
        if missing:
            self._rows.update(zip(missing, np.asarray(self.inner.score(missing, images, metadata), dtype=np.float64)))
        return np.array([self._rows[h] for h in hypotheses])


def _round_record(number: int, ranked: Sequence[RankedHypothesis], judgements: Sequence[Judgement],
                  new: Sequence[str]) -> dict[str, Any]:
    scores = [j.score for j in judgements]
    return {"round": number, "n_hypotheses": len(ranked), "new": list(new),
            "top": [{"text": r.text, "auroc": r.auroc, "judge_score": j.score}
                    for r, j in zip(ranked[:5], judgements[:5])],
            "scores": scores, "acc@1": acc_at(scores, 1), "acc@5": acc_at(scores, 5), "acc@N": acc_at(scores, None)}


def run_setdiff(pairs: Sequence[SetPair], proposer: Proposer, rankers: Mapping[str, Ranker], judge: Judge,
                refiner: ZoomRefinementProposer | None = None, refine_top: int = 10, seed: int = 0,
                dedup_threshold: float | None = 0.9, embedder: Any = None, n_examples: int = 3,
                progress: Any = None, rounds: int = 1, feedback_top: int = 5) -> SetDiffRun:
    """Describe each pair's difference with every ranker on shared proposals, and judge the rankings.

    ``rounds`` > 1 needs a proposer that refines (:class:`~.report_proposers.RefiningProposer`); the
    feedback of each round comes from the first ranker (``feedback_top`` hypotheses with their AUROC,
    and the counter-examples of the best three), and the outcomes hold the last round.
    """
    if not rankers:
        raise ValueError("run_setdiff needs at least one ranker")
    if rounds < 1:
        raise SetDiffError(f"rounds: {rounds} (need at least 1)")
    if rounds > 1 and not isinstance(proposer, RefiningProposer):
        raise SetDiffError(f"proposer '{proposer.name}' does not refine; rounds > 1 need one of: reports_lm, "
                           "report_contrast")
    names = {m: r.name for m, r in rankers.items()}
    if rounds > 1:
        rankers = {m: _RoundScoreCache(r) for m, r in rankers.items()}
    outcomes: list[PairOutcome] = []
    for pair in pairs:
        proposal = propose_candidates(pair, proposer, seed, dedup_threshold, embedder)
        first = next(iter(rankers.values()))
        if refiner is not None:
            top = [r.text for r in first.rank(proposal.hypotheses, pair, n_examples)[:refine_top]]
            proposal = proposal.merged(refiner.refine(pair, top, seed))
            if dedup_threshold is not None:
                proposal.hypotheses = deduplicate(proposal.hypotheses, embedder, dedup_threshold)
        truth = {"set1": pair.set1_condition, "set2": pair.set2_condition, "difference": pair.difference}
        history: dict[str, list[dict[str, Any]]] = {m: [] for m in rankers}
        new = list(proposal.hypotheses)
        results: dict[str, tuple[list, list]] = {}  # this round's (ranking, judgements) by ranker
        for number in range(1, rounds + 1):
            if number > 1:  # the feedback is the first ranker's ranking of the previous round
                feedback = RoundFeedback.from_ranking(number - 1, next(iter(results.values()))[0], top=feedback_top)
                refined = proposer.refine(pair, feedback, seed)  # type: ignore[attr-defined]
                known = set(proposal.hypotheses)
                proposal = proposal.merged(refined)
                if dedup_threshold is not None:
                    proposal.hypotheses = deduplicate(proposal.hypotheses, embedder, dedup_threshold)
                new = [h for h in proposal.hypotheses if h not in known]
            results = {}
            for method, ranker in rankers.items():
                ranked = ranker.rank(proposal.hypotheses, pair, n_examples)
                judgements = judge.judge([r.text for r in ranked], pair)
                history[method].append(_round_record(number, ranked, judgements, new))
                results[method] = (ranked, judgements)
        for method, (ranked, judgements) in results.items():
            outcomes.append(PairOutcome(pair.pair_id, method, pair.difficulty, truth, ranked, judgements,
                                        len(proposal.hypotheses), proposal.parse_failures, history[method]))
        if progress is not None:
            progress(pair)
    settings = {"proposer": proposer.name, "rankers": names,
                "refiner": refiner.name if refiner is not None else None, "seed": seed,
                "dedup_threshold": dedup_threshold, "pairs": len(pairs), "rounds": rounds}
    return SetDiffRun(outcomes, judge.describe(), settings)
