"""The comparative study in one command: train single and paired, evaluate, sweep, report.

For one data set and one base model it trains a single-image model (k=0) and a
comparative model (k references per example) on identical cases, evaluates the
single model alone and the comparative one under every configured selector and
k against that single baseline, runs a sample-efficiency ladder (the same n
cases for both modes), and writes the tables and an HTML report whose findings
are generated from the measured numbers. Every stage is resumable: trained
models and stored predictions are reused when the command runs again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, model_validator

from ..atomic import atomic_write_text
from ..cases import CaseTable
from ..configfile import ConfigFile, resolve_path
from ..datasets.preparation import prepare_data
from ..evaluation.config import EvalConfig, ExperimentConfig
from ..evaluation.runner import ExperimentResult, run_experiment
from ..evaluation.stats import write_tables
from ..explain.evidence import EvidenceConfig, EvidenceResult, EvidenceRunner
from ..explain.report import evidence_section
from ..references.bank import ReferenceBank
from ..runtime import environment_summary
from ..settings import (BankConfig, ConditionConfig, ConfigTask, DataConfig, ModelConfig, ReferenceCount, StrictModel,
                        check_partial_task, partial_task_input)
from ..stages import stage_done
from ..training import train_condition

SINGLE_LABEL = "single-trained"
PAIRED_LABEL = "paired-trained"


class PairedTraining(StrictModel):
    """How the comparative model sees references during training."""

    selector: str = "random"
    k: ReferenceCount = 1
    selector_params: dict[str, Any] = Field(default_factory=dict)


class SampleEfficiencyConfig(StrictModel):
    """Train both modes on nested subsets of n cases; evaluate each on the test split."""

    ladder: list[int | Literal["all"]] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    #: training overrides for sweep runs (e.g. fewer steps); defaults to the study's train settings
    train: dict[str, Any] = Field(default_factory=dict)
    eval_selector: str = "random"
    eval_k: int = Field(1, ge=1)
    eval_params: dict[str, Any] = Field(default_factory=dict)


class Anchor(StrictModel):
    """A published figure printed beside ours, with a plain note on how the setups differ."""

    source: str
    metrics: dict[str, float]
    note: str = ""


class StudyConfig(ConfigFile):
    name: str = "study"
    #: with ``data.dataset``, the fields left out (classes, healthy class, question) are the adapter's
    task: ConfigTask
    data: DataConfig
    bank: BankConfig = Field(default_factory=BankConfig)
    model: ModelConfig
    tiny_spec: dict[str, Any] = Field(default_factory=dict)
    #: TrainConfig fields shared by every training run (max_steps, batch_size, lr, eval_every, ...)
    train: dict[str, Any] = Field(default_factory=dict)
    paired_training: PairedTraining = Field(default_factory=PairedTraining)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sample_efficiency: SampleEfficiencyConfig | None = None
    examples: int = Field(4, ge=0)
    anchor: Anchor | None = None
    #: attribution, localization, reference-use and layer analysis of the single vs the paired model
    evidence: EvidenceConfig | None = None
    output_dir: Path = Path("runs/study")

    _partial_task = model_validator(mode="before")(partial_task_input)

    @model_validator(mode="after")
    def _task_complete_or_from_adapter(self) -> StudyConfig:
        check_partial_task(self.task, self.data)
        return self

    def resolve_paths(self, base: Path) -> StudyConfig:
        return self.model_copy(update={"data": self.data.resolved(base), "bank": self.bank.resolved(base),
                                       "model": self.model.resolved(base),
                                       "output_dir": resolve_path(self.output_dir, base)})


@dataclass
class StudyResult:
    evaluation: ExperimentResult
    learning_curves: pd.DataFrame
    training: dict[str, dict[str, Any]]
    report: Path
    seconds: float
    anchor: Anchor | None = None
    evidence: EvidenceResult | None = None


def training_failure(summary: dict[str, Any] | None) -> str:
    """Why a training run counts as failed by its own loss curve (its ``flat_loss`` flag), else ``""``."""
    flat = ((summary or {}).get("training_flags") or {}).get("flat_loss") or {}
    return str(flat.get("why", "")) if flat.get("flagged") else ""


def mark_failed_training(frame: pd.DataFrame, reasons: dict[str, str]) -> pd.DataFrame:
    """``frame`` (an evaluation summary) with each condition of a model whose training failed labelled
    as failed training in its ``degenerate`` column, beside any verdict from its predictions.

    ``reasons``: model label -> why (empty: trained). The report and the suite read that column, so
    such conditions are named as failed and left out of best-condition and calibration claims even
    when their predictions alone would pass.
    """
    reasons = {label: why for label, why in reasons.items() if why}
    if frame.empty or not reasons or "model" not in frame.columns:
        return frame
    frame = frame.copy()
    current = (frame["degenerate"].fillna("").astype(str) if "degenerate" in frame.columns
               else pd.Series("", index=frame.index))
    for label, why in reasons.items():
        rows = frame["model"].astype(str) == label
        current[rows] = [f"{old}; {why}" if old and why not in old else (old or why) for old in current[rows]]
    frame["degenerate"] = current
    return frame


def _model_entry(label: str, checkpoint: Path, batch_size: int, conditions: list[ConditionConfig],
                 device: str) -> dict[str, Any]:
    return {"name": str(checkpoint), "label": label, "batch_size": batch_size, "device": device,
            "conditions": [c.model_dump(mode="json") for c in conditions]}


def _evaluate(config: StudyConfig, models: list[dict[str, Any]], output_dir: Path, baseline: str | None,
              progress: bool, table: CaseTable, seeds: list[int] | None = None) -> ExperimentResult:
    eval_config = config.eval.model_copy(update={"baseline_model": baseline, "seeds": seeds or config.eval.seeds})
    experiment = ExperimentConfig(name=config.name, task=config.task, data=config.data, bank=config.bank,
                                  models=[ModelConfig.model_validate(m) for m in models], eval=eval_config,
                                  output_dir=output_dir)
    return run_experiment(experiment, progress=progress, table=table)


def run_sample_efficiency(config: StudyConfig, progress: bool = True, table: CaseTable | None = None) -> pd.DataFrame:
    """One row per (mode, n_train, seed) with the test metrics and their bootstrap CIs.

    ``table``: the cases ``config.data`` describes, when the caller has read them already."""
    sweep = config.sample_efficiency
    if sweep is None:
        return pd.DataFrame()
    if table is None:
        table = config.data.load_table(classes=config.task.classes)
    out = Path(config.output_dir) / "sample_efficiency"
    batch = config.model.batch_size
    rows = []
    for seed in sweep.seeds:
        for n in sweep.ladder:
            n_train = None if n == "all" else int(n)
            tag = f"n{n}-s{seed}"
            overrides = {**sweep.train, "n_train": n_train, "seed": seed}
            single, single_summary = train_condition(config, out / "models" / f"single-{tag}", 0,
                                                     overrides=overrides, progress=progress, table=table)
            paired_training = config.paired_training
            paired, paired_summary = train_condition(config, out / "models" / f"paired-{tag}", paired_training.k,
                                                     paired_training.selector, paired_training.selector_params,
                                                     overrides, progress=progress, table=table)
            modes = {f"single-{tag}": "single", f"paired-{tag}": "paired"}
            models = [
                _model_entry(f"single-{tag}", single, batch, [ConditionConfig(selector="none", k=0)], config.model.device),
                _model_entry(f"paired-{tag}", paired, batch,
                             [ConditionConfig(selector=sweep.eval_selector, k=sweep.eval_k, params=sweep.eval_params)],
                             config.model.device),
            ]
            result = _evaluate(config, models, out / "eval" / tag, baseline=f"single-{tag}", progress=progress,
                               table=table, seeds=[seed])
            summary = mark_failed_training(result.summary, {f"single-{tag}": training_failure(single_summary),
                                                            f"paired-{tag}": training_failure(paired_summary)})
            for _, row in summary.iterrows():
                rows.append({"mode": modes[row["model"]], "n_train": n_train if n_train is not None else -1, "seed": seed,
                             **{c: row[c] for c in summary.columns if c not in ("model", "mode", "selector", "k", "seed")}})
    curves = pd.DataFrame(rows)
    if not curves.empty and (curves["n_train"] == -1).any():
        n_all = sum(1 for c in table if c.split == config.train.get("train_split", "train"))
        curves.loc[curves["n_train"] == -1, "n_train"] = n_all
    write_tables(curves, out, "learning_curves")
    return curves


def run_study(config: StudyConfig, progress: bool = True, table: CaseTable | None = None) -> StudyResult:
    """Train, evaluate, sweep and report one study. The manifest is read once here (or by the caller,
    who passes ``table``: the cases ``config.data`` describes) and handed to every stage."""
    from ..report import (
        DEFAULT_LIMITATIONS,
        ReportInputs,
        examples_from_records,
        write_report,
    )

    started = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = prepare_data(config)  # writes the data if needed; the task completed from an adapter's
    if table is None:
        table = config.data.load_table(classes=config.task.classes)
    paired_training = config.paired_training
    single, single_summary = train_condition(config, out / "models" / "single", 0, progress=progress, table=table)
    paired, paired_summary = train_condition(config, out / "models" / "paired", paired_training.k,
                                             paired_training.selector, paired_training.selector_params,
                                             progress=progress, table=table)
    batch, device = config.model.batch_size, config.model.device
    models = [_model_entry(SINGLE_LABEL, single, batch, [ConditionConfig(selector="none", k=0)], device),
              _model_entry(PAIRED_LABEL, paired, batch, config.eval.conditions, device)]
    evaluation = _evaluate(config, models, out / "eval", baseline=SINGLE_LABEL, progress=progress, table=table)
    failures = {SINGLE_LABEL: training_failure(single_summary), PAIRED_LABEL: training_failure(paired_summary)}
    if any(failures.values()):  # the stored tables say it too, not only the report
        evaluation.summary = mark_failed_training(evaluation.summary, failures)
        write_tables(evaluation.summary, out / "eval", "metrics")
    curves = run_sample_efficiency(config, progress=progress, table=table)

    examples = []
    if config.examples and not evaluation.paired_tests.empty:
        best = evaluation.paired_tests.sort_values("delta_auroc", ascending=False).iloc[0]
        try:
            records = evaluation.records_for(PAIRED_LABEL, best["selector"], int(best["k"]), int(best["seed"]))
        except KeyError:
            records = None
        if records is not None:
            examples = examples_from_records(records, table, n=config.examples,
                                             title=f"{PAIRED_LABEL}, {best['selector']} k={best['k']}")
    evidence, sections = None, []
    if config.evidence is not None:
        evidence = run_study_evidence(config, table, single, paired)
        evidence.save(out / "evidence")
        sections.append(evidence_section(evidence))
    seconds = time.perf_counter() - started
    training = {"single": single_summary, "paired": paired_summary}
    metadata = {"study": config.name, "data": str(config.data.manifest), "model": config.model.display,
                "paired training": paired_training.model_dump(), "train settings": config.train,
                "evaluation split": config.eval.split, "cases evaluated": int(evaluation.summary["n"].max()),
                "seconds": round(seconds, 1), "computed on": environment_summary()}
    anchor = config.anchor.model_dump() if config.anchor is not None else None  # shown beside the metrics
    limitations = [*DEFAULT_LIMITATIONS, (
        f"The single and the comparative model were each trained once (training seed {config.train.get('seed', 0)}); "
        "the intervals do not include the variation between training runs, which for small models trained from "
        "scratch can be as large as the differences shown. Repeat with several training seeds before drawing "
        "conclusions.")]
    report = write_report(out / "report.html", ReportInputs(
        title=f"seeinpairs study: {config.name}", summary=evaluation.summary, paired_tests=evaluation.paired_tests,
        learning_curves=curves if not curves.empty else None, examples=examples, metadata=metadata,
        sections=sections, anchor=anchor, limitations=limitations))
    stage_done("report written", str(report), time.perf_counter() - started)
    atomic_write_text(out / "study_summary.json", json.dumps({"seconds": seconds, "training": training}, indent=2,
                                                            default=str))
    return StudyResult(evaluation, curves, training, report, seconds, config.anchor, evidence)


def run_study_evidence(config: StudyConfig, table: CaseTable, single: Path, paired: Path) -> EvidenceResult:
    """The evidence analysis of the study's two trained models (masks resolve like the images)."""
    from ..backends import local_backend

    # the trained folders, with the model's dtype, device and batch size (its options tune the base model's scoring)
    backends = [local_backend(config.model.model_copy(update={"name": str(path), "tiny": None, "options": {}}),
                              "attribution") for path in (single, paired)]
    bank = ReferenceBank.from_table(table, config.task, split=config.bank.split, cache_dir=config.bank.cache_dir)
    root = config.data.image_root or Path(config.data.manifest).parent
    return EvidenceRunner(*backends, table, config.task, bank, config.evidence, mask_root=root).run()
