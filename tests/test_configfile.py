"""The shared base of YAML configs: strict fields, one-line errors naming the field, paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from seeinpairs.configfile import ConfigFile, read_yaml, resolve_path
from seeinpairs.errors import ConfigError


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(1, ge=1)


class DemoConfig(ConfigFile):
    """A config with a nested model, a union field, paths and a validator, like the real ones."""

    name: str = "demo"
    k: int | list[int] = 0
    inner: Inner = Field(default_factory=Inner)
    data: Path
    output: Path | None = None

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value

    def resolve_paths(self, base: Path) -> "DemoConfig":
        output = resolve_path(self.output, base)
        if output is not None and output.is_file():
            raise ConfigError(f"field 'output': {output} exists and is not a folder")
        return self.model_copy(update={"data": resolve_path(self.data, base), "output": output})


def error_of(data, source: str = "demo.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        DemoConfig.from_dict(data, source=source)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{source}: ")
    return message


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_paths_resolve_against_the_config_files_folder_not_the_working_folder(tmp_path, monkeypatch):
    config_file = write(tmp_path / "configs" / "demo.yaml", "data: data/manifest.csv\noutput: ../runs/demo\n")
    monkeypatch.chdir(write(tmp_path / "elsewhere" / "x", "").parent)
    config = DemoConfig.from_yaml(config_file)
    assert config.data == tmp_path / "configs" / "data" / "manifest.csv"
    assert config.output == tmp_path / "runs" / "demo"


def test_absolute_and_absent_paths_are_kept_and_a_dict_without_base_is_taken_as_given(tmp_path):
    absolute = tmp_path / "manifest.csv"
    config = DemoConfig.from_yaml(write(tmp_path / "c" / "demo.yaml", f"data: {absolute}\n"))
    assert config.data == absolute and config.output is None
    assert DemoConfig.from_dict({"data": "rel/manifest.csv"}).data == Path("rel/manifest.csv")
    assert resolve_path(None, tmp_path) is None


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    path = write(tmp_path / "demo.yaml", "name: x\nk: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        DemoConfig.from_yaml(path)
    assert str(info.value) == (f"{path}: not valid YAML at line 3, column 1: expected ',' or ']', but got "
                               "'<stream end>' (while parsing a flow sequence)")
    write(path, "name: x\n\tdata: y\n")
    with pytest.raises(ConfigError, match=r"demo.yaml: not valid YAML at line 2, column 1: found character '\\t'"):
        DemoConfig.from_yaml(path)


def test_unreadable_files_are_one_line_errors_naming_what_was_read(tmp_path):
    with pytest.raises(ConfigError, match=r"^\S*missing.yaml: task file not found$"):
        read_yaml(tmp_path / "missing.yaml", what="task")
    with pytest.raises(ConfigError, match=r"^\S*folder: cannot read config file \(IsADirectoryError\)$"):
        read_yaml((tmp_path / "folder").mkdir() or tmp_path / "folder")


@pytest.mark.parametrize("text", ["- data: x\n", "", "just a string\n"])
def test_the_top_level_must_be_a_mapping(tmp_path, text):
    path = write(tmp_path / "demo.yaml", text)
    with pytest.raises(ConfigError, match=r"demo.yaml: expected a mapping at the top level$"):
        DemoConfig.from_yaml(path)


def test_unknown_fields_are_rejected_with_their_path():
    assert error_of({"data": "x", "colour": "red"}) == "demo.yaml: field 'colour': Extra inputs are not permitted"
    assert error_of({"data": "x", "inner": {"count": 2, "size": 3}}) == \
        "demo.yaml: field 'inner.size': Extra inputs are not permitted"


def test_an_invalid_value_names_the_nested_field_and_how_many_more_problems_there_are():
    assert error_of({"data": "x", "inner": {"count": 0}}) == \
        "demo.yaml: field 'inner.count': Input should be greater than or equal to 1"
    assert error_of({"inner": {"count": 0}}).endswith("(and 1 more)")
    assert error_of({}) == "demo.yaml: field 'data': Field required"


def test_union_member_tags_are_not_shown_as_fields_and_validator_messages_lose_their_prefix():
    message = error_of({"data": "x", "k": "three"})
    assert message.startswith("demo.yaml: field 'k': Input should be a valid integer")  # not 'k.int'
    assert message.endswith("(and 1 more)")  # the list[int] member's complaint
    assert error_of({"data": "x", "name": "  "}) == "demo.yaml: field 'name': name must not be blank"


def test_an_error_found_while_resolving_paths_gains_the_file_name(tmp_path):
    write(tmp_path / "runs", "a file where a folder belongs")
    path = write(tmp_path / "demo.yaml", "data: x\noutput: runs\n")
    with pytest.raises(ConfigError) as info:
        DemoConfig.from_yaml(path)
    assert str(info.value) == f"{path}: field 'output': {tmp_path / 'runs'} exists and is not a folder"
