"""A suite of comparative studies: several data sets, several training seeds, one report.

Each entry of ``studies`` is a full :class:`~seeinpairs.studies.study.StudyConfig`
(task, data, model, training, evaluation grid, sample-efficiency ladder,
anchor). A *profile* (``quick`` for CI-size runs, ``full`` for the reported
figures) overrides the budget of every study in one place: training steps,
evaluation cases, seeds, the sweep. For every study and seed the suite runs
the study (resumable: finished training runs and stored predictions are
reused), then adds what a reader needs to trust the figures:

* a leakage audit of every stored paired prediction against the case table
  (references from the query's own patient; must be 0),
* an image-only logistic-regression baseline trained here on the same splits,
  printed beside the published anchor,
* a headline per data set: single vs the best paired condition, averaged over
  seeds, with each seed's paired bootstrap interval and McNemar p.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..atomic import FileSet, atomic_write_text
from ..cases import CaseTable
from ..configfile import ConfigFile, resolve_path
from ..datasets.preparation import prepare_data
from ..errors import ConfigError
from ..evaluation.audit import audit_references
from ..evaluation.degenerate import failed_rows
from ..siteshift.experiment import SiteShiftSpec, run_site_shift
from ..stages import stage_done
from .baselines import BASELINES
from .study import StudyConfig, StudyResult, run_study

HEADLINE_METRICS = ("auroc", "accuracy", "macro_f1")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings (lists are replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class SuiteProfile(BaseModel):
    """A budget: training seeds, and overrides merged into every study config."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    #: merged into every study (e.g. ``{train: {max_steps: 20}, eval: {max_cases: 20}}``)
    overrides: dict[str, Any] = Field(default_factory=dict)
    #: the sample-efficiency sweep runs for these studies only (all when None); the others skip it
    sample_efficiency_for: list[str] | None = None
    #: the site-shift experiments to run (all when None; [] for none)
    site_shift_for: list[str] | None = None


class BaselineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: which image-only baselines to train (names in :data:`~seeinpairs.studies.baselines.BASELINES`)
    kinds: list[str] = Field(default_factory=lambda: ["logistic", "cnn"], min_length=1)
    size: int = Field(28, ge=4)
    color: bool = False
    #: logistic regression's inverse regularisation strength
    c: float = Field(0.1, gt=0)
    #: the CNN's training epochs
    epochs: int = Field(30, ge=1)

    @field_validator("kinds")
    @classmethod
    def _registered(cls, kinds: list[str]) -> list[str]:
        unknown = [kind for kind in kinds if kind not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown)} (known: {', '.join(BASELINES.list_names())})")
        return kinds

    def options_for(self, kind: str) -> dict[str, Any]:
        """The spec's per-baseline settings that baseline ``kind`` takes (``c`` or ``epochs``)."""
        parameters = inspect.signature(BASELINES.get(kind)).parameters
        return {name: getattr(self, name) for name in ("c", "epochs") if name in parameters}


class StudySuiteConfig(ConfigFile):
    name: str = "suite"
    profile: str = "full"
    profiles: dict[str, SuiteProfile] = Field(default_factory=lambda: {"full": SuiteProfile()})
    #: study configs (StudyConfig fields; relative paths resolve against this file's folder)
    studies: list[dict[str, Any]] = Field(min_length=1)
    #: per study name, the image-only baseline's settings (default: 28x28 grayscale)
    baselines: dict[str, BaselineSpec] = Field(default_factory=dict)
    #: site-shift experiments on the studies' data (trained with the profile's budget, first seed)
    site_shift: list[SiteShiftSpec] = Field(default_factory=list)
    output_dir: Path = Path("runs/suite")
    base_dir: Path | None = None

    def resolve_paths(self, base: Path) -> StudySuiteConfig:
        return self.model_copy(update={"output_dir": resolve_path(self.output_dir, base), "base_dir": base})

    def chosen_profile(self, name: str | None = None) -> tuple[str, SuiteProfile]:
        name = name or self.profile
        if name not in self.profiles:
            raise ConfigError(f"profile '{name}' is not defined (profiles: {', '.join(self.profiles)})")
        return name, self.profiles[name]

    def study_configs(self, profile: str | None = None) -> list[tuple[str, int, StudyConfig]]:
        """(study name, seed, config) for every study and seed of the profile, validated up front."""
        name, chosen = self.chosen_profile(profile)
        out = []
        names = [str(s.get("name", f"study{i}")) for i, s in enumerate(self.studies)]
        if len(set(names)) != len(names):
            raise ConfigError(f"studies need distinct names, got {names}")
        if chosen.sample_efficiency_for is not None:
            unknown = sorted(set(chosen.sample_efficiency_for) - set(names))
            if unknown:
                raise ConfigError(f"profile '{name}': sample_efficiency_for names unknown studies {unknown}")
        for study_name, raw in zip(names, self.studies):
            merged = deep_merge(raw, chosen.overrides)
            for index, seed in enumerate(chosen.seeds):
                spec = deep_merge(merged, {"name": f"{study_name}-s{seed}", "train": {"seed": seed},
                                           "output_dir": str(Path(self.output_dir) / name / study_name / f"seed{seed}")})
                sweep = spec.get("sample_efficiency")
                if sweep is not None:
                    keep = index == 0 and (chosen.sample_efficiency_for is None
                                           or study_name in chosen.sample_efficiency_for)
                    # one sweep per data set, over all the profile's seeds, run with the first seed's study
                    spec["sample_efficiency"] = deep_merge(sweep, {"seeds": list(chosen.seeds)}) if keep else None
                source = f"{study_name} (profile {name}, seed {seed})"
                config = StudyConfig.from_dict(spec, source=source, base=self.base_dir)
                config = config.model_copy(update={"output_dir": Path(spec["output_dir"])})
                out.append((study_name, seed, config))
        return out


class CaseTables:
    """The case tables of a suite's studies, each read once: the seeds of a study (and its
    site-shift experiments) share the data, so they share the loaded table."""

    def __init__(self) -> None:
        self._tables: dict[str, CaseTable] = {}

    def load(self, study: StudyConfig) -> CaseTable:
        """The cases ``study.data`` describes (with the study's class names), read on first use."""
        key = json.dumps([study.data.model_dump(mode="json"), study.task.classes], sort_keys=True)
        if key not in self._tables:
            self._tables[key] = study.data.load_table(classes=study.task.classes)
        return self._tables[key]


@dataclass
class SuiteResult:
    site_shift: pd.DataFrame
    metrics: pd.DataFrame
    tests: pd.DataFrame
    headline: pd.DataFrame
    leakage: pd.DataFrame
    baselines: pd.DataFrame
    curves: pd.DataFrame
    report: Path
    seconds: float
    studies: dict[str, dict[int, StudyResult]] = field(default_factory=dict)


def _baseline_rows(study_name: str, study: StudyConfig, table: CaseTable, spec: BaselineSpec) -> list[dict]:
    """One row per image-only baseline of the spec, trained on the study's splits, with the study's anchor."""
    rows = []
    anchor = study.anchor
    for kind in spec.kinds:
        baseline = BASELINES.create(kind, table, study.task, test_split=study.eval.split, size=spec.size,
                                    color=spec.color, n_boot=study.eval.n_boot, **spec.options_for(kind))
        row = baseline.summary.iloc[0].to_dict()
        rows.append({"study": study_name, "baseline": baseline.name,
                     **{k: v for k, v in row.items() if k != "condition"},
                     "anchor": json.dumps(anchor.metrics) if anchor else "",
                     "anchor_source": anchor.source if anchor else "",
                     "anchor_note": anchor.note if anchor else ""})
    return rows


def _headline(study: str, metrics: pd.DataFrame, tests: pd.DataFrame) -> dict[str, Any]:
    """Single vs the best paired (leakage-free) condition by mean AUROC over seeds (accuracy when
    AUROC is undefined). Conditions labelled as failed training are never the best; their count
    is part of the row (``failed_conditions``)."""
    part = metrics[(metrics["study"] == study)]
    failed = failed_rows(part)
    single = part[part["mode"] == "single"]
    paired = part[(part["mode"] == "paired").to_numpy() & ~failed]
    row: dict[str, Any] = {"study": study, "seeds": int(part["seed"].nunique()), "failed_conditions": int(failed.sum())}
    for metric in HEADLINE_METRICS:
        row[f"single_{metric}"] = float(single[metric].mean()) if metric in single else float("nan")
    if paired.empty:
        return row
    ranking = None
    for metric in ("auroc", "accuracy"):  # AUROC is undefined on a one-class draw; then accuracy decides
        means = paired.groupby(["selector", "k"])[metric].mean() if metric in paired else pd.Series(dtype=float)
        if means.notna().any():
            ranking = means
            break
    if ranking is None:
        return row
    selector, k = ranking.idxmax()
    best = paired[(paired["selector"] == selector) & (paired["k"] == k)]
    row.update({"best_selector": selector, "best_k": int(k)})
    for metric in HEADLINE_METRICS:
        row[f"paired_{metric}"] = float(best[metric].mean()) if metric in best else float("nan")
    chosen = tests[(tests["study"] == study) & (tests["selector"] == selector) & (tests["k"] == k)]
    for metric in ("auroc", "accuracy"):
        row[f"delta_{metric}"] = float(chosen[f"delta_{metric}"].mean()) if not chosen.empty else float("nan")
        row[f"delta_{metric}_per_seed"] = "; ".join(
            f"s{int(r['seed'])}: {r[f'delta_{metric}']:+.3f} [{r[f'delta_{metric}_lo']:+.3f}, {r[f'delta_{metric}_hi']:+.3f}]"
            for _, r in chosen.iterrows())
    row["mcnemar_p_per_seed"] = "; ".join(f"s{int(r['seed'])}: {r['mcnemar_p']:.3g}" for _, r in chosen.iterrows())
    return row


def run_suite(config: StudySuiteConfig, profile: str | None = None, progress: bool = True,
              only: list[str] | None = None) -> SuiteResult:
    """Run every study of the profile (or those named in ``only``), then the audit, baselines and report."""
    from .suite_report import write_suite_report

    started = time.perf_counter()
    profile_name, chosen = config.chosen_profile(profile)
    runs = config.study_configs(profile)
    if only:
        unknown = sorted(set(only) - {name for name, _, _ in runs})
        if unknown:
            raise ConfigError(f"--only names unknown studies {unknown}")
        runs = [r for r in runs if r[0] in only]
    out = Path(config.output_dir) / profile_name
    out.mkdir(parents=True, exist_ok=True)
    metrics, tests, leakage, baselines, curves = [], [], [], [], []
    results: dict[str, dict[int, StudyResult]] = {}
    tables = CaseTables()
    for study_name, seed, study in runs:
        study = prepare_data(study)  # the task every stage below uses (an adapter's class names)
        table = tables.load(study)
        result = run_study(study, progress=progress, table=table)
        stage_done("study finished", f"{study_name} seed {seed}", result.seconds)
        results.setdefault(study_name, {})[seed] = result
        # "seed" becomes the training seed; the reference-selection seed of evaluation is kept apart
        metrics.append(result.evaluation.summary.rename(columns={"seed": "selection_seed"})
                       .assign(study=study_name, seed=seed))
        if not result.evaluation.paired_tests.empty:
            tests.append(result.evaluation.paired_tests.rename(columns={"seed": "selection_seed"})
                         .assign(study=study_name, seed=seed))
        records = [r for recs in result.evaluation.records.values() for r in recs]
        audit = audit_references(records, table)
        leakage.append({"study": study_name, "train_seed": seed, **audit.as_dict(),
                        "examples": "; ".join(audit.examples)})
        if not result.learning_curves.empty:
            curves.append(result.learning_curves.assign(study=study_name))
        if seed == chosen.seeds[0]:
            begun = time.perf_counter()
            baselines.extend(_baseline_rows(study_name, study, table, config.baselines.get(study_name,
                                                                                           BaselineSpec())))
            stage_done("image-only baselines trained", study_name, time.perf_counter() - begun)
    frame = pd.concat(metrics, ignore_index=True)
    tests_frame = pd.concat(tests, ignore_index=True) if tests else pd.DataFrame()
    site_shift = run_suite_site_shift(config, profile_name, chosen, runs, out, progress, only, tables)
    headline = pd.DataFrame([_headline(name, frame, tests_frame if not tests_frame.empty else
                                       pd.DataFrame(columns=["study", "selector", "k"]))
                             for name in results])
    leakage_frame = pd.DataFrame(leakage)
    baselines_frame = pd.DataFrame(baselines)
    curves_frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    with FileSet(out, "suite-tables") as files:  # a kill leaves the old tables or the new, never a mixture
        for name, table_frame in (("metrics", frame), ("paired_tests", tests_frame), ("headline", headline),
                                  ("leakage", leakage_frame), ("baselines", baselines_frame),
                                  ("learning_curves", curves_frame), ("site_shift", site_shift)):
            table_frame.to_csv(files.path(f"suite_{name}.csv"), index=False)
    seconds = time.perf_counter() - started
    report = write_suite_report(out / "report.html", config, profile_name, frame, tests_frame, headline,
                                leakage_frame, baselines_frame, curves_frame, results, seconds,
                                site_shift=site_shift)
    stage_done("suite report written", str(report), seconds)
    atomic_write_text(out / "suite_summary.json", json.dumps({"profile": profile_name, "seconds": seconds,
                                                             "studies": list(results), "seeds": chosen.seeds},
                                                            indent=2))
    return SuiteResult(site_shift, frame, tests_frame, headline, leakage_frame, baselines_frame, curves_frame, report, seconds,
                       results)


def run_suite_site_shift(config: StudySuiteConfig, profile_name: str, chosen: SuiteProfile, runs, out: Path,
                         progress: bool, only: list[str] | None, tables: CaseTables) -> pd.DataFrame:
    """Every site-shift experiment the profile asks for, on its study's first-seed settings
    (``tables``: the case tables the suite has read already)."""
    names = [spec.name for spec in config.site_shift]
    if chosen.site_shift_for is not None:
        unknown = sorted(set(chosen.site_shift_for) - set(names))
        if unknown:
            raise ConfigError(f"profile '{profile_name}': site_shift_for names unknown experiments {unknown}")
    studies = {}
    for name, _, study in runs:
        studies.setdefault(name, study)
    frames = []
    for spec in config.site_shift:
        if chosen.site_shift_for is not None and spec.name not in chosen.site_shift_for:
            continue
        if only and spec.study not in only:
            continue
        if spec.study not in studies:
            raise ConfigError(f"site_shift '{spec.name}': study '{spec.study}' is not among the suite's studies")
        study = studies[spec.study]
        study = prepare_data(study)
        begun = time.perf_counter()
        frames.append(run_site_shift(spec, study, out / "site_shift" / spec.name, progress=progress,
                                     table=tables.load(study)))
        stage_done("site shift evaluated", spec.name, time.perf_counter() - begun)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def violations(result: SuiteResult) -> int:
    """Total leakage violations over every study and seed (must be 0)."""
    return int(result.leakage["violations"].sum()) if not result.leakage.empty else 0

