"""Set-difference description: what distinguishes image set 1 from set 2, in words.

Propose candidate differences (:mod:`.proposers`), rank them by how well an
image-text scorer separates the sets (:mod:`.rankers`), judge the top ones
against the known difference (:mod:`.judges`); :func:`run_setdiff` ties them
together and :func:`run_setdiff_benchmark` runs the offline benchmark.
Inputs: RadDiffBench and VisDiffBench files or case-table filters (:mod:`.inputs`), with
clinical reports joined by study (:mod:`.reports`) for the report-guided proposers and refinement
rounds (:mod:`.report_proposers`).
"""

from .inputs import (
    ImageSet,
    SetDiffError,
    SetPair,
    load_pairs,
    load_raddiff,
    load_visdiff_csv,
    load_visdiff_jsonl,
    pair_from_table,
)
from .judges import JUDGES, Judge, Judgement, acc_at, create_judge, list_judges
from .pipeline import PairOutcome, SetDiffRun, run_setdiff
from .proposers import (
    PROPOSERS,
    Proposal,
    Proposer,
    create_proposer,
    deduplicate,
    list_proposers,
)
from .report_proposers import RefiningProposer, RoundFeedback
from .reports import ReportCoverage, attach_reports, load_report_source
from .rankers import (
    RANKERS,
    RankedHypothesis,
    Ranker,
    create_ranker,
    list_rankers,
    separation,
)


def run_setdiff_benchmark(*args, **kwargs):
    """See :func:`seeinpairs.setdiff.benchmark.run_setdiff_benchmark` (imported lazily: it pulls in training)."""
    from .benchmark import run_setdiff_benchmark as run

    return run(*args, **kwargs)


__all__ = [
    "JUDGES",
    "PROPOSERS",
    "RANKERS",
    "ImageSet",
    "Judge",
    "Judgement",
    "PairOutcome",
    "Proposal",
    "Proposer",
    "RankedHypothesis",
    "RefiningProposer",
    "ReportCoverage",
    "RoundFeedback",
    "Ranker",
    "SetDiffError",
    "SetDiffRun",
    "SetPair",
    "acc_at",
    "attach_reports",
    "create_judge",
    "create_proposer",
    "create_ranker",
    "deduplicate",
    "list_judges",
    "list_proposers",
    "list_rankers",
    "load_pairs",
    "load_report_source",
    "load_raddiff",
    "load_visdiff_csv",
    "load_visdiff_jsonl",
    "pair_from_table",
    "run_setdiff",
    "run_setdiff_benchmark",
    "separation",
]
