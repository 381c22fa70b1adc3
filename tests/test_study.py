"""The study pipeline end to end on a very small budget (the demo runs the full-size version)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from seeinpairs.datasets.synthetic import SYNTHETIC_TASK
from seeinpairs.errors import BackendError
from seeinpairs.settings import ModelConfig
from seeinpairs.studies.study import StudyConfig, run_study


def small_study(tmp_path) -> StudyConfig:
    return StudyConfig.from_dict({
        "name": "small",
        "task": SYNTHETIC_TASK.model_dump(),
        "data": {"manifest": str(tmp_path / "data" / "manifest.csv"), "synthetic": {"n_patients": 40, "seed": 1}},
        "model": {"tiny": "qwen2_vl", "batch_size": 8, "device": "cpu"},
        "tiny_spec": {"text_layers": 1, "vision_layers": 1},
        "train": {"max_steps": 3, "batch_size": 4, "eval_every": 3, "max_val_cases": 8},
        "paired_training": {"selector": "random", "k": [1, 2]},
        "eval": {"split": "test", "n_boot": 20, "max_cases": 12,
                 "conditions": [{"selector": "random", "k": [1, 2]}, {"selector": "embedding", "k": 1}]},
        "sample_efficiency": {"ladder": [8, "all"], "train": {"max_steps": 2}},
        "examples": 2,
        "anchor": {"source": "a published model", "metrics": {"auroc": 0.9, "accuracy": 0.8}, "note": "other split"},
        "evidence": {"n_localization": 3, "n_cases": 8, "n_boot": 20, "methods": ["grad_x_input", "attention"],
                     "n_overlays": 1},
        "output_dir": str(tmp_path / "study"),
    })


def test_study_trains_both_modes_on_the_same_cases_and_writes_the_report(tmp_path):
    config = small_study(tmp_path)
    result = run_study(config, progress=False)
    single, paired = result.training["single"], result.training["paired"]
    assert single["train_case_ids"] == paired["train_case_ids"]
    summary = result.evaluation.summary
    assert set(summary["model"]) == {"single-trained", "paired-trained"}
    assert list(summary.loc[summary["model"] == "single-trained", "k"]) == [0]
    assert sorted(summary.loc[summary["model"] == "paired-trained", "k"]) == [1, 1, 2]
    assert set(result.evaluation.paired_tests["baseline"]) == {"single-trained"}
    curves = result.learning_curves
    assert set(curves["mode"]) == {"single", "paired"}
    assert sorted(set(curves["n_train"]))[0] == 8 and len(set(curves["n_train"])) == 2
    html = result.report.read_text()
    for section in ("Findings", "Metrics", "Paired vs single", "Sample efficiency", "Examples"):
        assert section in html
    assert "data:image/png;base64," in html
    assert "Published anchor (a published model): AUROC 0.900, accuracy 0.800 — other split" in html
    assert "published anchor" not in html.split("</header>")[0]  # beside the results, not JSON in the header
    # the evidence section: localization of both models on the same abnormal cases, swaps, layers
    assert '<section id="evidence">' in html and "energy inside mask" in html
    evidence = result.evidence
    assert set(evidence.localization["model"]) == {"single", "paired"}
    by_model = evidence.localization.groupby("model")["case_id"].apply(frozenset)
    assert by_model["single"] == by_model["paired"] and len(by_model["single"]) == 3
    assert set(evidence.swaps["swap"]) == {"random_healthy", "abnormal"} and not evidence.layers.empty
    assert (tmp_path / "study" / "evidence" / "localization_summary.csv").exists()

    # a second run reuses the trained models and stored predictions
    again = run_study(config, progress=False)
    pd.testing.assert_frame_equal(again.evaluation.summary, result.evaluation.summary)
    assert json.loads((tmp_path / "study" / "study_summary.json").read_text())["seconds"] < result.seconds


def test_a_study_reads_its_manifest_once_and_hands_the_cases_to_every_stage(tmp_path, monkeypatch):
    from seeinpairs.cases import CaseTable
    from seeinpairs.studies.study import SampleEfficiencyConfig

    sweep = SampleEfficiencyConfig(ladder=[8], train={"max_steps": 1})
    config = small_study(tmp_path).model_copy(update={"evidence": None, "sample_efficiency": sweep})
    load = CaseTable.load.__func__
    reads = []

    def counted_load(cls, path, *args, **kwargs):
        reads.append(Path(path).resolve())
        return load(cls, path, *args, **kwargs)

    monkeypatch.setattr(CaseTable, "load", classmethod(counted_load))
    result = run_study(config, progress=False)
    assert not result.learning_curves.empty and result.training["paired"]["steps"] == 3  # every stage ran
    assert reads == [Path(config.data.manifest).resolve()]


def test_changed_training_settings_retrain_instead_of_reusing(tmp_path):
    config = small_study(tmp_path).model_copy(update={"sample_efficiency": None, "examples": 0})
    first = run_study(config, progress=False)
    longer = config.model_copy(update={"train": {**config.train, "max_steps": 4}})
    second = run_study(longer, progress=False)
    assert first.training["single"]["steps"] == 3 and second.training["single"]["steps"] == 4


def test_a_flat_training_loss_labels_that_models_conditions_as_failed_training():
    from seeinpairs.evaluation.degenerate import failed_rows
    from seeinpairs.studies.study import mark_failed_training, training_failure

    summary = pd.DataFrame({"model": ["single-trained", "paired-trained", "paired-trained"], "k": [0, 1, 2],
                            "degenerate": ["", "", "near-constant probabilities (largest sd over cases 0.0002 < 0.005)"],
                            "auroc": [0.74, 0.5, 0.5]})
    flat = {"training_flags": {"flat_loss": {"flagged": True, "why": "flat training loss: 0.583 at the prior"}}}
    assert training_failure({"training_flags": {"flat_loss": {"flagged": False}}}) == ""
    assert training_failure({}) == "" and training_failure(flat) == "flat training loss: 0.583 at the prior"
    marked = mark_failed_training(summary, {"single-trained": "", "paired-trained": training_failure(flat)})
    assert failed_rows(marked).tolist() == [False, True, True]
    assert marked["degenerate"].tolist()[1] == "flat training loss: 0.583 at the prior"
    assert marked["degenerate"].tolist()[2].startswith("near-constant") and "flat training loss" in marked["degenerate"][2]
    assert failed_rows(summary).tolist() == [False, False, True]  # the input is left as it was


def test_a_run_made_before_class_balancing_is_retrained_only_where_balancing_now_applies():
    from seeinpairs.training import same_class_balance

    old_imbalanced = {"train_label_counts": {"normal": 400, "abnormal": 146}}
    old_balanced = {"train_label_counts": {"normal": 139, "abnormal": 122}}
    assert not same_class_balance(old_imbalanced, "auto") and same_class_balance(old_imbalanced, "none")
    assert same_class_balance(old_balanced, "auto")
    new = {**old_imbalanced, "class_balance": {"applied": "sampler"}}
    assert same_class_balance(new, "auto") and not same_class_balance(new, "loss")


def test_a_study_reports_a_model_with_a_flat_training_loss_as_failed_training(tmp_path, monkeypatch):
    import seeinpairs.studies.study as study

    real_train = study.train_condition
    why = "flat training loss: 0.583 over the last 120 steps, 0.584 before, at the class prior's 0.582"

    def train_with_a_flat_paired_loss(config, output_dir, *args, **kwargs):
        checkpoint, summary = real_train(config, output_dir, *args, **kwargs)
        if output_dir.name == "paired":
            summary = {**summary, "training_flags": {"flat_loss": {"flagged": True, "why": why}}}
        return checkpoint, summary

    monkeypatch.setattr(study, "train_condition", train_with_a_flat_paired_loss)
    config = small_study(tmp_path).model_copy(update={"sample_efficiency": None, "examples": 0, "evidence": None})
    result = run_study(config, progress=False)
    summary = result.evaluation.summary
    paired = summary["model"] == "paired-trained"
    assert all(why in text for text in summary.loc[paired, "degenerate"])
    assert not any(why in str(text) for text in summary.loc[~paired, "degenerate"].fillna(""))
    stored = pd.read_csv(tmp_path / "study" / "eval" / "metrics.csv")
    assert stored.loc[stored["model"] == "paired-trained", "degenerate"].str.contains("flat training loss").all()
    html = result.report.read_text()
    assert "Failed training" in html and "flat training loss" in html


def test_a_study_of_a_served_model_says_in_one_line_that_training_needs_local_weights(tmp_path):
    served = ModelConfig(backend="openai_compat", name="served-model", options={"base_url": "http://fake/v1"})
    config = small_study(tmp_path).model_copy(update={"model": served, "tiny_spec": {}})
    with pytest.raises(BackendError, match="^model 'served-model': training needs the model's weights"):
        run_study(config, progress=False)
