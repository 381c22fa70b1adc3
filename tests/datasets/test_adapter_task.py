"""A config whose data come from an adapter takes the adapter's class names, healthy class and question."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from adapter_layouts import build_medmnist

from seeinpairs.datasets.preparation import adapter_task_file, prepare_data
from seeinpairs.datasets.registry import dataset_classes, describe_classes, load_dataset
from seeinpairs.errors import ConfigError
from seeinpairs.evaluation.config import ExperimentConfig
from seeinpairs.evaluation.runner import run_experiment
from seeinpairs.settings import PartialTask, complete_task
from seeinpairs.studies.study import StudyConfig
from seeinpairs.tasks import Task
from seeinpairs.training.config import TrainConfig

ADAPTER = Task(name="breastmnist", question="Malignant?", classes=["malignant", "normal/benign"],
               healthy_class="normal/benign", descriptions={"malignant": "a malignant lesion"},
               modality="breast ultrasound")


def test_missing_fields_come_from_the_adapter_and_given_ones_override():
    task = complete_task(PartialTask(question="Is there a malignant lesion?"), ADAPTER, "medmnist")
    assert task.classes == ["malignant", "normal/benign"] and task.healthy_class == "normal/benign"
    assert task.question == "Is there a malignant lesion?" and task.modality == "breast ultrasound"
    assert task.descriptions == {"malignant": "a malignant lesion"}


def test_given_classes_may_reorder_the_adapters_but_not_rename_them():
    reordered = complete_task(PartialTask(classes=["normal/benign", "malignant"]), ADAPTER, "medmnist")
    assert reordered.classes == ["normal/benign", "malignant"] and reordered.healthy_class == "normal/benign"
    full = Task(question="q?", classes=["normal", "malignant"], healthy_class="normal")
    with pytest.raises(ConfigError) as info:
        complete_task(full, ADAPTER, "medmnist")
    message = str(info.value)
    assert "\n" not in message and "task.classes" in message and "dataset 'medmnist'" in message
    assert "(malignant, normal/benign)" in message  # the adapter's names, printed (never swallowed as markup)


def test_a_healthy_class_outside_the_adapters_classes_is_a_field_error():
    with pytest.raises(ConfigError, match=r"healthy_class 'normal' is not one of the classes"):
        complete_task(PartialTask(healthy_class="normal"), ADAPTER, "medmnist")


def _raw(root: Path, out: Path, task: dict | None) -> dict:
    raw = {"name": "breast",
           "data": {"manifest": str(out / "data" / "manifest.csv"),
                    "dataset": {"name": "medmnist", "root": str(root), "options": {"flag": "breast"}}},
           "models": [{"tiny": "qwen2_vl", "batch_size": 4, "device": "cpu"}],
           "eval": {"split": "test", "n_boot": 20, "conditions": [{"selector": "none", "k": 0}]},
           "output_dir": str(out / "run")}
    return raw if task is None else {**raw, "task": task}


def test_a_config_without_classes_evaluates_with_the_adapters_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEINPAIRS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "medmnist").mkdir()
    layout = build_medmnist(tmp_path / "medmnist")
    config = ExperimentConfig.from_dict(_raw(layout.root, tmp_path, {"question": "Is this lesion malignant?"}))
    assert isinstance(config.task, PartialTask)
    result = run_experiment(config, progress=False)
    assert result is not None
    row = result.summary.iloc[0]
    assert row["n"] == 2  # the fixture's two test cases, labelled with the adapter's class names
    stored = Task.model_validate_json(adapter_task_file(tmp_path / "data" / "manifest.csv").read_text())
    assert sorted(stored.classes) == sorted(layout.classes) and stored.healthy_class == layout.healthy
    runs = json.loads((tmp_path / "run" / "runs.json").read_text())
    task = next(iter(runs.values()))["task"]
    assert task["question"] == "Is this lesion malignant?" and task["healthy_class"] == "normal/benign"


def test_no_task_at_all_takes_the_whole_task_from_the_adapter(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEINPAIRS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "medmnist").mkdir()
    layout = build_medmnist(tmp_path / "medmnist")
    config = prepare_data(ExperimentConfig.from_dict(_raw(layout.root, tmp_path, None)))
    assert config.task.classes == layout.classes and config.task.healthy_class == layout.healthy
    assert config.task.question.startswith("Does this breast ultrasound")
    # the manifest now exists: the stored task is used again, and a config's wrong names are refused
    wrong = ExperimentConfig.from_dict(_raw(layout.root, tmp_path, {"question": "q?", "classes": ["normal", "cancer"],
                                                                   "healthy_class": "normal"}))
    with pytest.raises(ConfigError, match=r"not the classes of dataset 'medmnist' \(normal/benign, malignant\)"):
        prepare_data(wrong)


def test_study_and_training_configs_accept_a_task_from_the_adapter(tmp_path):
    data = {"manifest": "m.csv", "dataset": {"name": "medmnist", "root": "x", "options": {"flag": "breast"}}}
    study = StudyConfig.from_dict({"task": {"question": "q?"}, "data": data, "model": {"tiny": "qwen2_vl"}})
    assert isinstance(study.task, PartialTask)
    train = TrainConfig.from_dict({"data": data, "model": {"tiny": "qwen2_vl"}, "output_dir": str(tmp_path)})
    assert isinstance(train.task, PartialTask) and train.model_dump(mode="json")["task"] == {}


def test_without_an_adapter_the_task_must_be_complete():
    with pytest.raises(ConfigError, match=r"field 'task.classes': Field required"):
        ExperimentConfig.from_dict({"task": {"question": "q?"}, "data": {"manifest": "m.csv"},
                                    "models": [{"tiny": "qwen2_vl"}]})


def test_the_class_table_is_what_the_adapter_gives(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEINPAIRS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "medmnist").mkdir()
    layout = build_medmnist(tmp_path / "medmnist")
    _, task = load_dataset("medmnist", layout.root, **layout.options)
    assert dataset_classes("medmnist")["flag=breastmnist"] == describe_classes(task)
    assert describe_classes(task) == "normal/benign (healthy), malignant"
    assert dataset_classes("nih")["task=binary"] == "normal (healthy), abnormal"
    assert "from" not in dataset_classes("imagefolder") and "folder names" in dataset_classes("imagefolder")[""]
    assert dataset_classes("medmnist")["flag=tissuemnist"].startswith('"collecting duct, connecting tubule", ')


def test_seeinpairs_list_shows_each_adapters_class_names():
    result = subprocess.run([sys.executable, "-m", "seeinpairs.cli", "list"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  medmnist flag=breastmnist: normal/benign (healthy), malignant" in lines
    assert "  aptos task=grade: grade 0 (healthy), grade 1, grade 2, grade 3, grade 4" in lines
    assert any(line.startswith("  imagefolder: the class folder names") for line in lines)


def test_a_full_task_with_the_adapters_classes_is_kept_as_written():
    full = Task(question="Malignant?", classes=["normal/benign", "malignant"], healthy_class="normal/benign")
    assert complete_task(full, ADAPTER, "medmnist") == full  # the same prompts and run keys as before
