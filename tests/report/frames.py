"""Evaluation frames built to order: a summary and paired tests where each condition has a chosen value,
and learning curves with chosen points."""

from __future__ import annotations

import math

import pandas as pd

METRICS = ("accuracy", "auroc", "balanced_accuracy", "ece", "macro_f1")


def summary_row(model, selector, k, seed, values, half_width=0.05, n=120):
    row = {"model": model, "mode": "single" if k == 0 else "paired", "selector": selector, "k": k, "seed": seed,
           "n": n}
    for metric in METRICS:
        value = values.get(metric, 0.1 if metric == "ece" else 0.7)
        row[metric] = value
        row[f"{metric}_lo"] = value - half_width if not math.isnan(value) else float("nan")
        row[f"{metric}_hi"] = value + half_width if not math.isnan(value) else float("nan")
    return row


def make_results(paired_auroc: dict, single_auroc=0.80, delta_half_width=0.03, seeds=(0,), model="m",
                 ece_single=0.10, ece_paired=0.10, p=0.41):
    """A summary and paired-test frame where each paired condition (selector, k) has the given AUROC."""
    rows, tests = [], []
    for seed in seeds:
        rows.append(summary_row(model, "none", 0, seed, {"auroc": single_auroc, "accuracy": 0.75, "ece": ece_single}))
        for (selector, k), auroc in paired_auroc.items():
            rows.append(summary_row(model, selector, k, seed, {"auroc": auroc, "accuracy": 0.76, "ece": ece_paired}))
            delta = auroc - single_auroc
            tests.append({"model": model, "selector": selector, "k": k, "seed": seed, "n": 120,
                          "single_right_paired_wrong": 7, "single_wrong_paired_right": 9, "mcnemar_p": p,
                          "delta_accuracy": 0.01, "delta_accuracy_lo": -0.04, "delta_accuracy_hi": 0.06,
                          "delta_auroc": delta, "delta_auroc_lo": delta - delta_half_width,
                          "delta_auroc_hi": delta + delta_half_width})
    return pd.DataFrame(rows), pd.DataFrame(tests)


def curves_frame(single, paired, ladder=(16, 32, 64, 128), metric="auroc", seeds=(0,)):
    rows = []
    for seed in seeds:
        for mode, values in (("single", single), ("paired", paired)):
            for n, value in zip(ladder, values):
                rows.append({"mode": mode, "n_train": n, "seed": seed, metric: value})
    return pd.DataFrame(rows)
