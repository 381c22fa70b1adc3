import json
from collections import Counter

import pytest

from seeinpairs.datasets.synthetic_series import (
    GRADES,
    SeriesConfig,
    generate_series,
    trajectory_levels,
)
from seeinpairs.errors import ConfigError
from seeinpairs.mim.format import MimDataset, load_mim_file
from seeinpairs.mim.generate import (
    QA_GENERATORS,
    QAGenConfig,
    change_between,
    generate_qa,
)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    return root, generate_series(root, SeriesConfig(n_patients=40, seed=1))


def _generate(series, out, **overrides):
    root, table = series
    config = QAGenConfig(**{"n_items": {"train": 30, "val": 6, "test": 20}, **overrides})
    return generate_qa(table, out, root, config)


def test_series_ground_truth(series):
    _, table = series
    cases = list(table)
    assert {c.extra["view"] for c in cases} == {"frontal", "lateral"}
    by_patient = Counter(c.patient for c in cases)
    assert set(by_patient.values()) == {6}  # 3 studies x 2 views
    for case in cases:
        assert (case.label == "abnormal") == (case.extra["lesion_size"] > 0)
        assert case.extra["grade"] in GRADES
    import numpy as np

    rng = np.random.default_rng(0)
    assert trajectory_levels("absent", 3, rng) == [0, 0, 0]
    grows = trajectory_levels("grows", 3, rng)
    assert grows == sorted(grows) and grows[0] < grows[-1] and grows[0] > 0
    resolves = trajectory_levels("resolves", 3, rng)
    assert resolves[0] > 0 and resolves[-1] == 0


@pytest.mark.parametrize("before, after, change", [
    (0, 0.1, "new"), (0.1, 0, "resolved"), (0.1, 0.15, "progressed"), (0.15, 0.1, "improved"),
    (0.1, 0.105, "stable"), (0, 0, None)])
def test_change_categories(before, after, change):
    assert change_between(before, after, 0.2) == change


def test_generated_files_are_valid_deterministic_and_balanced(series, tmp_path):
    root, _table = series
    result = _generate(series, tmp_path / "a", open_fraction=0.0)
    assert "train" not in result.skipped and "test" not in result.skipped  # (40 patients leave val thin)
    assert set(result.counts["test"]) == set(QA_GENERATORS.list_names())
    # no patient in both training and test items
    assert not set(result.patients["train"]) & set(result.patients["test"])
    assert not set(result.patients["val"]) & set(result.patients["test"])
    test = MimDataset.load(result.files["test"], {"SYNTH_SERIES": root}, check_images="open")
    assert {i.split for i in test} == {"held_in"} and {i.dataset for i in test} == {"SYNTH_SERIES"}
    for file in result.files["test"]:
        items = load_mim_file(file)
        letters = Counter((len(i.options), i.gold) for i in items)
        for n_options in {n for n, _ in letters}:
            counts = [letters[(n_options, g)] for g in range(n_options)]
            assert max(counts) - min(counts) <= 1  # letters cycle through the positions
        for item in items:
            assert item.answer == f"{'ABCDEFG'[item.gold]}: {item.options[item.gold]}"
    # deterministic per seed; another seed differs
    again = _generate(series, tmp_path / "b", open_fraction=0.0)
    for a, b in zip(result.files["test"], again.files["test"]):
        assert a.read_text() == b.read_text()
    other = _generate(series, tmp_path / "c", open_fraction=0.0, seed=5)
    assert result.files["test"][0].read_text() != other.files["test"][0].read_text()
    summary = json.loads((tmp_path / "a" / "qa_generation.json").read_text())
    assert summary["counts"]["test"]["temporal"] == 20


def test_temporal_items_follow_the_table(series, tmp_path):
    root, table = series
    result = _generate(series, tmp_path, open_fraction=0.2)
    cases = {str(c.image): c for c in table}
    temporal = next(f for f in result.files["train"] if "Temporal" in f.name)
    items = load_mim_file(temporal)
    assert any(not i.multiple_choice for i in items) and any(i.multiple_choice for i in items)
    for item in items:
        before, after = (cases[str(root / p)] for p in item.images)
        assert before.patient == after.patient and before.extra["study"] < after.extra["study"]
        change = change_between(before.extra["lesion_size"], after.extra["lesion_size"], 0.2)
        assert (item.options[item.gold] if item.multiple_choice else item.answer.split()[-1].rstrip(".")) == change


def test_tables_without_studies_skip_what_they_cannot_support(synthetic_data, tmp_path):
    root, table, _ = synthetic_data
    config = QAGenConfig(n_items={"train": 10, "test": 6}, abilities=("coreference", "temporal", "reasoning"))
    result = generate_qa(table, tmp_path, root, config)
    assert result.counts["train"]["coreference"] == 10
    assert "temporal" in result.skipped["train"] and "reasoning" in result.skipped["train"]
    with pytest.raises(ConfigError, match="abilities"):
        QAGenConfig(abilities=("spatial",))


def test_held_out_set_pools_abilities_into_one_file(series, tmp_path):
    result = _generate(series, tmp_path, held_out="Shift", n_items={"test": 8})
    assert [f.name for f in result.files["test"]] == ["seeinpairs_benchmark_Held_out_SHIFT.json"]
    items = load_mim_file(result.files["test"][0])
    assert len(items) == 32 and {i.split for i in items} == {"held_out"} and {i.subset for i in items} == {"shift"}
    assert [i.index for i in items] == list(range(32))
