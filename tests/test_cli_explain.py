"""``seeinpairs explain`` and ``seeinpairs evidence`` as a user runs them."""

import json

import yaml
from test_cli import assert_one_line_error, run_cli

from seeinpairs.datasets.synthetic import SYNTHETIC_TASK


def write_config(tmp_path, synthetic_data, tiny_models):
    root, _, _ = synthetic_data
    config = {"name": "cli-explain", "task": SYNTHETIC_TASK.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
              "models": [{"name": str(tiny_models["qwen2_vl"]), "label": "single", "device": "cpu"},
                         {"name": str(tiny_models["qwen2_vl"]), "label": "paired", "device": "cpu"}],
              "eval": {"split": "test"}, "output_dir": str(tmp_path / "run")}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_explain_writes_overlay_maps_and_shares(tmp_path, synthetic_data, tiny_models):
    _, table, _ = synthetic_data
    case = next(c for c in table if c.split == "test")
    config = write_config(tmp_path, synthetic_data, tiny_models)
    result = run_cli("explain", config, "--case-id", case.case_id, "--k", "2", "--option", "abnormal",
                     "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "attribution share reference 1" in result.stdout
    summary = json.loads((tmp_path / "out" / f"{case.case_id}_explanation.json").read_text())
    assert summary["option"] == "abnormal" and len(summary["image_ids"]) == 3
    assert summary["image_ids"][-1] == case.case_id
    assert (tmp_path / "out" / f"{case.case_id}_overlay.png").read_bytes()[:4] == b"\x89PNG"
    assert_one_line_error(run_cli("explain", config, "--case-id", "nope", "--output", tmp_path / "out"),
                          "--case-id 'nope' is not in")
    assert_one_line_error(run_cli("explain", config, "--case-id", case.case_id, "--option", "maybe",
                                  "--output", tmp_path / "out"), "option 'maybe' is not one of")


def test_evidence_runs_on_the_config_models(tmp_path, synthetic_data, tiny_models):
    config = write_config(tmp_path, synthetic_data, tiny_models)
    result = run_cli("evidence", config, "--single", "single", "--paired", "paired", "--n-localization", "2",
                     "--n-cases", "6", "--output", tmp_path / "evidence")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "evidence" / "report.html").exists()
    assert (tmp_path / "evidence" / "swaps.csv").exists()
    assert_one_line_error(run_cli("evidence", config, "--single", "x", "--paired", "paired"),
                          "--model 'x' is not a model label")


def test_explaining_a_served_model_says_in_one_line_that_attribution_needs_its_weights(tmp_path, synthetic_data):
    root, table, _ = synthetic_data
    config = {"name": "served", "task": SYNTHETIC_TASK.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
              "models": [{"backend": "openai_compat", "name": "served-model", "options": {"base_url": "http://fake/v1"}}],
              "eval": {"split": "test"}, "output_dir": str(tmp_path / "run")}
    path = tmp_path / "served.yaml"
    path.write_text(yaml.safe_dump(config))
    case = next(c for c in table if c.split == "test")
    assert_one_line_error(run_cli("explain", path, "--case-id", case.case_id, "--output", tmp_path / "out"),
                          "attribution needs the model's weights in this process")
