"""The offline benchmark end to end at toy scale (a few training steps): it runs, writes its files,
and its numbers are consistent; the measured figures come from the full-size command."""

import json

import pandas as pd

from seeinpairs.setdiff.benchmark import (
    CONCEPT_TRUTH,
    PAIR_DESIGNS,
    attribute_examples,
    run_setdiff_benchmark,
)
from seeinpairs.setdiff.proposers import create_proposer


def test_benchmark_design():
    assert len(PAIR_DESIGNS) >= 20
    assert {d.family for d in PAIR_DESIGNS} == {"presence", "location", "size", "site", "age", "sex"}
    assert {d.difficulty for d in PAIR_DESIGNS} == {"easy", "medium", "hard"}
    assert all(d.set1_condition.endswith(" ") and d.set2_condition.endswith(" ") for d in PAIR_DESIGNS)
    # every vocabulary concept has a ground truth, so the upper bound ranks all proposals
    assert set(create_proposer("concept_vocabulary").concepts) == set(CONCEPT_TRUTH)


def test_attribute_examples_are_balanced_per_concept():
    records = [{"path": "x", "image_id": f"i{i}", "lesion": i % 2 == 0, "lesion_side": "left", "lesion_radius": 0.12,
                "site": "site_a", "age": 30.0 + i, "sex": "F"} for i in range(20)]
    records = [{**r, "path": None} for r in records]
    concepts = {"a focal lung opacity": CONCEPT_TRUTH["a focal lung opacity"]}
    from PIL import Image

    import seeinpairs.setdiff.benchmark as module

    original = Image.open
    try:
        module.Image.open = lambda path: Image.new("RGB", (8, 8))
        examples = attribute_examples(records, concepts, per_answer=6)
    finally:
        module.Image.open = original
    answers = [answer for _, answer, _ in examples]
    assert answers.count("yes") == answers.count("no") == 6
    assert len({example_id for _, _, example_id in examples}) == 12


def test_benchmark_runs_end_to_end(tmp_path):
    designs = [d for d in PAIR_DESIGNS if d.family in ("presence", "sex")][:3]
    _, section = run_setdiff_benchmark(tmp_path, images_per_set=4, train_images=40, train_steps=2, progress=False,
                                            designs=designs)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary.method) == {"vlm", "random", "ground-truth attributes", "chance (exact)"}
    truth = summary[(summary.method == "ground-truth attributes") & (summary.difficulty == "all")].iloc[0]
    assert truth["acc@1"] == 1.0 and truth["n_pairs"] == 3
    assert len((tmp_path / "outcomes.jsonl").read_text().splitlines()) == 9
    assert (tmp_path / "data" / "benchmark.jsonl").is_file() and (tmp_path / "report.html").is_file()
    assert json.loads((tmp_path / "timing.json").read_text())["training"]["steps"] == 2
    assert section.anchor == "setdiff" and "vlm" in section.html
    assert "Measured over 3 pairs: vlm acc@1" in section.html and "of 3 pairs the vlm ranker" in section.html
