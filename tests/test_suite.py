"""The study suite: profiles, seeds, the leakage audit and the report; the real-data config's quick profile."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from shared_helpers import SHARED_DATA

from seeinpairs.cases import CaseTable
from seeinpairs.datasets.synthetic import SYNTHETIC_TASK
from seeinpairs.errors import ConfigError
from seeinpairs.siteshift.experiment import (NEW_SITE, ON_TRAINING_SITES, PAIRED, RECALIBRATED, SINGLE, SINGLE_AUG,
                                             TRAINING_SITES, SiteShiftRow)
from seeinpairs.studies.baselines import BASELINES
from seeinpairs.studies.suite import BaselineSpec, StudySuiteConfig, deep_merge, run_suite, violations
from seeinpairs.studies.suite_report import site_shift_findings

REAL_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "study_real.yaml"


def synthetic_study(name, root, seed):
    return {"name": name, "task": SYNTHETIC_TASK.model_dump(),
            "data": {"manifest": str(root / name / "manifest.csv"), "synthetic": {"n_patients": 40, "seed": seed}},
            "model": {"tiny": "qwen2_vl", "batch_size": 8, "device": "cpu"},
            "tiny_spec": {"text_layers": 1, "vision_layers": 1},
            "train": {"max_steps": 2, "batch_size": 4, "eval_every": 2, "val_split": None},
            "paired_training": {"selector": "random", "k": 1},
            "eval": {"split": "test", "n_boot": 20, "max_cases": 6, "conditions": [{"selector": "random", "k": [1, 2]}]},
            "sample_efficiency": {"ladder": [6], "train": {"max_steps": 1}}}


def test_deep_merge_replaces_lists_and_merges_mappings():
    base = {"train": {"max_steps": 600, "lr": 0.001}, "eval": {"conditions": [1, 2]}}
    merged = deep_merge(base, {"train": {"max_steps": 8}, "eval": {"conditions": [3]}})
    assert merged == {"train": {"max_steps": 8, "lr": 0.001}, "eval": {"conditions": [3]}}
    assert base["train"]["max_steps"] == 600  # not mutated


def test_baseline_spec_names_registered_baselines_and_hands_each_only_its_own_options():
    spec = BaselineSpec(c=0.5, epochs=3)
    assert spec.kinds == ["logistic", "cnn"] and set(spec.kinds) <= set(BASELINES.list_names())
    assert spec.options_for("logistic") == {"c": 0.5} and spec.options_for("cnn") == {"epochs": 3}
    with pytest.raises(ValueError, match=r"unknown baseline\(s\) svm \(known: cnn, logistic\)"):
        BaselineSpec(kinds=["logistic", "svm"])


def test_suite_runs_every_study_and_seed_audits_and_reports(tmp_path):
    config = StudySuiteConfig.from_dict({
        "name": "t", "profile": "tiny",
        "profiles": {"tiny": {"seeds": [0, 1], "overrides": {"eval": {"max_cases": 5}}, "sample_efficiency_for": ["a"]}},
        "studies": [synthetic_study("a", tmp_path / "data", 1), synthetic_study("b", tmp_path / "data", 2)],
        "output_dir": str(tmp_path / "suite")})
    runs = config.study_configs()
    assert [(name, seed) for name, seed, _ in runs] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert [c.train["seed"] for _, _, c in runs] == [0, 1, 0, 1]
    assert [c.sample_efficiency is not None for _, _, c in runs] == [True, False, False, False]
    assert runs[0][2].sample_efficiency.seeds == [0, 1] and runs[0][2].eval.max_cases == 5
    result = run_suite(config, progress=False)
    assert set(result.metrics["study"]) == {"a", "b"} and set(result.metrics["seed"]) == {0, 1}
    assert violations(result) == 0 and result.leakage["references"].sum() > 0
    assert set(result.headline["study"]) == {"a", "b"}
    assert set(result.baselines["study"]) == {"a", "b"}
    html = result.report.read_text()
    assert '<section id="headline">' in html and '<section id="study-a">' in html and '<section id="study-b">' in html
    assert '<section id="metrics">' not in html  # a page of sections, not a single experiment's
    assert (tmp_path / "suite" / "tiny" / "suite_headline.csv").exists()
    with pytest.raises(ConfigError, match="profile 'huge' is not defined"):
        config.study_configs("huge")



def site_shift_frame(accuracy: dict) -> pd.DataFrame:
    """A site-shift table with the experiment's own row labels; accuracy and AUROC equal per row."""
    return pd.DataFrame([{"experiment": "e", "held_out": "c", "model": row.model, "evaluated_on": row.evaluated_on,
                          "references": row.references, "reference_site": row.reference_site,
                          "accuracy": value, "auroc": value} for row, value in accuracy.items()])


def test_site_shift_findings_compare_new_site_references_with_the_controls():
    rows = {SiteShiftRow(SINGLE, ON_TRAINING_SITES): 0.9, SiteShiftRow(SINGLE, NEW_SITE): 0.6,
            SiteShiftRow(RECALIBRATED, NEW_SITE): 0.7, SiteShiftRow(SINGLE_AUG, NEW_SITE): 0.65,
            SiteShiftRow(PAIRED, NEW_SITE, NEW_SITE, 2): 0.8, SiteShiftRow(PAIRED, NEW_SITE, TRAINING_SITES, 2): 0.5}
    [text] = site_shift_findings(site_shift_frame(rows))
    assert text.startswith("e (new site c): single accuracy 0.600, AUROC 0.600 (on the training sites 0.900 / 0.900)")
    assert "Best accuracy: paired (2 new-site references) 0.800" in text and "beats both controls" in text
    # only the new-site references count: the training-site row being best does not make paired beat the controls
    rows[SiteShiftRow(PAIRED, NEW_SITE, NEW_SITE, 2)], rows[SiteShiftRow(PAIRED, NEW_SITE, TRAINING_SITES, 2)] = 0.5, 0.8
    [text] = site_shift_findings(site_shift_frame(rows))
    assert "paired (2 training-site references) 0.800" in text and "does not beat both controls" in text

@pytest.mark.skipif(not (SHARED_DATA / "nih_cxr14_nih1000").is_dir(), reason="shared real data not present")
def test_real_suite_quick_profile_on_nih(tmp_path):
    """The real config's quick profile on NIH: patient-level re-split (no patient in two splits), every
    selector the metadata allows, the prior-study mode on the patients that have one, 0 leakage."""
    raw = yaml.safe_load(REAL_CONFIG.read_text())
    raw["output_dir"] = str(tmp_path / "suite")
    for study in raw["studies"]:  # data written under tmp, not into the repository's runs/
        study["data"]["manifest"] = str(tmp_path / study["name"] / "manifest.csv")
        for key in ("image_dir",):
            if key in (study["data"]["dataset"].get("options") or {}):
                study["data"]["dataset"]["options"][key] = str(tmp_path / study["name"] / "png")
    config = StudySuiteConfig.from_dict(raw, base=REAL_CONFIG.parent)
    assert {name for name, _, _ in config.study_configs("full")} == {"pneumoniamnist", "nih", "retinamnist", "ham10000"}
    result = run_suite(config, profile="quick", progress=False, only=["nih"])
    table = CaseTable.load(tmp_path / "nih" / "manifest.csv", allow_outside_root=True)  # images in the data folder
    splits_by_patient = {}
    for case in table:
        splits_by_patient.setdefault(case.patient, set()).add(case.split)
    assert all(len(splits) == 1 for splits in splits_by_patient.values())
    assert violations(result) == 0
    modes = result.metrics.groupby("selector")["mode"].first().to_dict()
    assert modes == {"none": "single", "random": "paired", "embedding": "paired", "demographic": "paired",
                     "prior_study": "prior"}
    assert (tmp_path / "nih" / "resplit_report.json").exists()
    assert "references swapped for" in result.report.read_text()  # the reference-use diagnostics
