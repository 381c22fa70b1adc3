"""Conditions whose queries were encoded at different resolutions are said so in the summary and findings."""

import numpy as np
import pandas as pd

from seeinpairs.evaluation.stats import query_resolutions, summarise
from seeinpairs.report import findings_from


def records(resolution, n=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = float(rng.uniform(0.1, 0.9))
        out.append({"case_id": f"c{i}", "gold": ["normal", "abnormal"][i % 2], "options": ["normal", "abnormal"],
                    "probabilities": [p, 1 - p], "predicted": "normal" if p > 0.5 else "abnormal",
                    **({"scoring": {"query_resolution": resolution}} if resolution else {})})
    return out


def summary_of(by_condition):
    frame = summarise(by_condition, ["normal", "abnormal"], "normal", n_boot=20, metrics=["accuracy"])
    meta = pd.DataFrame([{"model": "m", "mode": mode, "selector": "random", "k": k, "seed": 0}
                         for mode, k in (("single", 0), ("paired", 2))])
    return pd.concat([meta, frame.drop(columns=["condition"])], axis=1)


def test_the_summary_and_findings_state_differing_query_resolutions():
    summary = summary_of({"single": records("anyres"), "paired": records("base", seed=1)})
    assert list(summary["query_resolution"]) == ["anyres", "base"]
    said = [f for f in findings_from(summary, None, metric="accuracy") if "different resolutions" in f]
    assert len(said) == 1 and "single k=0: anyres" in said[0] and "paired k=2: base" in said[0]


def test_nothing_is_said_when_the_resolution_is_the_same_or_not_recorded():
    same = summary_of({"single": records("base"), "paired": records("base", seed=1)})
    assert not [f for f in findings_from(same, None, metric="accuracy") if "different resolutions" in f]
    unrecorded = summary_of({"single": records(None), "paired": records(None, seed=1)})
    assert "query_resolution" not in unrecorded.columns
    assert query_resolutions(records("anyres") + records(None)) == "anyres"
