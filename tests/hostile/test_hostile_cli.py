"""Hostile command lines and configs: each gives exit 2 and one ``error:`` line naming the culprit.

Every case runs the real CLI in a subprocess (what a user meets: no traceback, no Rich markup
eating the message, no hang). A new bad input is one line in ``CASES``: the files to write into a
fresh folder, the command line (run in that folder), and the words the error line must contain.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

#: a hang guard only: a config error must come long before this
TIMEOUT_S = 120


def _config(**overrides) -> str:
    """An experiment config valid up to its data (nothing is read before validation fails)."""
    config = {"task": {"question": "Abnormal?", "classes": ["normal", "abnormal"], "healthy_class": "normal"},
              "data": {"manifest": "manifest.csv"}, "models": [{"tiny": "qwen2_vl", "device": "cpu"}],
              "output_dir": "out"}
    config.update(overrides)
    return yaml.safe_dump(config)


GOOD = {"c.yaml": _config()}

# (id, files written into the working folder, command line, words the one error line contains)
CASES = [
    ("no-arguments", {}, [], ["Missing command", "eval", "mim"]),
    ("unknown-command", {}, ["bogus"], ["bogus"]),
    ("missing-argument", {}, ["eval"], ["'config'"]),
    ("unknown-option", GOOD, ["eval", "c.yaml", "--bogus"], ["--bogus"]),
    ("max-cases-text", GOOD, ["eval", "c.yaml", "--max-cases", "abc"], ["--max-cases", "integer"]),
    ("max-cases-zero", GOOD, ["eval", "c.yaml", "--max-cases", "0"], ["--max-cases", "greater than or equal to 1"]),
    ("max-cases-negative", GOOD, ["eval", "c.yaml", "--max-cases", "-3"], ["--max-cases", "greater than or equal to 1"]),
    ("threads-zero", {}, ["--threads", "0", "list"], ["--threads", "greater than or equal to 1"]),
    ("output-is-a-file", {**GOOD, "taken": "x"}, ["eval", "c.yaml", "--output", "taken"], ["--output", "taken"]),
    ("config-output-dir-is-a-file", {"c.yaml": _config(output_dir="taken"), "taken": "x"}, ["eval", "c.yaml"],
     ["c.yaml", "output_dir", "taken"]),
    ("yaml-position", {"c.yaml": "task:\n  classes: [a, b\nmodels: []\n"}, ["eval", "c.yaml"],
     ["c.yaml", "line 3, column", "flow sequence"]),
    ("serve-yaml-position", {"s.yaml": "model: {name: x\n"}, ["serve", "s.yaml"], ["s.yaml", "line 2, column"]),
    ("yaml-not-text", {"c.yaml": "\udcff"}, ["eval", "c.yaml"], ["c.yaml"]),
    ("unknown-field", {"c.yaml": _config(modles=[])}, ["eval", "c.yaml"], ["c.yaml", "modles"]),
    ("misspelt-model-option", {"c.yaml": _config(models=[{"tiny": "qwen2_vl", "options": {"prefix_cach": True}}])},
     ["eval", "c.yaml"], ["c.yaml", "models.0.options.prefix_cach", "prefix_cache", "vision_cache_mb"]),
    ("model-option-wrong-type", {"c.yaml": _config(models=[{"tiny": "qwen2_vl", "options": {"prefix_cache": "on"}}])},
     ["eval", "c.yaml"], ["c.yaml", "models.0.options.prefix_cache", "boolean"]),
    ("remote-backend-option", {"c.yaml": _config(models=[{"backend": "openai_compat", "name": "m",
                                                          "options": {"base_ulr": "http://x"}}])},
     ["eval", "c.yaml"], ["models.0.options.base_ulr", "base_url"]),
    ("unknown-backend", {"c.yaml": _config(models=[{"backend": "hff", "tiny": "qwen2_vl"}])}, ["eval", "c.yaml"],
     ["models.0.backend", "hff", "openai_compat"]),
    ("markup-in-a-file-name", {**GOOD, "[bold]x": "x"}, ["eval", "c.yaml", "--output", "[bold]x"],
     ["--output", "'[bold]x' is a file"]),
    ("bracketed-list-in-a-name", {"c.yaml": _config(**{"[normal, abnormal]": 1})}, ["eval", "c.yaml"],
     ["field '[normal, abnormal]'"]),
    ("closing-tag-in-a-name", {"c.yaml": _config(**{"[/x]": 1})}, ["eval", "c.yaml"], ["c.yaml", "'[/x]'"]),
    ("class-list-in-brackets", {"c.yaml": _config(task={"question": "q", "classes": ["a", "b"],
                                                        "healthy_class": "banana"})},
     ["eval", "c.yaml"], ["'banana' is not one of the classes ['a', 'b']"]),
    ("explain-k-negative", GOOD, ["explain", "c.yaml", "--case-id", "x", "--k", "-1"], ["--k"]),
    ("serve-port-zero", {}, ["serve", "s.yaml", "--port", "0"], ["--port"]),
    ("demo-patients-zero", {}, ["demo", "--patients", "0"], ["--patients"]),
    ("mim-no-arguments", {}, ["mim"], ["Missing command", "generate"]),
    ("mim-steps-negative", {}, ["mim", "demo", "--steps", "-5"], ["--steps"]),
    ("setdiff-max-pairs-zero", {}, ["setdiff", "run", "b.jsonl", "--max-pairs", "0"], ["--max-pairs"]),
]


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seeinpairs.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=TIMEOUT_S)


def assert_one_error_line(result: subprocess.CompletedProcess, needles: list[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("files, args, needles", [pytest.param(f, a, n, id=i) for i, f, a, n in CASES])
def test_bad_command_line_or_config_is_one_error_line(tmp_path, files, args, needles):
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    assert_one_error_line(run_cli(args, tmp_path), needles)


def test_bad_configs_are_rejected_before_torch_is_imported(tmp_path):
    """Config errors (and help) come before the heavy imports: torch is not even loaded."""
    (tmp_path / "c.yaml").write_text(_config(modles=[]))
    (tmp_path / "s.yaml").write_text("model: {name: x\n")
    script = textwrap.dedent("""
        import sys
        from seeinpairs.cli.app import main
        for argv in (["--help"], ["eval", "--help"], ["eval", "c.yaml"], ["serve", "s.yaml"],
                     ["explain", "c.yaml", "--case-id", "x"], ["eval", "c.yaml", "--max-cases", "0"]):
            sys.argv = ["seeinpairs", *argv]
            try:
                main()
            except SystemExit:
                pass
        heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        print("heavy:", ",".join(heavy) or "none")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            timeout=TIMEOUT_S)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "heavy: none", result.stdout + result.stderr
