"""Evaluate a backend on multi-image QA items: one prediction row per item.

Multiple-choice items are answered by option log-likelihood (``method="loglik"``,
the primary method: the option written as ``"C: text"`` with the highest summed
log-probability wins, nothing is parsed) or by generating an answer and reading
its letter (``method="generate"``; unreadable answers count as wrong and are
flagged). Open-ended items are always answered by generation and scored later
with the text metrics of :mod:`.metrics`.

``keep`` turns the run into the single-image ablation: the same questions with
only the image at that position (``"first"``, ``"last"`` or an index) shown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from rich.progress import Progress

from ..atomic import FileSet
from ..runtime import environment_record
from ..backends.base import Backend, option_probabilities
from ..errors import ConfigError
from .format import LETTERS, MimDataset, MimItem, SkippedItem
from .metrics import extract_letter, letter_text_mismatch, score_open, summarise
from .prompts import ablation_position, build_request

Method = Literal["loglik", "generate"]


@dataclass
class MimEvaluation:
    """Predictions (one row per item) and their summary (per split, ability, source), with the
    malformed items of the input files that were left out (``skipped``)."""

    predictions: pd.DataFrame
    summary: pd.DataFrame
    seconds: float
    condition: str
    skipped: list[SkippedItem] = field(default_factory=list)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write predictions, summary and where they were computed (``environment_<condition>.json``),
        and ``skipped_<condition>.csv`` when items were left out."""
        out = Path(out_dir)
        paths = {"predictions": out / f"predictions_{self.condition}.csv", "summary": out / f"summary_{self.condition}.csv"}
        with FileSet(out, f"mim-{self.condition}") as files:  # predictions and their summary appear together
            self.predictions.to_csv(files.path(paths["predictions"].name), index=False)
            self.summary.to_csv(files.path(paths["summary"].name), index=False)
            files.path(f"environment_{self.condition}.json").write_text(json.dumps(environment_record(), indent=2))
            if self.skipped:
                paths["skipped"] = out / f"skipped_{self.condition}.csv"
                pd.DataFrame([s.as_dict() for s in self.skipped]).to_csv(files.path(paths["skipped"].name),
                                                                          index=False)
        return paths


def _requests(dataset: MimDataset, items: Sequence[MimItem], keep: str | int | None):
    requests = []
    for item in items:
        images = dataset.images(item)
        positions = None if keep is None else [ablation_position(item, keep)]
        requests.append(build_request(item, images, positions))
    return requests


def predict(backend: Backend, dataset: MimDataset, method: Method = "loglik", keep: str | int | None = None,
            batch_size: int = 32, max_new_tokens: int = 24, progress: bool = False) -> pd.DataFrame:
    """One row per item: gold and predicted letter, correctness, option probabilities, generated text."""
    if method not in ("loglik", "generate"):
        raise ConfigError(f"unknown evaluation method '{method}' (use loglik or generate)")
    rows: list[dict[str, Any]] = []
    items = list(dataset)
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"mim {method}{'' if keep is None else ' single-image'}", total=len(items))
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            requests = _requests(dataset, chunk, keep)
            scored = [i for i, item in enumerate(chunk) if item.multiple_choice and method == "loglik"]
            generated = [i for i in range(len(chunk)) if i not in set(scored)]
            scores = dict(zip(scored, backend.score_options([requests[i] for i in scored]))) if scored else {}
            texts = dict(zip(generated, backend.generate([requests[i] for i in generated], max_new_tokens))) \
                if generated else {}
            for i, item in enumerate(chunk):
                row: dict[str, Any] = {
                    "uid": item.uid, "file": item.file, "index": item.index, "id": item.id, "split": item.split,
                    "subset": item.subset, "dataset": item.dataset, "n_images": len(item.images),
                    "n_shown": requests[i].n_images, "n_options": len(item.options), "open": not item.multiple_choice,
                    "answer": item.gold_answer, "gold": LETTERS[item.gold] if item.gold is not None else None,
                    "method": method if item.multiple_choice else "generate", "text": texts.get(i),
                    "pred": None, "correct": np.nan, "parse_failed": np.nan, "probabilities": None,
                }
                if item.multiple_choice and i in scores:
                    probabilities = option_probabilities(scores[i])
                    row["pred"] = LETTERS[int(np.argmax(probabilities))]
                    row["probabilities"] = [round(float(p), 6) for p in probabilities]
                elif item.multiple_choice:
                    row["pred"] = extract_letter(texts[i], item.options)
                    row["parse_failed"] = float(row["pred"] is None)
                    row["letter_text_mismatch"] = letter_text_mismatch(texts[i], item.options)
                if item.multiple_choice:
                    row["correct"] = float(row["pred"] == row["gold"])
                rows.append(row)
            bar.update(job, advance=len(chunk))
    return pd.DataFrame(rows)


def evaluate(backend: Backend, dataset: MimDataset, method: Method = "loglik", keep: str | int | None = None,
             condition: str | None = None, open_metrics: Sequence[str] | None = None, judge: Backend | None = None,
             n_boot: int = 1000, batch_size: int = 32, max_new_tokens: int = 24,
             progress: bool = False) -> MimEvaluation:
    """Predict, score open-ended answers (``open_metrics``; the LLM judge when ``judge`` is given)
    and summarise per split, ability/held-out set and source data set with bootstrap CIs."""
    started = time.perf_counter()
    predictions = predict(backend, dataset, method, keep, batch_size, max_new_tokens, progress)
    if len(predictions) and predictions["open"].any():
        options = {"backend": judge} if judge is not None else {}
        predictions = score_open(predictions, open_metrics, **options)
    condition = condition or (method if keep is None else f"{method}_single_{keep}")
    predictions.insert(0, "condition", condition)
    summary = summarise(predictions, n_boot=n_boot) if len(predictions) else pd.DataFrame()
    if len(summary):
        summary.insert(0, "condition", condition)
    return MimEvaluation(predictions, summary, time.perf_counter() - started, condition, list(dataset.skipped))
