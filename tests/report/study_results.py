"""A study's evaluation frames as the demo writes them: a separately trained single-image model and a
paired model under four selectors at k 1, 2, 4 (13 conditions), compared on the same 142 cases."""

from __future__ import annotations

import numpy as np
import pandas as pd

SELECTORS = ("random", "demographic", "embedding", "cross_center")
KS = (1, 2, 4)
METRICS = ("accuracy", "auroc", "balanced_accuracy", "ece", "macro_f1")


def _row(model: str, selector: str, k: int, rng: np.random.Generator) -> dict:
    row = {"model": model, "mode": "single" if k == 0 else "paired", "selector": selector, "k": k, "seed": 0,
           "n": 142, "degenerate": ""}
    for metric in METRICS:
        value = rng.uniform(0.04, 0.09) if metric == "ece" else rng.uniform(0.82, 0.87)
        row.update({metric: value, f"{metric}_lo": value - rng.uniform(0.02, 0.07),
                    f"{metric}_hi": value + rng.uniform(0.02, 0.06)})
    return row


def study_results(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, paired tests) with the demo's models, selectors, k and column names."""
    rng = np.random.default_rng(seed)
    rows = [_row("single-trained", "none", 0, rng)]
    tests = []
    for selector in SELECTORS:
        for k in KS:
            rows.append(_row("paired-trained", selector, k, rng))
            delta = rng.uniform(-0.01, 0.02)
            tests.append({"model": "paired-trained", "baseline": "single-trained", "mode": "paired",
                          "selector": selector, "k": k, "seed": 0, "n": 142,
                          "single_right_paired_wrong": int(rng.integers(5, 10)),
                          "single_wrong_paired_right": int(rng.integers(5, 12)), "mcnemar_p": rng.uniform(0.3, 1),
                          "delta_accuracy": delta, "delta_accuracy_lo": delta - 0.049,
                          "delta_accuracy_hi": delta + 0.049, "delta_auroc": -delta / 2,
                          "delta_auroc_lo": -delta / 2 - 0.047, "delta_auroc_hi": -delta / 2 + 0.058})
    return pd.DataFrame(rows), pd.DataFrame(tests)
