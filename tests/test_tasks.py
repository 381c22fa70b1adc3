"""Tests for seeinpairs.tasks: task validation and one-line ConfigErrors naming file and field."""

from __future__ import annotations

import pytest
import yaml

from seeinpairs.errors import ConfigError, SeeInPairsError
from seeinpairs.tasks import Task

VALID = {
    "name": "cxr",
    "question": "Which finding does this chest X-ray show?",
    "classes": ["normal", "pneumonia", "effusion"],
    "healthy_class": "normal",
    "descriptions": {"pneumonia": "patchy consolidation"},
    "modality": "chest X-ray",
}


def config_error(data, source="task.yaml") -> str:
    with pytest.raises(ConfigError) as excinfo:
        Task.from_dict(data, source=source)
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{source}: ")
    assert isinstance(excinfo.value, SeeInPairsError)
    return message


def test_valid_task():
    task = Task.from_dict(VALID)
    assert task.abnormal_classes == ["pneumonia", "effusion"]
    assert task.index("effusion") == 2
    assert task.modality == "chest X-ray"
    with pytest.raises(Exception):
        task.name = "other"  # frozen


def test_defaults():
    task = Task(question="q?", classes=["no", "yes"], healthy_class="no")
    assert task.name == "diagnosis" and task.descriptions == {} and task.modality == "medical image"


def test_index_unknown_label():
    task = Task.from_dict(VALID)
    with pytest.raises(ConfigError, match="'tumour' is not one of the classes"):
        task.index("tumour")
    with pytest.raises(ValueError):  # still a ValueError, as list.index was
        task.index("tumour")


def test_healthy_class_must_be_a_class():
    message = config_error({**VALID, "healthy_class": "healthy"})
    assert "field 'healthy_class'" in message and "'healthy'" in message


def test_duplicate_classes():
    message = config_error({**VALID, "classes": ["normal", "pneumonia", "normal"]})
    assert "field 'classes'" in message and "duplicates" in message and "normal" in message


def test_empty_class_name():
    message = config_error({**VALID, "classes": ["normal", "  "]})
    assert "field 'classes'" in message and "empty" in message


def test_too_few_classes():
    assert "field 'classes'" in config_error({**VALID, "classes": ["normal"]})


def test_descriptions_for_unknown_classes():
    message = config_error({**VALID, "descriptions": {"cancer": "x", "normal": "fine"}})
    assert "field 'descriptions'" in message and "cancer" in message


def test_missing_and_unknown_fields():
    data = {k: v for k, v in VALID.items() if k != "question"}
    assert "field 'question'" in config_error(data)
    message = config_error({**VALID, "clases": ["a", "b"]})
    assert "field 'clases'" in message


def test_blank_question():
    assert "field 'question'" in config_error({**VALID, "question": "   "})


def test_wrong_types_name_the_item():
    assert "field 'classes.1'" in config_error({**VALID, "classes": ["normal", ["nested"]]})


def test_all_problems_reported():
    message = config_error({"question": "", "classes": ["a"], "healthy_class": "a"})
    assert "field 'question'" in message and "field 'classes'" in message


def test_from_dict_non_mapping():
    assert "mapping" in config_error(["a", "b"])


# --------------------------------------------------------------------------- YAML files


def test_from_yaml(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(VALID))
    assert Task.from_yaml(path) == Task.from_dict(VALID)
    assert Task.from_yaml(str(path)).classes == VALID["classes"]


def yaml_error(path) -> str:
    with pytest.raises(ConfigError) as excinfo:
        Task.from_yaml(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_yaml_missing_file(tmp_path):
    assert "not found" in yaml_error(tmp_path / "absent.yaml")


def test_yaml_directory(tmp_path):
    yaml_error(tmp_path)


def test_yaml_invalid(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("question: [unclosed\nclasses: {a: b\n")
    assert "not valid YAML" in yaml_error(path)


def test_yaml_binary(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81\x82")
    yaml_error(path)


@pytest.mark.parametrize("text, found", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("", "empty")])
def test_yaml_not_a_mapping(tmp_path, text, found):
    path = tmp_path / "task.yaml"
    path.write_text(text)
    message = yaml_error(path)
    assert "mapping" in message and found in message


def test_yaml_field_errors_name_file_and_field(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({**VALID, "healthy_class": "healthy"}))
    message = yaml_error(path)
    assert message.startswith(f"{path}: ") and "field 'healthy_class'" in message
