"""Every YAML and shell example in the README parses: a reader copies them as they are."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
SHELLS = ("bash", "sh", "shell", "console")


def readme_blocks(languages: tuple[str, ...]) -> list:
    """(language, text) of each fenced block in those languages, with its line number as the test id."""
    text = README.read_text(encoding="utf-8")
    return [pytest.param(match.group(2), id=f"{match.group(1)}-line{text.count(chr(10), 0, match.start()) + 1}")
            for match in FENCE.finditer(text) if match.group(1).lower() in languages]


def test_the_readme_has_examples_to_check():
    assert readme_blocks(("yaml", "yml")) and readme_blocks(SHELLS)


@pytest.mark.parametrize("block", readme_blocks(("yaml", "yml")))
def test_yaml_block_parses(block):
    yaml.safe_load(block)


@pytest.mark.parametrize("block", readme_blocks(SHELLS))
def test_shell_block_parses(block):
    bash = shutil.which("bash")
    assert bash is not None, "bash is needed to check the README's shell examples"
    result = subprocess.run([bash, "-n"], input=block, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def _schema_check(data: dict) -> None:
    """A whole config is read by its class; a ``models:`` fragment model by model."""
    from seeinpairs.evaluation.config import ExperimentConfig
    from seeinpairs.serve.schemas import ServeConfig
    from seeinpairs.settings import ModelConfig

    if "task" in data and "models" in data:
        ExperimentConfig.from_dict(data, source="README")
    elif "task" in data and "model" in data:
        ServeConfig.from_dict(data, source="README")
    else:
        for model in data.get("models", []):
            ModelConfig.model_validate(model)


@pytest.mark.parametrize("block", readme_blocks(("yaml", "yml")))
def test_yaml_config_block_is_a_valid_config(block):
    """Beyond parsing: field names and option names in the examples are ones the configs accept."""
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError:
        pytest.fail("not valid YAML (see test_yaml_block_parses)")
    assert isinstance(data, dict)
    _schema_check(data)


@pytest.mark.parametrize("block", readme_blocks(("python",)))
def test_python_block_compiles(block):
    compile(block, "README.md", "exec")


def test_the_family_matrix_lists_every_registered_and_unsupported_family():
    """The matrix is generated (benchmarks/family_matrix.py); a family added since must be in it."""
    from seeinpairs.backends.tiny import TINY_FAMILIES
    from seeinpairs.backends.tiny_families import UNSUPPORTED_FAMILIES

    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Model families"):text.index("### Data-set adapters")]
    rows = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")} - {"family"}
    unsupported = set(re.findall(r"^- (\w+): ", section, re.MULTILINE))
    assert rows == set(TINY_FAMILIES.list_names())
    assert unsupported == set(UNSUPPORTED_FAMILIES)
