"""Reports joined to set-pair images, report-guided proposers, and refinement rounds."""

import copy
import logging

import numpy as np
import pytest
from setdiff_helpers import ScriptedBackend, request_text, write_image

from seeinpairs.cases import Case, CaseTable
from seeinpairs.setdiff import SetDiffError, create_judge, create_proposer, create_ranker, load_raddiff, run_setdiff
from seeinpairs.setdiff.benchmark import CONCEPT_TRUTH
from seeinpairs.setdiff.inputs import pair_from_table
from seeinpairs.setdiff.report_proposers import RoundFeedback, affirmed
from seeinpairs.setdiff.reports import (
    MimicReports,
    attach_reports,
    load_report_source,
    report_sections,
    study_key,
)
from seeinpairs.setdiff.synthetic_reports import ReportNoise, write_report

pytest_plugins = ["setdiff_fixtures"]  # small_pairs, tiny_clip, raddiff_files

SECRET = "Patient John Q Example, MRN 1234567, has a right apical pneumothorax."
REPORT = f"EXAMINATION: CHEST PA AND LAT\nINDICATION: {SECRET}\nFINDINGS: Moderate left pleural effusion.\n" \
         "IMPRESSION: Left effusion, no pneumothorax."


def _mimic_files(root, rows):
    """Images of the fixture's rows under ``root``; a report beside every study folder but one."""
    for row in rows:
        for path in row["set1_images"] + row["set2_images"]:
            if path.endswith(".jpg"):
                write_image(root / path)
    for study in ("p10/p10000032/s50414267", "p11/p11000011/s51029426", "p11/p11000183/s51967283",
                  "p12/p12000008/s50000001", "p12/p12000009/s50000002"):
        (root / f"{study}.txt").write_text(REPORT)  # p10000764/s57375967 has none


def test_study_id_join_on_mimic_paths_counts_missing_reports(raddiff_files, tmp_path):
    jsonl, _, rows = raddiff_files
    files = tmp_path / "files"
    _mimic_files(files, rows)
    assert study_key("files/p10/p10000032/s53189527/2a2277a9.jpg_.gstmp") == ("p10", "p10000032", "s53189527")
    assert study_key("images/a.jpg") is None
    with pytest.warns(UserWarning, match="gstmp"):
        pairs = load_raddiff(jsonl, image_root=files)
    coverage = attach_reports(pairs, load_report_source("mimic"))
    # 6 images (the .gstmp entry dropped, not counted); one study has no report
    assert (coverage.images, coverage.found, coverage.missing) == (6, 5, 1)
    assert coverage.per_pair["raddiff-000"] == {"images": 4, "found": 3}
    assert coverage.missing_examples == [str(files / "p10/p10000764/s57375967/096052b7.jpg")]
    assert pairs[0].set1.reports[0] == REPORT and pairs[0].set1.reports[1] is None
    assert "5 of 6 images have one, 1 missing" in coverage.describe() and SECRET not in coverage.describe()
    # reports unpacked apart from the JPGs: a separate files folder
    elsewhere = tmp_path / "reports" / "files" / "p10" / "p10000764"
    elsewhere.mkdir(parents=True)
    (elsewhere / "s57375967.txt").write_text(REPORT)
    source = load_report_source("mimic", tmp_path / "reports" / "files")
    assert isinstance(source, MimicReports) and attach_reports(pairs, source).found == 1


def test_csv_reports_by_image_path_name_or_study_and_column_reports(tmp_path):
    for name in ("a/s1/x.jpg", "a/s2/y.jpg", "b/z.jpg"):
        write_image(tmp_path / name)
    (tmp_path / "reports.csv").write_text('image,report\na/s1/x.jpg,"FINDINGS: left opacity"\ny.jpg,right opacity\n'
                                          'b/z.jpg,\n')
    from seeinpairs.setdiff import ImageSet, SetPair

    pair = SetPair("p", ImageSet("1", [str(tmp_path / "a/s1/x.jpg"), str(tmp_path / "a/s2/y.jpg")]),
                   ImageSet("2", [str(tmp_path / "b/z.jpg")]))
    coverage = attach_reports([pair], load_report_source("csv", tmp_path / "reports.csv"))
    assert pair.set1.reports == ["FINDINGS: left opacity", "right opacity"] and pair.set2.reports == [None]
    assert coverage.missing == 1  # an empty report is a missing one
    (tmp_path / "studies.csv").write_text("study,report\n50414267,by study\n")
    mimic = SetPair("m", ImageSet("1", [str(tmp_path / "p10/p10000032/s50414267/d.jpg")]), ImageSet("2", ["q.jpg"]))
    assert attach_reports([mimic], load_report_source("csv", tmp_path / "studies.csv")).found == 1
    assert mimic.set1.reports == ["by study"]
    (tmp_path / "bad.csv").write_text("image,text\nx.jpg,t\n")
    with pytest.raises(SetDiffError, match=r"bad\.csv: field 'report' is missing"):
        load_report_source("csv", tmp_path / "bad.csv")
    with pytest.raises(SetDiffError, match="unknown report source 'pdf'"):
        load_report_source("pdf")
    cases = [Case(f"c{i}", str(tmp_path / "a/s1/x.jpg"), label="a" if i < 2 else "b",
                  extra={"report": "FINDINGS: opacity"} if i != 1 else {}) for i in range(4)]
    table_pair = pair_from_table(CaseTable(cases, source="cases.csv"), "label == a", "label == b")
    coverage = attach_reports([table_pair], load_report_source("column", "report"))
    assert (coverage.found, coverage.missing) == (3, 1)


def test_report_sections_keep_findings_and_impression_within_budget():
    kept = report_sections(REPORT)
    assert kept == "Moderate left pleural effusion. Left effusion, no pneumothorax."
    assert report_sections("Lungs are clear.") == "Lungs are clear."
    long = report_sections("FINDINGS: " + "opacity " * 200, budget=50)
    assert len(long) <= 54 and long.endswith(" ...")
    assert affirmed("No focal consolidation, pleural effusion or pneumothorax. Left opacity.").split() == \
        [".", "Left", "opacity."]


def test_generated_reports_follow_the_truth_with_noise():
    truth = {"lesion": True, "lesion_side": "left", "lesion_radius": 0.12, "age": 70.0, "sex": "F", "site": "site_b"}
    clean = [write_report(truth, np.random.default_rng(i), ReportNoise.none()) for i in range(50)]
    assert all("left" in r and "opacity" in r and "Possible" not in r for r in clean)
    assert all("limited" in r.lower() for r in clean)
    noisy = [write_report(truth, np.random.default_rng(i)) for i in range(200)]
    assert sum("opacity" not in r for r in noisy) > 10  # omissions
    assert sum("Possible" in r for r in noisy) > 20  # hedging
    assert sum("spine" in r or "aorta" in r or "granuloma" in r for r in noisy) > 40  # unrelated findings
    assert write_report(truth, np.random.default_rng(3)) == write_report(truth, np.random.default_rng(3))


def test_report_contrast_proposes_separating_phrases_and_refines_from_counter_examples(small_pairs):
    location = copy.deepcopy(small_pairs[1])  # left vs right lung lesion
    proposer = create_proposer("report_contrast")
    proposal = proposer.propose(location)
    assert proposal.hypotheses and all("right" not in h for h in proposal.hypotheses)
    assert any("left" in h for h in proposal.hypotheses[:2])
    assert all("effusion" not in h and "pneumothorax" not in h for h in proposal.hypotheses)  # negated
    feedback = RoundFeedback(1, [(h, 0.9) for h in proposal.hypotheses], set1_low=[0, 1], set2_high=[0])
    refined = proposer.refine(location, feedback)
    assert not set(refined.hypotheses) & set(proposal.hypotheses)  # only phrases not proposed before
    for image_set in (location.set1, location.set2):
        image_set.reports = [None] * len(image_set)
    assert create_proposer("report_contrast").propose(location).hypotheses == []


def test_reports_lm_prompt_holds_sections_and_feedback(small_pairs):
    pair = copy.deepcopy(small_pairs[0])
    pair.set1.reports[0] = REPORT
    backend = ScriptedBackend(reply=lambda r: '["left pleural effusion", "focal opacity"]')
    proposer = create_proposer("reports_lm", model=backend, sample_size=8, rounds=2, budget=200)
    proposal = proposer.propose(pair)
    assert proposal.hypotheses == ["left pleural effusion", "focal opacity"] and proposal.calls == 2
    text = request_text(backend.generated[0])
    assert "Moderate left pleural effusion" in text and SECRET not in text  # the indication is not sent
    assert not backend.generated[0].images
    feedback = RoundFeedback(1, [("focal opacity", 0.83)], set1_low=[0], set2_high=[1])
    proposer.refine(pair, feedback)
    refined = request_text(backend.generated[-1])
    assert "focal opacity (AUROC 0.83)" in refined and "Set A studies they miss:\n- Moderate left" in refined
    with_images = create_proposer("reports_lm", model=backend, sample_size=4, rounds=1, with_images=True, cell=8)
    with_images.propose(pair)
    assert len(backend.generated[-1].images) == 2


def test_reports_lm_round_on_a_tiny_backend(small_pairs, tiny_models):
    from seeinpairs.backends.hf import HFBackend

    backend = HFBackend(tiny_models["qwen2_vl"], device="cpu")
    proposer = create_proposer("reports_lm", model=backend, sample_size=3, rounds=1, budget=80, max_new_tokens=8)
    proposal = proposer.propose(small_pairs[0])
    assert proposal.calls == 1 and len(proposal.replies) == 1
    assert proposal.parse_failures + bool(proposal.hypotheses) == 1  # parsed, or counted as unparseable
    refined = proposer.refine(small_pairs[0], RoundFeedback(1, [("a lesion", 0.7)], [0], [0]))
    assert refined.calls == 1


def test_refinement_rounds_are_recorded_with_their_metrics(small_pairs, tmp_path):
    rankers = {"truth": create_ranker("attributes", concepts=CONCEPT_TRUTH), "random": create_ranker("random")}
    run = run_setdiff(small_pairs, create_proposer("report_contrast", n_hypotheses=4), rankers,
                      create_judge("embedding"), rounds=3)
    assert run.settings["rounds"] == 3
    for outcome in run.outcomes:
        assert [r["round"] for r in outcome.rounds] == [1, 2, 3]
        assert outcome.rounds[0]["new"] and outcome.rounds[-1]["n_hypotheses"] == len(outcome.ranked)
        assert outcome.rounds[1]["n_hypotheses"] >= outcome.rounds[0]["n_hypotheses"]
        assert {"acc@1", "acc@5", "acc@N", "top", "scores"} <= set(outcome.rounds[0])
        assert outcome.rounds[-1]["acc@1"] == outcome.acc(1)
    table = run.round_summary(n_boot=100)
    assert list(table[table.method == "truth"]["round"]) == [1, 2, 3]
    assert set(table.method) == {"truth", "random", "chance (exact)"}
    paths = run.write(tmp_path)
    assert paths["rounds"].is_file()
    with pytest.raises(SetDiffError, match="does not refine"):
        run_setdiff(small_pairs, create_proposer("concept_vocabulary"), rankers, create_judge("embedding"), rounds=2)


def test_no_report_text_in_logs_or_outputs(raddiff_files, tmp_path, caplog):
    jsonl, _, rows = raddiff_files
    files = tmp_path / "files"
    _mimic_files(files, rows)
    caplog.set_level(logging.DEBUG)
    with pytest.warns(UserWarning):
        pairs = load_raddiff(jsonl, image_root=files)
    coverage = attach_reports(pairs, load_report_source("mimic"))
    for pair in pairs:
        pair.set1.metadata = [{"lesion": True} for _ in pair.set1.images]
    run = run_setdiff(pairs, create_proposer("report_contrast"), {"random": create_ranker("random")},
                      create_judge("embedding"), rounds=2)
    run.settings["reports"] = coverage.to_dict()
    run.write(tmp_path / "out")
    written = " ".join(p.read_text() for p in (tmp_path / "out").iterdir())
    for sentence in (SECRET, "Moderate left pleural effusion", "MRN 1234567"):
        assert sentence not in caplog.text and sentence not in written and sentence not in repr(pairs[0])


def test_later_rounds_score_only_their_new_hypotheses(small_pairs):
    from seeinpairs.setdiff.rankers import Ranker

    class Counting(Ranker):
        name = "counting"

        def __init__(self):
            self.scored: list[str] = []

        def score(self, hypotheses, images, metadata):
            self.scored += list(hypotheses)
            return np.array([[float(len(h) % 3 == i % 2) for i in range(len(images))] for h in hypotheses])

    ranker = Counting()
    run = run_setdiff(small_pairs[:1], create_proposer("report_contrast", n_hypotheses=4), {"c": ranker},
                      create_judge("embedding"), rounds=3)
    assert len(ranker.scored) == len(set(ranker.scored)) == run.outcomes[0].rounds[-1]["n_hypotheses"]
    assert run.settings["rankers"] == {"c": "counting"}
