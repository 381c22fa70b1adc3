import json

import pandas as pd
import pytest
from setdiff_helpers import ScriptedBackend

from seeinpairs.report import ReportSection
from seeinpairs.setdiff import create_judge, create_proposer, create_ranker, run_setdiff
from seeinpairs.setdiff.benchmark import CONCEPT_TRUTH, write_raddiff_files
from seeinpairs.setdiff.inputs import load_raddiff
from seeinpairs.setdiff.report import setdiff_section, write_setdiff_report

pytest_plugins = ["setdiff_fixtures"]  # small_pairs, tiny_clip, raddiff_files


@pytest.fixture(scope="module")
def run(small_pairs):
    rankers = {"truth": create_ranker("attributes", concepts=CONCEPT_TRUTH), "random": create_ranker("random", seed=0)}
    return run_setdiff(small_pairs, create_proposer("concept_vocabulary"), rankers, create_judge("embedding"))


def test_ground_truth_ranking_finds_each_difference_and_all_methods_share_proposals(run, small_pairs):
    truth = [o for o in run.outcomes if o.method == "truth"]
    assert [o.ranked[0].text for o in truth] == ["a focal lung opacity", "a lesion in the left lung",
                                                 "a female patient"]
    assert [o.acc(1) for o in truth] == [1.0, 1.0, 1.0]
    for pair in small_pairs:
        lists = [sorted(r.text for r in o.ranked) for o in run.outcomes if o.pair_id == pair.pair_id]
        assert lists[0] == lists[1] and len(lists[0]) == len(CONCEPT_TRUTH)  # nothing merged: antonyms kept


def test_summary_per_method_and_difficulty(run):
    summary = run.summary(n_boot=200)
    row = summary[(summary.method == "truth") & (summary.difficulty == "all")].iloc[0]
    assert row["n_pairs"] == 3 and row["acc@1"] == 1.0 and row["acc@1_lo"] == 1.0
    assert list(summary[summary.method == "truth"].difficulty) == ["all", "easy", "medium", "hard"]
    random = summary[(summary.method == "random") & (summary.difficulty == "all")].iloc[0]
    assert random["acc@1_lo"] <= random["acc@1"] <= random["acc@1_hi"]
    assert random["acc@N"] == 1.0  # the vocabulary holds every true difference
    chance = summary[(summary.method == "chance (exact)") & (summary.difficulty == "all")].iloc[0]
    assert 0 < chance["acc@1"] < chance["acc@5"] < chance["acc@N"] == 1.0


def test_write_and_report(run, small_pairs, tmp_path):
    paths = run.write(tmp_path)
    lines = [json.loads(line) for line in paths["outcomes"].read_text().splitlines()]
    assert len(lines) == 6 and {"auroc", "effect_size", "p_value", "judge_score"} <= set(lines[0]["ranked"][0])
    assert pd.read_csv(paths["summary"]).shape[0] == 12
    section = setdiff_section(run, small_pairs, primary="truth")
    assert isinstance(section, ReportSection) and section.anchor == "setdiff"
    assert "a focal lung opacity" in section.html and "data:image/png;base64," in section.html
    assert section.html.count("<details>") == 3 and "s1 &gt;= 0.8" in section.html
    page = write_setdiff_report(tmp_path / "report.html", section).read_text()
    assert page.startswith("<!DOCTYPE html>") and section.html in page


def test_report_escapes_hypothesis_text(small_pairs):
    proposer = create_proposer("concept_vocabulary", concepts=["<script>alert(1)</script>", "a focal lung opacity"])
    run = run_setdiff(small_pairs[:1], proposer, {"random": create_ranker("random")}, create_judge("embedding"))
    html = setdiff_section(run, small_pairs[:1]).html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_zoom_refinement_adds_second_iteration_hypotheses(small_pairs):
    def reply(request):
        text = " ".join(p.get("text", "") for p in request.messages[0]["content"])
        if "regions worth" in text:
            return "[[0.0, 0.2, 0.5, 0.8]]"
        return '["a lesion in the left lung", "a nodule"]'

    refiner = create_proposer("zoom", model=ScriptedBackend(reply=reply), sample_size=4, rounds=1, cell=8)
    run = run_setdiff(small_pairs[1:2], create_proposer("concept_vocabulary", concepts=["a female patient"]),
                      {"truth": create_ranker("attributes", concepts=CONCEPT_TRUTH)}, create_judge("embedding"),
                      refiner=refiner)
    outcome = run.outcomes[0]
    assert sorted(r.text for r in outcome.ranked) == ["a female patient", "a lesion in the left lung", "a nodule"]
    assert outcome.ranked[0].text == "a lesion in the left lung" and outcome.acc(1) == 1.0


def test_generated_pairs_round_trip_through_the_raddiff_format(small_pairs, tmp_path):
    import copy
    import shutil

    root = tmp_path / "bench"
    pairs = copy.deepcopy(small_pairs)
    for pair in pairs:  # the writer needs paths under its folder
        for image_set in (pair.set1, pair.set2):
            for i, path in enumerate(image_set.images):
                target = root / pair.pair_id / f"{image_set.name.strip().replace(' ', '_')}_{i}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
                image_set.images[i] = str(target)
    jsonl, csv = write_raddiff_files(pairs, root)
    loaded = load_raddiff(jsonl, image_root=root, difficulty_csv=csv)
    assert [(p.set1_condition, p.set2_condition, p.difficulty) for p in loaded] == \
        [(p.set1_condition, p.set2_condition, p.difficulty) for p in small_pairs]
    assert loaded[0].set1.images == pairs[0].set1.images
