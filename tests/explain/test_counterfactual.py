"""The reference swap test on a model that can only answer by comparing with its reference."""

import numpy as np
import pytest
from explain_data import TASK

from seeinpairs.cases import case_rng
from seeinpairs.errors import BankError
from seeinpairs.explain.counterfactual import draw_references, reference_swap_test
from seeinpairs.prompts import PromptBuilder
from seeinpairs.references.bank import ReferenceBank
from seeinpairs.references.selectors import create_selector


def test_swapping_in_abnormal_references_moves_abnormal_queries_toward_healthy(calibration_model):
    """Abnormal = brighter than the site's healthy images. With abnormal references of the same site
    the abnormal query no longer stands out, so P(healthy) must rise; another healthy reference of the
    same site must change little. (A normal query shown with brighter references is a pairing the model
    never saw in training, so no direction is expected for it.)"""
    backend, table, _ = calibration_model
    bank = ReferenceBank.from_table(table, TASK, split="train")
    selector = create_selector("same_center", bank)
    prompts = PromptBuilder(TASK)
    frames = []
    for site in sorted({c.site for c in table}):
        queries = [c for c in table if c.split == "test" and c.site == site]
        healthy = [c for c in bank if c.site == site]
        abnormal = [c for c in table if c.split == "train" and c.site == site and c.label == "abnormal"]
        frames.append(reference_swap_test(backend, prompts, queries, lambda q: selector.select(q, 1, case_rng(0, q.case_id)),
                                          healthy, abnormal, seed=0))
    import pandas as pd

    swaps = pd.concat(frames)
    assert len(swaps) == 2 * sum(c.split == "test" for c in table)
    mean = swaps.groupby(["swap", "gold"])["delta_p_healthy"].mean()
    abnormal_swap = swaps[(swaps["swap"] == "abnormal") & (swaps["gold"] == "abnormal")]
    assert mean[("abnormal", "abnormal")] > 0.2
    assert (abnormal_swap["delta_p_healthy"] > 0).mean() >= 0.75
    assert abs(mean[("random_healthy", "abnormal")]) < 0.1 and abs(mean[("random_healthy", "normal")]) < 0.1
    assert abnormal_swap["answer_changed"].mean() >= 0.25


def test_swap_draws_never_use_the_query_its_patient_or_its_references(calibration_model):
    _, table, _ = calibration_model
    cases = list(table)
    query = cases[0]
    same_patient = cases[1].__class__(**{**cases[1].to_record(), "patient_id": query.patient_id})
    pool = [query, same_patient] + cases[2:6]
    drawn = draw_references(pool, query, 3, np.random.default_rng(0), exclude=[cases[2]])
    assert {c.case_id for c in drawn} == {c.case_id for c in cases[3:6]}
    with pytest.raises(BankError, match=f"case '{query.case_id}': only 3 eligible"):
        draw_references(pool, query, 4, np.random.default_rng(0), exclude=[cases[2]])
