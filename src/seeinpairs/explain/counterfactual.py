"""Does the model use its references? Swap them and watch the answer move.

For every query, the references chosen by the evaluation selector are
replaced, at the same k, by (a) other healthy references drawn at random and
(b) abnormal images drawn from the same bank split, never from the query's
patient. A model that compares should move toward "healthy" for an abnormal
query when the references become abnormal (the query no longer stands out),
and barely move when one healthy set replaces another; a model that ignores
its references moves in neither case. The change in P(healthy) and the
answer flip rate are reported per swap, split by the query's gold label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from ..backends.base import Backend, option_probabilities
from ..cases import Case, stable_digest
from ..errors import BankError
from ..prompts import PromptBuilder
from ..references.selectors import Selection

SWAPS = ("random_healthy", "abnormal")


def draw_references(pool: Sequence[Case], query: Case, k: int, rng: np.random.Generator,
                    exclude: Sequence[Case] = ()) -> list[Case]:
    """``k`` cases of ``pool`` without the query, its patient, its image files or ``exclude``."""
    banned = {c.case_id for c in exclude} | {query.case_id}
    files = set(query.images)
    eligible = [c for c in pool if c.case_id not in banned and not set(c.images) & files
                and (query.patient_id is None or c.patient_id != query.patient_id)]
    if len(eligible) < k:
        raise BankError(f"case '{query.case_id}': only {len(eligible)} eligible swap images for k={k}")
    return [eligible[int(i)] for i in rng.choice(len(eligible), size=k, replace=False)]


def reference_swap_test(backend: Backend, prompts: PromptBuilder, queries: Sequence[Case],
                        select: Callable[[Case], Selection], healthy_pool: Sequence[Case],
                        abnormal_pool: Sequence[Case], seed: int = 0) -> pd.DataFrame:
    """One row per (query, swap): P(healthy) with the selected and with the swapped references."""
    healthy = prompts.task.healthy_class
    rows, requests, meta = [], [], []
    for query in queries:
        selection = select(query)
        k = len(selection.references)
        if k == 0:
            continue
        rng = np.random.default_rng([seed, stable_digest(query.case_id), 7])
        swaps = {"random_healthy": draw_references(healthy_pool, query, k, rng, exclude=selection.references),
                 "abnormal": draw_references(abnormal_pool, query, k, rng)}
        requests.append(prompts.build(query, selection.references))
        meta.append((query, "original"))
        for name, references in swaps.items():
            requests.append(prompts.build(query, references))
            meta.append((query, name))
    scores = backend.score_options(requests) if requests else []
    options = prompts.options
    by_case: dict[str, dict[str, np.ndarray]] = {}
    for (query, name), values in zip(meta, scores):
        by_case.setdefault(query.case_id, {})[name] = option_probabilities(values)
    for query in queries:
        probs = by_case.get(query.case_id)
        if probs is None:
            continue
        original = probs["original"]
        for name in SWAPS:
            swapped = probs[name]
            rows.append({"case_id": query.case_id, "gold": query.label, "swap": name,
                         "p_healthy_original": float(original[options.index(healthy)]),
                         "p_healthy_swapped": float(swapped[options.index(healthy)]),
                         "delta_p_healthy": float(swapped[options.index(healthy)] - original[options.index(healthy)]),
                         "answer_changed": bool(np.argmax(swapped) != np.argmax(original))})
    return pd.DataFrame(rows, columns=["case_id", "gold", "swap", "p_healthy_original", "p_healthy_swapped",
                                       "delta_p_healthy", "answer_changed"])
