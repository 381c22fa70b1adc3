import json

import pytest
from typer.testing import CliRunner

from seeinpairs.cli_mim import app, parse_roots
from seeinpairs.errors import ConfigError

runner = CliRunner()


def test_validate_and_errors(mim_files):
    files, roots = mim_files
    args = ["validate", *map(str, files.values()), "--root", f"MS_CXR_T={roots['MS_CXR_T']}",
            "--root", f"VQA_ODIR={roots['VQA_ODIR']}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "5 items OK" in result.output and "odir, source VQA_ODIR: 1 multiple choice" in result.output
    missing = runner.invoke(app, ["validate", str(files["odir"])])
    assert missing.exit_code != 0 and "image not found" in str(missing.exception)
    with pytest.raises(ConfigError, match="NAME=FOLDER"):
        parse_roots(["nofolder"])


def test_synthetic_generate_and_evaluate(tmp_path, tiny_models):
    series = tmp_path / "series"
    assert runner.invoke(app, ["synthetic", str(series), "--patients", "16"]).exit_code == 0
    qa = tmp_path / "qa"
    result = runner.invoke(app, ["generate", str(series / "manifest.csv"), str(qa), "--train", "4", "--val", "0",
                                 "--test", "4"])
    assert result.exit_code == 0, result.output
    files = sorted(qa.glob("*_benchmark_Held_in_*.json"))
    assert len(files) == 4
    result = runner.invoke(app, ["evaluate", *map(str, files[:2]), "--model", str(tiny_models["qwen2_vl"]),
                                 "--root", f"SYNTH_SERIES={series}", "--device", "cpu", "--output", str(tmp_path / "ev"),
                                 "--n-boot", "20", "--no-progress", "--single-image", "last"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ev" / "summary_loglik_single_last.csv").is_file()
    assert "held_in" in result.output


def test_train_command(mim_files, tmp_path):
    files, roots = mim_files
    common = ["--root", f"MS_CXR_T={roots['MS_CXR_T']}", "--root", f"VQA_ODIR={roots['VQA_ODIR']}"]
    result = runner.invoke(app, ["train", str(files["temporal"]), str(files["odir"]), "--val", str(files["coreference"]),
                                 *common, "--tiny", "qwen2_vl", "--steps", "2", "--eval-every", "1", "--batch-size", "2",
                                 "--device", "cpu", "--output", str(tmp_path / "sft"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sft" / "final" / "config.json").is_file() and "2 steps" in result.output
    summary = json.loads((tmp_path / "sft" / "train_summary.json").read_text())
    assert summary["config"]["end_of_turn"] is True  # open-ended answers must learn to stop
    both = runner.invoke(app, ["train", str(files["temporal"]), "--tiny", "qwen2_vl", "--model", "x"])
    assert both.exit_code != 0 and "exactly one" in str(both.exception)
