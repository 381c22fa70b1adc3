"""What report guidance and refinement rounds buy, measured on the generated benchmark.

Conditions, all on the same generated pairs and judged by the offline embedding judge:

* ``no reports`` -- the concept vocabulary (the offline default proposer), one round;
* ``noisy reports`` -- ``report_contrast`` on reports with :class:`~.synthetic_reports.ReportNoise`
  (omissions, hedging, wrong side, unrelated findings), ``rounds`` rounds;
* ``clean reports`` -- the same on reports that state every finding plainly (the analogue of
  RadDiff's ground-truth-report guidance).

Ranker: ``attributes`` (the generator's ground truth; no training, so it is cheap to repeat, and it
isolates what the proposals contain) or ``vlm`` (the tiny VLM trained as in
:func:`~.benchmark.run_setdiff_benchmark`). Exact chance is computed per condition and round from
the same judged hypotheses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .benchmark import CONCEPT_TRUTH, PAIR_DESIGNS, PairDesign, build_benchmark_pairs, write_report_csv
from .judges import EmbeddingJudge
from .pipeline import SetDiffRun, run_setdiff
from .proposers import create_proposer
from .rankers import AttributeRanker, Ranker
from .synthetic_reports import ReportNoise, write_report

RANKER_NAMES = {"attributes": "ground-truth attributes", "vlm": "vlm"}


def _with_reports(pairs: Sequence[Any], noise: ReportNoise, seed: int) -> None:
    for index, pair in enumerate(pairs):
        for side, image_set in ((1, pair.set1), (2, pair.set2)):
            rng = np.random.default_rng([seed, index, side, 7])
            image_set.reports = [write_report(m, rng, noise) for m in image_set.metadata]


def _ranker(kind: str, out: Path, seed: int, train_images: int, train_steps: int) -> Ranker:
    if kind == "attributes":
        return AttributeRanker(CONCEPT_TRUTH)
    if kind == "vlm":
        from .benchmark import attribute_vlm_ranker, train_attribute_vlm

        trained = train_attribute_vlm(out / "ranker", n_images=train_images, max_steps=train_steps, seed=seed,
                                      progress=False)
        return attribute_vlm_ranker(trained)
    raise ValueError(f"ranker '{kind}': use attributes or vlm")


def run_report_benchmark(output_dir: str | Path, images_per_set: int = 20, rounds: int = 3, seed: int = 0,
                         ranker: str = "attributes", train_images: int = 800, train_steps: int = 2400,
                         designs: Sequence[PairDesign] = PAIR_DESIGNS,
                         noise: ReportNoise = ReportNoise()) -> pd.DataFrame:
    """Run the three conditions; write each run under ``output_dir/<condition>`` and the per-round
    table ``report_rounds.csv``; return that table (condition, method, round, acc@k with CIs)."""
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pairs = build_benchmark_pairs(out / "data", images_per_set, seed, designs, report_noise=noise)
    write_report_csv(pairs, out / "data")
    chosen = _ranker(ranker, out, seed, train_images, train_steps)
    judge = EmbeddingJudge()
    rankers = {RANKER_NAMES[ranker]: chosen}
    conditions: list[tuple[str, Any, int]] = [("no reports", create_proposer("concept_vocabulary"), 1),
                                              ("noisy reports", create_proposer("report_contrast"), rounds)]
    tables = []
    runs: dict[str, SetDiffRun] = {}
    for name, proposer, n_rounds in [*conditions, ("clean reports", create_proposer("report_contrast"), rounds)]:
        if name == "clean reports":
            _with_reports(pairs, ReportNoise.none(), seed)
        run = run_setdiff(pairs, proposer, rankers, judge, seed=seed, rounds=n_rounds)
        run.settings.update({"condition": name, "images_per_set": images_per_set, "ranker": ranker,
                             "report_noise": None if name == "no reports" else
                             (ReportNoise.none() if name == "clean reports" else noise).__dict__})
        run.write(out / name.replace(" ", "_"))
        runs[name] = run
        table = run.round_summary()
        table.insert(0, "condition", name)
        tables.append(table)
    summary = pd.concat(tables, ignore_index=True)
    summary.to_csv(out / "report_rounds.csv", index=False)
    (out / "report_benchmark.json").write_text(json.dumps({
        "pairs": len(pairs), "images_per_set": images_per_set, "rounds": rounds, "seed": seed, "ranker": ranker,
        "ranker_method": RANKER_NAMES[ranker], "judge": judge.describe(), "noise": noise.__dict__}, indent=2))
    return summary
