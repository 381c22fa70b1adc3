"""The experiment, training and serve configs and the records they share (``settings``): their defaults, one-line errors naming the field, and paths.

Each config is read the same way (:class:`seeinpairs.configfile.ConfigFile`); these tests pin what
each adds: the defaults a minimal file gets, the checks across fields, and which paths resolve
against the file's folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seeinpairs.errors import ConfigError
from seeinpairs.evaluation.config import ExperimentConfig
from seeinpairs.serve.schemas import ServeConfig
from seeinpairs.settings import ConditionConfig, PartialTask, complete_task
from seeinpairs.tasks import Task
from seeinpairs.training.config import LoraConfig, TrainConfig

TASK = {"question": "Is the query abnormal?", "classes": ["normal", "abnormal"], "healthy_class": "normal"}
DATA = {"manifest": "data/manifest.csv"}


def experiment(**fields) -> dict:
    return {"task": TASK, "data": DATA, "models": [{"tiny": "qwen2_vl"}], **fields}


def training(**fields) -> dict:
    return {"task": TASK, "data": DATA, "model": {"tiny": "qwen2_vl"}, **fields}


def serving(**fields) -> dict:
    return {"task": TASK, "data": DATA, "model": {"name": "org/served-model"}, **fields}


def error_of(config_class, data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_class.from_dict(data, source="c.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


# ----- experiment configs ------------------------------------------------------------------------
def test_a_minimal_experiment_gets_the_single_image_condition_on_the_test_split():
    config = ExperimentConfig.from_dict(experiment())
    assert config.name == "experiment" and config.output_dir == Path("runs/experiment")
    assert config.eval.split == "test" and config.eval.seeds == [0] and config.eval.n_boot == 1000
    assert config.eval.conditions == [ConditionConfig(selector="none", k=0)] and config.eval.max_cases is None
    assert config.bank.split == "train" and config.bank.cache_dir is None
    model = config.models[0]
    assert (model.backend, model.dtype, model.device, model.batch_size, model.tiny_seed) == \
        ("hf", "float32", "auto", 8, 0)
    assert model.display == "tiny-qwen2_vl-0" and not config.data.allow_outside_root


@pytest.mark.parametrize("change, expected", [
    ({"models": []}, "field 'models': List should have at least 1 item"),
    ({"models": [{"tiny": "qwen2_vl", "name": "org/m"}]},
     "field 'models.0': give exactly one of 'name' (hub id or folder) or 'tiny' (a tiny model family)"),
    ({"models": [{"tiny": "qwen2_vl", "batch_size": 0}]},
     "field 'models.0.batch_size': Input should be greater than or equal to 1"),
    ({"models": [{"tiny": "qwen2_vl", "options": {"prefix_cach": True}}]}, "field 'models.0.options.prefix_cach'"),
    ({"models": [{"tiny": "qwen2_vl", "backend": "nope"}]}, "field 'models.0.backend'"),
    ({"models": [{"tiny": "qwen2_vl"}, {"tiny": "qwen2_vl"}]}, "models need distinct labels"),
    ({"eval": {"conditions": [{"selector": "random", "k": -1}]}},
     "field 'eval.conditions.0.k': k must be a non-negative integer or a non-empty list of them"),
    ({"eval": {"conditions": [{"k": 2}]}},
     "field 'eval.conditions.0': selector 'none' gives no references: use k 0, or name a selector for k > 0"),
    ({"eval": {"baseline_model": "other"}}, "eval.baseline_model 'other' is not one of the model labels"),
    ({"eval": {"seeds": []}}, "field 'eval.seeds': List should have at least 1 item"),
    ({"data": {**DATA, "synthetic": {}, "dataset": {"name": "x", "root": "y"}}},
     "field 'data': give at most one of 'synthetic' and 'dataset'"),
    ({"data": {**DATA, "dataset": {"name": "aptos"}}}, "field 'data': 'dataset' needs 'name' and 'root'"),
    ({"bank": {"split": "train", "size": 3}}, "field 'bank.size': Extra inputs are not permitted"),
])
def test_experiment_errors_are_one_line_naming_the_field(change, expected):
    assert expected in error_of(ExperimentConfig, experiment(**change))


def test_a_task_may_leave_fields_out_only_when_an_adapter_supplies_them():
    with_adapter = ExperimentConfig.from_dict(experiment(task={"name": "dr"}, data={
        **DATA, "dataset": {"name": "aptos", "root": "raw"}}))
    assert isinstance(with_adapter.task, PartialTask) and with_adapter.task.name == "dr"
    assert error_of(ExperimentConfig, experiment(task={"name": "dr"})).startswith(
        "c.yaml: field 'task.question': Field required")


def test_a_partial_task_is_completed_from_the_adapters_and_a_full_task_is_kept():
    adapter = Task(question="Grade?", classes=["no_dr", "dr"], healthy_class="no_dr", modality="fundus photo")
    completed = complete_task(PartialTask(question="Any retinopathy?"), adapter, "aptos")
    assert (completed.question, completed.classes, completed.modality) == ("Any retinopathy?", ["no_dr", "dr"],
                                                                            "fundus photo")
    own = Task(question="Mine?", classes=["dr", "no_dr"], healthy_class="dr")
    assert complete_task(own, adapter, "aptos") is own
    with pytest.raises(ConfigError, match=r"^field 'task.classes': normal, sick are not the classes of dataset 'aptos' "
                                          r"\(no_dr, dr\)"):
        complete_task(PartialTask(classes=["normal", "sick"]), adapter, "aptos")


def test_a_condition_expands_to_one_entry_per_k_with_k0_the_single_image_baseline():
    condition = ConditionConfig(selector="random", k=[0, 2, 4], params={"pool": 3})
    assert condition.expand() == [("none", 0, {}), ("random", 2, {"pool": 3}), ("random", 4, {"pool": 3})]


def test_experiment_paths_resolve_against_the_files_folder(tmp_path):
    (tmp_path / "cfg" / "models" / "local").mkdir(parents=True)
    path = tmp_path / "cfg" / "e.yaml"
    path.write_text(
        "task: {question: 'Abnormal?', classes: [normal, abnormal], healthy_class: normal}\n"
        "data: {manifest: data/m.csv, image_root: images, roots: [more],\n"
        "       dataset: {name: aptos, root: raw, options: {labels_csv: raw/labels.csv, grade: 2}}}\n"
        "bank: {cache_dir: cache}\n"
        "models: [{name: models/local}, {name: org/hub-model}]\n"
        "output_dir: ../runs/e\n")
    config = ExperimentConfig.from_yaml(path)
    folder = tmp_path / "cfg"
    assert (config.data.manifest, config.data.image_root, config.data.roots) == \
        (folder / "data" / "m.csv", folder / "images", [folder / "more"])
    assert config.data.dataset["root"] == str(folder / "raw")
    assert config.data.dataset["options"] == {"labels_csv": str(folder / "raw" / "labels.csv"), "grade": 2}
    assert config.bank.cache_dir == folder / "cache" and config.output_dir == tmp_path / "runs" / "e"
    # a name that is a folder next to the config is that folder; anything else stays a hub id
    assert [m.name for m in config.models] == [str(folder / "models" / "local"), "org/hub-model"]


def test_an_output_dir_that_is_a_file_is_an_error_naming_the_config_and_field(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    path = tmp_path / "e.yaml"
    path.write_text("task: {question: 'Abnormal?', classes: [normal, abnormal], healthy_class: normal}\n"
                    "data: {manifest: m.csv}\nmodels: [{tiny: qwen2_vl}]\noutput_dir: runs\n")
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_yaml(path)
    assert str(info.value) == f"{path}: field 'output_dir': {tmp_path / 'runs'} exists and is not a folder"


# ----- training configs --------------------------------------------------------------------------
def test_a_minimal_training_config_trains_with_one_random_reference_and_validates_on_val():
    config = TrainConfig.from_dict(training())
    assert (config.selector, config.k, config.vary_references, config.train_split, config.val_split) == \
        ("random", 1, True, "train", "val")
    assert config.ks == [1] and config.validation_k == 1 and config.paired
    assert (config.epochs, config.max_steps, config.batch_size, config.lr, config.eval_every) == (1, None, 8, 2e-4, 50)
    assert config.max_val_cases == 200 and config.class_balance == "auto" and config.augment is None
    assert (config.lora.enabled, config.lora.r, config.lora.alpha) == ("auto", 16, 32.0)
    assert config.output_dir == Path("runs/sft")


def test_a_list_of_k_trains_one_model_for_several_k_and_validates_at_the_largest():
    config = TrainConfig.from_dict(training(k=[0, 2]))
    assert config.ks == [0, 2] and config.validation_k == 2 and config.paired
    single = TrainConfig.from_dict(training(k=0, selector="none"))
    assert not single.paired and single.validation_k == 0


@pytest.mark.parametrize("change, expected", [
    ({"k": 0, "val_k": 1}, "field 'val_k': val_k > 0 needs training with references (k > 0)"),
    ({"tiny_spec": {"depth": 3}}, "field 'tiny_spec': unknown TinySpec field(s) depth (known: "),
    ({"lora": {"dropout": 1.0}}, "field 'lora.dropout': Input should be less than 1"),
    ({"lora": {"quantize": 3}}, "field 'lora.quantize': Input should be 4 or 8"),
    ({"lr": 0}, "field 'lr': Input should be greater than 0"),
    ({"mixed_precision": "fp8"}, "field 'mixed_precision': Input should be 'no', 'bf16' or 'fp16'"),
    ({"model": {"tiny": "qwen2_vl", "name": "org/m"}}, "field 'model': give exactly one of 'name'"),
    ({"learning_rate": 1e-3}, "field 'learning_rate': Extra inputs are not permitted"),
])
def test_training_errors_are_one_line_naming_the_field(change, expected):
    assert expected in error_of(TrainConfig, training(**change))


def test_the_dumped_training_config_leaves_out_settings_at_their_default_so_older_runs_still_match():
    later = ("class_balance", "mixed_precision", "gradient_checkpointing", "report_to", "max_image_tokens", "augment")
    dumped = TrainConfig.from_dict(training()).model_dump()
    assert not set(later) & set(dumped) and "quantize" not in dumped["lora"]
    changed = TrainConfig.from_dict(training(class_balance="loss", mixed_precision="bf16", gradient_checkpointing=True,
                                             max_image_tokens=64, lora={"quantize": 4})).model_dump()
    assert {k: changed[k] for k in later if k in changed} == {
        "class_balance": "loss", "mixed_precision": "bf16", "gradient_checkpointing": True, "max_image_tokens": 64}
    assert changed["lora"]["quantize"] == 4


def test_lora_targets_are_explicit_else_read_from_the_model_else_a_one_line_error_naming_the_field():
    assert LoraConfig(target_modules=["q_proj"]).targets(torch.nn.Linear(2, 2)) == ["q_proj"]
    with pytest.raises(ConfigError, match=r"^field 'lora.target_modules': no language model with attention "
                                          r"projections found in Linear; name the modules to adapt"):
        LoraConfig().targets(torch.nn.Linear(2, 2))


def test_training_paths_resolve_against_the_files_folder(tmp_path):
    path = tmp_path / "cfg" / "t.yaml"
    path.parent.mkdir()
    path.write_text("task: {question: 'Abnormal?', classes: [normal, abnormal], healthy_class: normal}\n"
                    "data: {manifest: m.csv}\nmodel: {tiny: qwen2_vl}\noutput_dir: out\n")
    config = TrainConfig.from_yaml(path)
    assert config.data.manifest == tmp_path / "cfg" / "m.csv" and config.output_dir == tmp_path / "cfg" / "out"


# ----- serve configs -----------------------------------------------------------------------------
def test_a_minimal_serve_config_has_bounded_requests_and_two_random_references():
    config = ServeConfig.from_dict(serving())
    assert (config.selector.name, config.selector.k, config.bank.split) == ("random", 2, "train")
    assert config.auth_token is None and config.max_upload_bytes == 20_000_000
    assert config.max_request_bytes == 20_000_000 * 4 // 3 + 65536
    assert (config.max_prompt_tokens, config.max_concurrent_decodes, config.max_tokens_limit) == (8192, 2, 256)
    assert (config.model.backend, config.model.device, config.viewer.max_k) == ("hf", "cpu", 4)


@pytest.mark.parametrize("change, expected", [
    ({"model": {"label": "x"}}, "field 'model.name': Field required"),
    ({"model": {"name": "m", "options": {"base_url": "http://x"}}}, "field 'model.options.base_url'"),
    ({"selector": {"name": "random", "k": -1}}, "field 'selector.k': Input should be greater than or equal to 0"),
    ({"viewer": {"max_k": 17}}, "field 'viewer.max_k': Input should be less than or equal to 16"),
    ({"thumbnail_size": 8}, "field 'thumbnail_size': Input should be greater than or equal to 16"),
    ({"task": {"name": "t"}}, "field 'task.question': Field required"),
    ({"port": 8000}, "field 'port': Extra inputs are not permitted"),
    ({"model": {"name": "m", "conditions": [{"k": 0}]}}, "field 'model': a served model has no 'conditions'"),
])
def test_serve_errors_are_one_line_naming_the_field(change, expected):
    assert expected in error_of(ServeConfig, serving(**change))


def test_a_served_hf_models_local_folder_resolves_against_the_file_and_other_backends_keep_their_name(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    path = tmp_path / "s.yaml"
    text = ("task: {question: 'Abnormal?', classes: [normal, abnormal], healthy_class: normal}\n"
            "data: {manifest: m.csv}\nmodel: {name: models/mine%s}\n")
    path.write_text(text % "")
    config = ServeConfig.from_yaml(path)
    assert config.model.name == str(tmp_path / "models" / "mine") and config.data.manifest == tmp_path / "m.csv"
    path.write_text(text % ", backend: openai_compat, options: {base_url: 'http://gpu:8000/v1'}")
    remote = ServeConfig.from_yaml(path).model
    assert (remote.backend, remote.name) == ("openai_compat", "models/mine")  # a served name, not a folder
