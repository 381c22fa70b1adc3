"""The setdiff commands as a user meets them: a run on RadDiffBench-format files, one-line errors."""

import json
import sys

import pandas as pd
import pytest
from setdiff_helpers import write_image
from typer.testing import CliRunner

from seeinpairs.cli.app import app, main


def _bench(tmp_path):
    rows = []
    for n, (a, b) in enumerate((("lung opacity ", "no finding "), ("old patient ", "young patient "))):
        images = {}
        for side, value in (("1", 200), ("2", 60)):
            paths = [f"p1{n}/p1{n}00000{side}/s5000000{i}/{side}{i}.jpg" for i in range(4)]
            for i, path in enumerate(paths):
                write_image(tmp_path / "files" / path, value + i)
            images[side] = paths + ([f"p1{n}/x/y/z.jpg_.gstmp"] if side == "1" else [])
        rows.append({"set1": a, "set2": b, "set1_images": images["1"], "set2_images": images["2"]})
    jsonl = tmp_path / "bench.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "difficulty.csv").write_text("difficulty\neasy\nmedium\n")
    return jsonl


def test_run_on_raddiff_files_writes_outcomes_summary_and_report(tmp_path):
    jsonl = _bench(tmp_path)
    result = CliRunner().invoke(app, ["setdiff", "run", str(jsonl), "--image-root", str(tmp_path / "files"),
                                      "--difficulty-csv", str(tmp_path / "difficulty.csv"), "--ranker", "random",
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "acc@1" in result.output and "raddiff-000" in result.output
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(summary.difficulty) == {"all", "easy", "medium"} and (summary.n_pairs > 0).all()
    assert (tmp_path / "out" / "report.html").read_text().count("<details>") == 2
    assert json.loads((tmp_path / "out" / "run.json").read_text())["environment"]["versions"]["seeinpairs"]
    listed = CliRunner().invoke(app, ["setdiff", "list"])
    assert "concept_vocabulary" in listed.output and "dual_encoder" in listed.output and "embedding" in listed.output


def test_errors_are_one_line_with_status_2(tmp_path, monkeypatch, capsys):
    jsonl = _bench(tmp_path)
    monkeypatch.setattr(sys, "argv", ["seeinpairs", "setdiff", "run", str(jsonl), "--ranker", "vlm",
                                      "--image-root", str(tmp_path / "files")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--ranker-model" in lines[0] and "Traceback" not in err


def test_raddiff_paths_start_from_the_jsonl_folder_without_image_root(tmp_path, monkeypatch):
    jsonl = _bench(tmp_path).rename(tmp_path / "files" / "bench.jsonl")  # the JSONL in the images' root folder
    monkeypatch.chdir(tmp_path)  # the working directory is not where the images are
    result = CliRunner().invoke(app, ["setdiff", "validate", str(jsonl)])
    assert result.exit_code == 0, result.output
    assert "2 pairs (unknown 2); 16 images referenced, 0 missing" in result.output


def test_validate_lists_missing_images_or_counts_them(tmp_path):
    jsonl = _bench(tmp_path)
    for image in list((tmp_path / "files").rglob("*.jpg"))[:3]:
        image.unlink()
    listed = CliRunner().invoke(app, ["setdiff", "validate", str(jsonl), "--image-root", str(tmp_path / "files"),
                                      "--difficulty-csv", str(tmp_path / "difficulty.csv")])
    assert listed.exit_code != 0 and listed.output.count("image not found") == 3
    assert "2 pairs (easy 1, medium 1); 16 images referenced, 3 missing" in listed.output
    assert "dropped 1 non-image path" in listed.output
    counted = CliRunner().invoke(app, ["setdiff", "validate", str(jsonl), "--image-root", str(tmp_path / "files"),
                                       "--structure-only"])
    assert counted.exit_code == 0 and "3 missing" in counted.output and "image not found" not in counted.output


def test_the_default_vocabulary_is_named_radiology_only_on_photo_sets(tmp_path):
    for group in ("dogs_on_grass", "dogs_indoors"):
        for i in range(4):
            write_image(tmp_path / group / f"{i}.jpg", 40 * i)
    jsonl = tmp_path / "easy.jsonl"
    jsonl.write_text(json.dumps({"set1": "dogs_on_grass", "set2": "dogs_indoors", "difference": "grass"}) + "\n")
    result = CliRunner().invoke(app, ["setdiff", "run", str(jsonl), "--ranker", "random",
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "default concept vocabulary holds chest-radiograph findings" in result.output
    radiology = CliRunner().invoke(app, ["setdiff", "run", str(_bench(tmp_path)), "--ranker", "random",
                                         "--image-root", str(tmp_path / "files"), "--output", str(tmp_path / "o2")])
    assert radiology.exit_code == 0 and "chest-radiograph" not in radiology.output


def test_run_with_reports_and_rounds_counts_missing_reports(tmp_path):
    jsonl = _bench(tmp_path)
    files = tmp_path / "files"
    for n, study in enumerate(sorted(files.glob("p*/p*/s*"))):
        if n:  # the first study has no report
            study.with_suffix(".txt").write_text("FINDINGS: Focal right lung opacity." if "1" in study.parent.name[-1]
                                                 else "FINDINGS: Degenerative changes of the spine.")
    result = CliRunner().invoke(app, ["setdiff", "run", str(jsonl), "--image-root", str(files), "--ranker", "random",
                                      "--proposer", "report_contrast", "--reports", "mimic", "--rounds", "2",
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "reports (mimic): 15 of 16 images have one, 1 missing" in result.output
    assert "per refinement round" in result.output and (tmp_path / "out" / "rounds.csv").is_file()
    settings = json.loads((tmp_path / "out" / "run.json").read_text())["settings"]
    assert settings["rounds"] == 2 and settings["reports"]["missing"] == 1
    needs = CliRunner().invoke(app, ["setdiff", "run", str(jsonl), "--image-root", str(files), "--ranker", "random",
                                     "--proposer", "report_contrast", "--output", str(tmp_path / "o2")])
    assert needs.exit_code != 0 and "--reports" in str(needs.exception or needs.output)


def test_benchmark_reports_option_measures_conditions_per_round(tmp_path, monkeypatch):
    import seeinpairs.setdiff.report_benchmark as module
    from seeinpairs.setdiff.benchmark import PAIR_DESIGNS

    original = module.run_report_benchmark
    monkeypatch.setattr(module, "run_report_benchmark",
                        lambda *a, **k: original(*a, **{**k, "designs": PAIR_DESIGNS[:1] + PAIR_DESIGNS[8:9]}))
    result = CliRunner().invoke(app, ["setdiff", "benchmark", "--reports", "--rounds", "2", "--images-per-set", "6",
                                      "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "report_rounds.csv")
    assert set(table.condition) == {"no reports", "noisy reports", "clean reports"}
    assert set(table.method) == {"ground-truth attributes", "chance (exact)"}
    assert sorted(set(table[table.condition == "noisy reports"]["round"])) == [1, 2]
    assert (table["n_pairs"] == 2).all() and (tmp_path / "data" / "reports.csv").is_file()
    assert "ranker: ground-truth attributes" in result.output


def test_reports_lm_run_says_where_report_text_goes(tmp_path, monkeypatch):
    from setdiff_helpers import ScriptedBackend

    import seeinpairs.cli.setdiff as cli

    jsonl = _bench(tmp_path)
    files = tmp_path / "files"
    for study in files.glob("p*/p*/s*"):
        study.with_suffix(".txt").write_text("FINDINGS: Focal right lung opacity.")
    backend = ScriptedBackend(reply=lambda r: '["focal right lung opacity"]')
    monkeypatch.setattr(cli, "_backend", lambda *a, **k: backend)
    result = CliRunner().invoke(app, ["setdiff", "run", str(jsonl), "--image-root", str(files), "--ranker", "random",
                                      "--proposer", "reports_lm", "--reports", "mimic", "--backend", "openai_compat",
                                      "--base-url", "http://example.invalid/v1", "--proposer-model", "m",
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "report text (findings and impression) is sent to the openai_compat server http://example.invalid/v1" \
        in result.output
    assert backend.generated and "Focal right lung opacity" in " ".join(
        p.get("text", "") for p in backend.generated[0].messages[0]["content"])
