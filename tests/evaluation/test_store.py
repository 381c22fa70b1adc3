"""Prediction store: stable run keys, resumability and crash tolerance."""

from __future__ import annotations

import json
import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seeinpairs.errors import SeeInPairsError
from seeinpairs.evaluation.store import RECORD_FIELDS, PredictionStore, StoreError, run_key

CONDITION = {"model": "m", "mode": "paired", "selector": "knn", "k": 3, "seed": 0, "extra": {"b": 1, "a": [1, 2]}}


def record(case: str, key: str = "run1", **over) -> dict:
    rec = {
        "run_key": key,
        "case_id": case,
        "mode": "paired",
        "selector": "knn",
        "k": 3,
        "seed": 0,
        "reference_ids": ["r1", "r2"],
        "options": ["normal", "tumor"],
        "option_logprobs": [-0.1, -2.3],
        "probabilities": [0.9, 0.1],
        "predicted": "normal",
        "gold": "normal",
        "selection_note": None,
        "seconds": 0.5,
    }
    rec.update(over)
    return rec


# ------------------------------------------------------------------ run_key
def test_run_key_shape_and_stability():
    key = run_key(CONDITION)
    assert len(key) == 16 and all(ch in "0123456789abcdef" for ch in key)
    assert run_key(dict(reversed(list(CONDITION.items())))) == key
    assert run_key({**CONDITION, "k": 4}) != key


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.randoms())
def test_run_key_invariant_to_key_order(condition, rnd):
    items = list(condition.items())
    rnd.shuffle(items)
    assert run_key(dict(items)) == run_key(condition)


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": float("nan")}, {"x": {1, 2}}])
def test_run_key_rejects_non_json(bad):
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        run_key(bad)
    assert issubclass(StoreError, SeeInPairsError)


# --------------------------------------------------------------------- runs
def test_register_run_idempotent_persistent_and_conflicting(tmp_path):
    store = PredictionStore(tmp_path)
    key = run_key(CONDITION)
    store.register_run(key, CONDITION)
    store.register_run(key, dict(reversed(list(CONDITION.items()))))  # same condition: no-op
    assert PredictionStore(tmp_path).conditions() == {key: CONDITION}
    with pytest.raises(StoreError, match="different condition"):
        store.register_run(key, {**CONDITION, "k": 5})
    store.register_run("other", {"k": 1})
    assert set(store.conditions()) == {key, "other"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.json"]  # no temp files left behind


def test_corrupt_runs_file_is_a_clear_error(tmp_path):
    (tmp_path / "runs.json").write_text("{not json")
    with pytest.raises(StoreError, match="runs.json"):
        PredictionStore(tmp_path).conditions()


# -------------------------------------------------------------- predictions
def test_append_done_and_resume(tmp_path):
    store = PredictionStore(tmp_path)
    assert store.done("run1") == set() and store.records() == []
    assert store.append([record("c1"), record("c2")]) == 2
    store.append([record("c1", key="run2")])
    assert store.done("run1") == {"c1", "c2"}
    resumed = PredictionStore(tmp_path)  # a fresh process after a restart
    assert resumed.done("run2") == {"c1"}
    resumed.append([record("c3")])
    assert [r["case_id"] for r in resumed.records("run1")] == ["c1", "c2", "c3"]
    assert len(resumed.records()) == 4


def test_records_dedupe_keeps_first(tmp_path):
    store = PredictionStore(tmp_path)
    store.append([record("c1", predicted="normal"), record("c1", predicted="tumor"), record("c1", key="r2")])
    recs = store.records()
    assert len(recs) == 2
    assert store.records("run1")[0]["predicted"] == "normal"


def test_frame_columns(tmp_path):
    store = PredictionStore(tmp_path)
    empty = store.frame()
    assert list(empty.columns) == list(RECORD_FIELDS) and len(empty) == 0
    store.append([record("c1", note="x"), record("c2")])
    frame = store.frame("run1")
    assert list(frame.columns) == list(RECORD_FIELDS) + ["note"]
    assert frame["case_id"].tolist() == ["c1", "c2"]


def test_infinite_logprobs_round_trip(tmp_path):
    store = PredictionStore(tmp_path)
    store.append([record("c1", option_logprobs=[0.0, float("-inf")], probabilities=[1.0, 0.0])])
    assert math.isinf(store.records()[0]["option_logprobs"][1])


def test_truncated_last_line_is_ignored_then_repaired(tmp_path):
    store = PredictionStore(tmp_path)
    store.append([record("c1"), record("c2")])
    path = store.predictions_path
    full = json.dumps(record("c3"))
    with open(path, "a") as fh:  # writer killed mid-line
        fh.write(full[: len(full) // 2])
    assert store.done("run1") == {"c1", "c2"}
    store.append([record("c4")])
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert store.done("run1") == {"c1", "c2", "c4"}


def test_complete_but_unterminated_last_line_is_kept(tmp_path):
    store = PredictionStore(tmp_path)
    store.append([record("c1")])
    with open(store.predictions_path, "a") as fh:
        fh.write(json.dumps(record("c2")))  # killed just before the newline
    assert store.done("run1") == {"c1", "c2"}
    store.append([record("c3")])
    assert [r["case_id"] for r in store.records()] == ["c1", "c2", "c3"]
    assert store.predictions_path.read_text().endswith("\n")


def test_truncated_only_line_is_repaired(tmp_path):
    store = PredictionStore(tmp_path)
    store.predictions_path.write_text('{"run_key": "run1", "ca')
    assert store.records() == []
    store.append([record("c1")])
    assert store.done("run1") == {"c1"}


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    store = PredictionStore(tmp_path)
    store.append([record("c1")])
    with open(store.predictions_path, "a") as fh:
        fh.write("garbage\n")
    store.append([record("c3")])
    with pytest.raises(StoreError, match=r"predictions\.jsonl: line 2 ") as info:
        store.records()
    assert "\n" not in str(info.value)


def test_line_without_ids_is_an_error(tmp_path):
    store = PredictionStore(tmp_path)
    store.predictions_path.write_text('{"case_id": "c1"}\n')
    with pytest.raises(StoreError, match="line 1 has no string 'run_key'"):
        store.records()


@pytest.mark.parametrize("bad", [{"case_id": "c9"}, {"run_key": "r", "case_id": "c9", "x": object()}, "nope"])
def test_bad_record_aborts_whole_batch(tmp_path, bad):
    store = PredictionStore(tmp_path)
    store.append([record("c1")])
    before = store.predictions_path.read_bytes()
    with pytest.raises(StoreError):
        store.append([record("c2"), bad])
    assert store.predictions_path.read_bytes() == before


def test_concurrent_appends_from_threads(tmp_path):
    store = PredictionStore(tmp_path)

    def work(t: int) -> None:
        for i in range(25):
            PredictionStore(tmp_path).append([record(f"t{t}-{i}")])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(store.done("run1")) == 150
