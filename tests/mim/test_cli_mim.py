import json

import pytest
from typer.testing import CliRunner

from seeinpairs.cli.mim import app, parse_roots
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
    assert missing.exit_code != 0 and missing.output.count("image not found") == 2
    with pytest.raises(ConfigError, match="NAME=FOLDER"):
        parse_roots(["nofolder"])


def test_validate_lists_every_problem_and_counts_without_images(mim_files, tmp_path):
    from mim_layouts import ODIR, ODIR_NOISY, write_items

    files, roots = mim_files
    noisy = write_items(tmp_path / "Med_MIM_benchmark_Held_out_ODIR.json", [ODIR[0], ODIR_NOISY])
    structure = runner.invoke(app, ["validate", str(files["temporal"]), str(noisy), "--structure-only"])
    assert "5 items read: 4 valid, 1 malformed; 8 images referenced, 8 missing" in structure.output
    assert "problem: Med_MIM_benchmark_Held_out_ODIR.json: item 1 (id 456)" in structure.output
    assert structure.exit_code != 0 and "1 problem(s)" in str(structure.exception)
    clean = runner.invoke(app, ["validate", str(files["temporal"]), "--structure-only"])
    assert clean.exit_code == 0 and "3 items OK" in clean.output and "6 images referenced, 6 missing" in clean.output
    everything = runner.invoke(app, ["validate", str(files["temporal"]), str(noisy)])
    assert everything.output.count("image not found") == 8 and "9 problem(s)" in str(everything.exception)


def test_split_and_ability_given_for_a_renamed_file(mim_files, tmp_path):
    files, roots = mim_files
    renamed = tmp_path / "cut_down.json"
    renamed.write_text(files["temporal"].read_text())
    unknown = runner.invoke(app, ["validate", str(renamed), "--structure-only"])
    assert "unknown file kind" in str(unknown.exception)
    given = runner.invoke(app, ["validate", str(renamed), "--structure-only", "--split", "held_in",
                                "--ability", "Temporal"])
    assert given.exit_code == 0, given.output
    assert "cut_down.json: temporal, source MS_CXR_T" in given.output
    half = runner.invoke(app, ["validate", str(renamed), "--split", "held_in"])
    assert "--split and --ability together" in str(half.exception)
    typo = runner.invoke(app, ["validate", str(files["odir"]), "--root", f"ODIR={roots['VQA_ODIR']}"])
    assert "image root 'ODIR'" in str(typo.exception)
    wrong = runner.invoke(app, ["validate", str(renamed), "--split", "held_in", "--ability", "spatial"])
    assert "--ability 'spatial'" in str(wrong.exception)


def test_root_names_are_listed_in_help():
    from seeinpairs.mim.format import KNOWN_DATASETS

    result = runner.invoke(app, ["evaluate", "--help"], terminal_width=400)
    text = " ".join(result.output.split())
    assert all(name in text for name in KNOWN_DATASETS)


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
    environment = json.loads((tmp_path / "ev" / "environment_loglik_single_last.json").read_text())
    assert environment["torch_threads"] >= 1 and environment["versions"]["transformers"]
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


def test_summary_prints_integer_counts_and_open_scores(capsys):
    import pandas as pd

    from seeinpairs.cli.mim import print_summary

    summary = pd.DataFrame([
        {"level": "all", "group": "all", "n": 11, "accuracy": 0.5, "accuracy_lo": 0.2, "accuracy_hi": 0.8,
         "chance": 0.3, "n_open": 3, "open_bleu": 0.25, "open_bleu_lo": 0.1, "open_bleu_hi": 0.4},
        {"level": "macro", "group": "held_in", "n": 11, "accuracy": 0.5, "chance": 0.3},
    ])
    print_summary(summary, "t")
    out = capsys.readouterr().out
    assert "11.0" not in out and "nan" not in out
    assert "bleu" in out and "0.250 [0.10, 0.40]" in out
