"""The CLI as a user meets it: one-line errors with exit status 2, a working eval."""

import subprocess
import sys

import yaml

from seeinpairs.datasets.synthetic import SYNTHETIC_TASK


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "seeinpairs.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_config(tmp_path):
    assert_one_line_error(run_cli("eval", tmp_path / "absent.yaml"), "absent.yaml", "not found")


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: [unclosed\n")
    assert_one_line_error(run_cli("eval", path), "bad.yaml", "YAML")


def test_validate_reports_missing_image_and_bad_label(tmp_path):
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(SYNTHETIC_TASK.model_dump()))
    (tmp_path / "m.csv").write_text("case_id,image,label\na,missing.png,normal\nb,missing2.png,unknown\n")
    result = run_cli("validate", tmp_path / "m.csv", "--task", tmp_path / "task.yaml")
    assert_one_line_error(result, "row 1 field 'image'", "row 2 field 'label'")


def test_corrupt_image_is_a_one_line_error(synthetic_data, tiny_models, tmp_path):
    root, table, task = synthetic_data
    case = next(c for c in table if c.split == "test")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "m.csv").write_text(f"case_id,image,label,split\n{case.case_id},broken.png,normal,test\n")
    config = {"task": task.model_dump(), "data": {"manifest": "m.csv"},
              "models": [{"name": str(tiny_models["qwen2_vl"]), "device": "cpu"}],
              "output_dir": "out"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert_one_line_error(run_cli("eval", tmp_path / "c.yaml", "--no-progress"), "broken.png")


def test_eval_prints_single_and_paired_metrics(synthetic_data, tiny_models, tmp_path):
    root, _, task = synthetic_data
    config = {"task": task.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
              "models": [{"name": str(tiny_models["qwen2_vl"]), "device": "cpu"}],
              "eval": {"max_cases": 6, "n_boot": 20,
                       "conditions": [{"selector": "none", "k": 0}, {"selector": "random", "k": 1}]},
              "output_dir": str(tmp_path / "out")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("eval", tmp_path / "c.yaml", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "single" in result.stdout and "paired" in result.stdout and "McNemar" in result.stdout
    for suffix in ("csv", "md", "json"):
        assert (tmp_path / "out" / f"metrics.{suffix}").exists()


def test_list_shows_registries():
    result = run_cli("list")
    assert result.returncode == 0
    for name in ("random", "embedding", "demographic", "cross_center", "pixel", "hf", "qwen2_vl", "idefics3"):
        assert name in result.stdout


def test_version_and_log_level_options():
    import logging

    from typer.testing import CliRunner

    from seeinpairs import __version__
    from seeinpairs.cli.app import app

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"seeinpairs {__version__}"
    runner, root = CliRunner(), logging.getLogger()
    level = root.level
    try:
        bad = runner.invoke(app, ["--log-level", "loud", "list"])
        assert bad.exit_code == 2 and "'loud' is not one of" in " ".join(bad.output.replace("│", " ").split())
        for args, expected in ((["-v"], logging.INFO), (["-vv"], logging.DEBUG), (["-q"], logging.ERROR),
                               ([], logging.WARNING), (["--log-level", "debug"], logging.DEBUG)):
            assert runner.invoke(app, [*args, "list"]).exit_code == 0
            assert root.level == expected, args
    finally:
        root.setLevel(level)


def test_help_texts_carry_no_docstring_markup():
    """Every command's --help reads as plain text: no reStructuredText roles or double backticks."""
    import typer.main

    from seeinpairs.cli.app import app

    def commands(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from commands(sub, [*path, name])

    for path, command in commands(typer.main.get_command(app), []):
        text = " ".join(filter(None, [command.help, *(getattr(p, "help", None) for p in command.params)]))
        assert "``" not in text and ":class:" not in text and ":func:" not in text, (path, text)


def test_shell_completion_script_is_offered():
    result = run_cli("--show-completion", "bash")  # named after the program as run (here python -m ...)
    assert result.returncode == 0 and "_completion()" in result.stdout and "complete " in result.stdout


def test_list_shows_every_tiny_family_and_the_unsupported_ones_with_their_reason():
    from seeinpairs.backends.tiny import list_tiny_families
    from seeinpairs.backends.tiny_families import UNSUPPORTED_FAMILIES

    result = run_cli("list")
    assert result.returncode == 0
    for family in list_tiny_families():
        assert family in result.stdout
    for family in UNSUPPORTED_FAMILIES:
        assert f"not supported: {family}:" in result.stdout


def test_a_hub_log_line_is_printed_once():
    """huggingface_hub has its own handler; propagating to ours too printed each offline retry twice."""
    code = ("from seeinpairs.cli.app import configure_logging\nconfigure_logging()\n"
            "from huggingface_hub.utils import logging as hub_logging\n"
            "hub_logging.get_logger('huggingface_hub.utils._http').warning('retrying the hub')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("retrying the hub") == 1, result.stderr
