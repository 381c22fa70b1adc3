"""The site-shift experiment: do a few healthy references from a new site recover what the shift cost?

For one study (task, data, model, training budget) and one held-out site —
a real acquisition source (leave-one-site-out) or a simulated one
(:func:`~.acquisition.simulate_sites`) — it trains, on the other sites only:

* ``single``: the single-image model;
* ``paired``: the comparative model, trained with same-site healthy references;
* ``single+aug``: the single-image model trained with acquisition augmentation (control);
* ``paired+shared-aug``: the comparative model trained with one acquisition transform
  shared by query and references (the remedy that kept references in use in a probe).

and evaluates on the held-out site's test cases:

* each single model alone, and ``single`` recalibrated on the new site's healthy reference
  images (its healthy-option bias set so that they are predicted healthy at the rate the
  model predicts the training sites' healthy validation cases healthy): the control that
  decides whether references do more than calibrate;
* each paired model with k references from the new site (the reserved
  ``site_reference`` split) and with k references from the training sites;
* ``single`` on the training sites' validation cases: what the shift costs.

Every row has accuracy and AUROC with bootstrap CIs, and the comparisons with
``single`` on the same cases (paired bootstrap deltas, McNemar). Its labels are the
constants below (a :class:`SiteShiftRow` per row; ``reference_site`` says where the
references came from), so that a reader selects rows by comparing with them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..atomic import FileSet
from ..cases import CaseTable
from ..errors import ConfigError
from ..evaluation.config import ExperimentConfig
from ..evaluation.runner import run_experiment
from ..evaluation.stats import mcnemar, paired_bootstrap_delta, summarise
from ..settings import BankConfig, ConditionConfig, DataConfig, ModelConfig
from ..training import train_condition
from .acquisition import create_protocol, simulate_sites
from .augment import AcquisitionAugment
from .protocols import SITE_REFERENCE_SPLIT, leave_one_site_out
from .recalibration import recalibrate, specificity


class SiteShiftSpec(BaseModel):
    """One site-shift experiment of a suite: which study, which site is new, how many references."""

    model_config = ConfigDict(extra="forbid")

    name: str
    study: str
    kind: Literal["leave_one_site_out", "simulated"]
    #: the new site (leave_one_site_out: a value of the ``site`` field; simulated: default the protocol's)
    held_out: str | None = None
    protocol: str = "default4"
    #: healthy cases of the new site reserved as references (never queries)
    site_references: int = Field(20, ge=1)
    k: int = Field(2, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = 0
    #: augmentation of the control and the remedy (default ranges; simulated protocols: ranges spanning
    #: the training sites only when ``augment_span_training_sites`` is true)
    augment: dict[str, Any] = Field(default_factory=dict)
    augment_span_training_sites: bool = True


#: the four trained models, by their labels in the site-shift table
MODELS = SINGLE, PAIRED, SINGLE_AUG, PAIRED_SHARED_AUG = ("single", "paired", "single+aug", "paired+shared-aug")
#: ``single`` with its healthy-option bias refitted on the new site's healthy references
RECALIBRATED = "single recalibrated on new-site healthy references"
#: the controls without references at inference that paired prompting has to beat
CONTROLS = (RECALIBRATED, SINGLE_AUG)
#: where a row was evaluated (``evaluated_on``) and where its references came from (``reference_site``)
NEW_SITE = "new site"
TRAINING_SITES = "training sites"
ON_TRAINING_SITES = "training sites (validation, no shift)"
NO_REFERENCES = "none"
_REFERENCES_FROM = {NEW_SITE: "new-site", TRAINING_SITES: "training-site"}


class SiteShiftRow(NamedTuple):
    """One row of the site-shift table, typed, so that its readers select rows on fields, not on display texts."""

    model: str
    evaluated_on: str
    reference_site: str = NO_REFERENCES
    k: int = 0

    @property
    def references(self) -> str:
        """The ``references`` column as shown: ``none`` or ``"<k> new-site references"`` (or training-site)."""
        if self.reference_site == NO_REFERENCES:
            return NO_REFERENCES
        return f"{self.k} {_REFERENCES_FROM[self.reference_site]} references"


def build_shifted_table(spec: SiteShiftSpec, table: CaseTable, healthy_class: str, out_dir: Path) -> tuple[CaseTable, str]:
    """The study's table re-split for the held-out site (and re-rendered for simulated sites)."""
    if spec.kind == "simulated":
        protocol = create_protocol(spec.protocol)
        held_out = spec.held_out or protocol.held_out
        table = simulate_sites(table, protocol, out_dir / "images", seed=spec.seed, held_out=held_out)
    else:
        if spec.held_out is None:
            raise ConfigError(f"site_shift '{spec.name}': leave_one_site_out needs held_out (a site name)")
        held_out = spec.held_out
    shifted = leave_one_site_out(table, held_out, val_fraction=spec.val_fraction, seed=spec.seed,
                                 site_references=spec.site_references, healthy_label=healthy_class, missing_site="drop")
    return shifted, held_out


def _augment(spec: SiteShiftSpec, shared: bool) -> dict[str, Any]:
    settings = {**spec.augment, "shared": shared}
    if spec.kind == "simulated" and spec.augment_span_training_sites:
        protocol = create_protocol(spec.protocol)
        held_out = spec.held_out or protocol.held_out
        augment = AcquisitionAugment.spanning([t for s, t in protocol.sites.items() if s != held_out], **settings)
    else:
        augment = AcquisitionAugment(**settings)
    return augment.model_dump(mode="json")


def run_site_shift(spec: SiteShiftSpec, study, out_dir: Path, progress: bool = True,
                   table: CaseTable | None = None) -> pd.DataFrame:
    """Train the four models of ``spec`` on ``study``'s settings and evaluate them on the new site.

    ``table``: the cases ``study.data`` describes, when the caller has read them already; the
    re-split table of the new site is written once and read once, then handed to every stage."""
    out_dir.mkdir(parents=True, exist_ok=True)
    task = study.task
    manifest = out_dir / "data" / "manifest.csv"
    if not manifest.exists():
        source = table if table is not None else study.data.load_table(classes=task.classes)
        shifted, held_out = build_shifted_table(spec, source, task.healthy_class, out_dir / "data")
        shifted.save(manifest)
    else:
        held_out = spec.held_out or create_protocol(spec.protocol).held_out
    # the shifted manifest points back at the study's images: their folders stay allowed
    data = DataConfig(manifest=manifest, roots=[Path(study.data.manifest).parent, *study.data.table_roots()],
                      allow_outside_root=study.data.allow_outside_root)
    shifted = data.load_table(classes=task.classes)
    config = study.model_copy(update={"data": data, "bank": BankConfig(split="train"),
                                      "output_dir": out_dir})
    k_train = study.paired_training.k
    models = out_dir / "models"
    checkpoints = {label: train_condition(config, models / folder, k, selector, overrides=overrides,
                                          progress=progress, table=shifted).checkpoint
                   for label, folder, k, selector, overrides in (
                       (SINGLE, "single", 0, "none", {}),
                       (PAIRED, "paired", k_train, "same_center", {}),
                       (SINGLE_AUG, "single-aug", 0, "none", {"augment": _augment(spec, shared=False)}),
                       (PAIRED_SHARED_AUG, "paired-shared-aug", k_train, "same_center",
                        {"augment": _augment(spec, shared=True)}))}
    model = study.model

    def entry(label: str, conditions: list[ConditionConfig]) -> ModelConfig:
        return ModelConfig(name=str(checkpoints[label]), label=label, batch_size=model.batch_size,
                           device=model.device, conditions=conditions)

    single_only = [ConditionConfig(selector="none", k=0)]
    references = [ConditionConfig(selector="random", k=spec.k)]

    def evaluate(tag: str, split: str, bank: str, models: list[ModelConfig], every_case: bool = False):
        max_cases = None if every_case else study.eval.max_cases
        experiment = ExperimentConfig(name=f"{spec.name}-{tag}", task=task, data=config.data,
                                      bank=BankConfig(split=bank), models=models,
                                      eval=study.eval.model_copy(update={"split": split, "max_cases": max_cases,
                                                                         "baseline_model": SINGLE,
                                                                         "conditions": single_only}),
                                      output_dir=out_dir / "eval" / tag)
        return run_experiment(experiment, progress=progress, table=shifted)

    pairs = (PAIRED, PAIRED_SHARED_AUG)
    singles = [entry(m, single_only) for m in (SINGLE, SINGLE_AUG)]
    new_site = evaluate("new-site-references", "test", SITE_REFERENCE_SPLIT,
                        singles + [entry(m, references) for m in pairs])
    training_sites = evaluate("training-site-references", "test", "train",
                              [entry(SINGLE, single_only)] + [entry(m, references) for m in pairs])
    calibration_refs = evaluate("single-on-new-site-references", SITE_REFERENCE_SPLIT, "train",
                                [entry(SINGLE, single_only)], every_case=True)
    in_distribution = evaluate("single-on-training-sites", "val", "train", [entry(SINGLE, single_only)])

    single_test = new_site.records_for(SINGLE, "none", 0)
    target = specificity(in_distribution.records_for(SINGLE, "none", 0), task.healthy_class)
    recalibrated, bias = recalibrate(single_test, calibration_refs.records_for(SINGLE, "none", 0),
                                     task.healthy_class, target)
    rows = {
        SiteShiftRow(SINGLE, ON_TRAINING_SITES): in_distribution.records_for(SINGLE, "none", 0),
        SiteShiftRow(SINGLE, NEW_SITE): single_test,
        SiteShiftRow(RECALIBRATED, NEW_SITE): recalibrated,
        SiteShiftRow(SINGLE_AUG, NEW_SITE): new_site.records_for(SINGLE_AUG, "none", 0),
    }
    for label in pairs:
        rows[SiteShiftRow(label, NEW_SITE, NEW_SITE, spec.k)] = new_site.records_for(label, "random", spec.k)
        rows[SiteShiftRow(label, NEW_SITE, TRAINING_SITES, spec.k)] = training_sites.records_for(label, "random",
                                                                                                spec.k)
    summary = summarise(rows, task.classes, task.healthy_class,
                        n_boot=study.eval.n_boot, metrics=["accuracy", "auroc", "balanced_accuracy"])
    frame = []
    for key, (_, row) in zip(rows, summary.iterrows()):
        record = {"experiment": spec.name, "held_out": held_out, "model": key.model, "evaluated_on": key.evaluated_on,
                  "references": key.references, "reference_site": key.reference_site,
                  **row.drop(labels=["condition"]).to_dict()}
        recs = rows[key]
        if key.evaluated_on == NEW_SITE and recs is not single_test:
            test = mcnemar(single_test, recs)
            record.update({"mcnemar_p_vs_single": test["p"]})
            for metric in ("accuracy", "auroc"):
                delta = paired_bootstrap_delta(single_test, recs, task.classes, task.healthy_class, metric,
                                               n_boot=study.eval.n_boot)
                record.update({f"delta_{metric}_vs_single": delta["delta"], f"delta_{metric}_lo": delta["lo"],
                               f"delta_{metric}_hi": delta["hi"]})
        frame.append(record)
    result = pd.DataFrame(frame)
    with FileSet(out_dir, "site-shift") as files:  # the table and its recalibration belong together
        result.to_csv(files.path("site_shift.csv"), index=False)
        files.path("recalibration.json").write_text(json.dumps(
            {**bias.to_dict(), "target_from": "single on training-site validation healthy cases"},
            indent=2, default=str))
    return result
