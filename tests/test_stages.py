"""Runs without progress bars print one plain line per finished stage (a long run shows it is alive)."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from seeinpairs.cli.app import app
from seeinpairs.stages import stage_done, stage_lines
from seeinpairs.studies.study import StudyConfig, run_study

sys.path.insert(0, str(Path(__file__).parent / "datasets"))
from adapter_layouts import build_medmnist  # noqa: E402


def test_stage_lines_print_only_when_on():
    quiet, loud = io.StringIO(), io.StringIO()
    with stage_lines(False, quiet):
        stage_done("model trained", "single", 1.25)
    with stage_lines(True, loud):
        stage_done("model trained", "single", 1.25)
    stage_done("after the block", "nothing")
    assert quiet.getvalue() == ""
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] model trained: single \(1\.2 s\)\n", loud.getvalue())


def _medmnist(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SEEINPAIRS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "medmnist").mkdir()
    return build_medmnist(tmp_path / "medmnist").root


def test_eval_no_progress_prints_a_line_per_stage(tmp_path, monkeypatch):
    root = _medmnist(tmp_path, monkeypatch)
    config = {"data": {"manifest": "data/manifest.csv",
                       "dataset": {"name": "medmnist", "root": str(root), "options": {"flag": "breast"}}},
              "models": [{"tiny": "qwen2_vl", "batch_size": 4, "device": "cpu"}],
              "eval": {"split": "test", "n_boot": 20,
                       "conditions": [{"selector": "none", "k": 0}, {"selector": "random", "k": 1}]},
              "output_dir": "run"}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["eval", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    # each stage line ends with a newline; a library's own progress bar may precede it on stderr
    found = re.findall(r"\[\d\d:\d\d:\d\d\] ([a-z -]+): ([^\n]*)\n", result.output)
    assert [stage for stage, _ in found] == ["data prepared", "reference bank built", "condition evaluated",
                                             "condition evaluated", "tables written"]
    lines = [detail for _, detail in found]
    assert "tiny-qwen2_vl-0 | none k=0 | seed 0: n=2 (" in lines[2]
    assert "2 healthy cases of split 'train'" in lines[1]


def test_study_stage_lines_name_training_and_the_report(tmp_path, monkeypatch):
    """Also a study on adapter data whose config gives no class names: they are the adapter's."""
    root = _medmnist(tmp_path, monkeypatch)
    config = StudyConfig.from_dict({
        "name": "breast", "task": {"question": "Is this breast lesion malignant?"},
        "data": {"manifest": str(tmp_path / "data" / "manifest.csv"),
                 "dataset": {"name": "medmnist", "root": str(root), "options": {"flag": "breast"}}},
        "model": {"tiny": "qwen2_vl", "batch_size": 4, "device": "cpu"},
        "tiny_spec": {"text_layers": 1, "vision_layers": 1},
        "train": {"max_steps": 2, "batch_size": 2, "eval_every": 2, "max_val_cases": 1},
        "paired_training": {"selector": "random", "k": 1},
        "eval": {"split": "test", "n_boot": 20, "conditions": [{"selector": "random", "k": 1}]},
        "examples": 0, "output_dir": str(tmp_path / "study")})
    out = io.StringIO()
    with stage_lines(True, out):
        result = run_study(config, progress=False)
    text = out.getvalue()
    assert set(result.evaluation.summary["n"]) == {2}
    trained = re.findall(r"model trained: (\S+) \(k=(\d)\): 2 steps \(\d+\.\d s\)", text)
    assert [(Path(p).name, k) for p, k in trained] == [("single", "0"), ("paired", "1")]
    assert "data prepared: " in text and f"report written: {result.report} (" in text
    assert text.count("condition evaluated: ") == 2
    # run again: the trained models are reused, and the lines say so
    again = io.StringIO()
    with stage_lines(True, again):
        run_study(config, progress=False)
    assert again.getvalue().count("model reused: ") == 2 and "model trained" not in again.getvalue()
