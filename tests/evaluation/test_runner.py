import json
import shutil
from pathlib import Path

import pytest
import yaml

from seeinpairs.cases import case_rng
from seeinpairs.errors import BankError, ConfigError, ManifestError, SeeInPairsError
from seeinpairs.evaluation.config import ExperimentConfig
from seeinpairs.evaluation.runner import ConditionKey, ExperimentResult, ExperimentRunner, run_experiment
from seeinpairs.evaluation.store import PredictionStore


def make_config(data_root, model_dir, out_dir, task, **eval_overrides) -> ExperimentConfig:
    raw = {
        "name": "t",
        "task": task.model_dump(),
        "data": {"manifest": str(data_root / "manifest.csv")},
        "models": [{"name": str(model_dir), "batch_size": 4, "device": "cpu"}],
        "eval": {"split": "test", "seeds": [0], "n_boot": 50, "max_cases": 10,
                 "conditions": [{"selector": "none", "k": 0}, {"selector": "random", "k": [1, 2]},
                                {"selector": "embedding", "k": 1}], **eval_overrides},
        "output_dir": str(out_dir),
    }
    return ExperimentConfig.from_dict(raw)


def comparable(records):
    return sorted((r["run_key"], r["case_id"], tuple(r["reference_ids"]), tuple(round(x, 5) for x in r["option_logprobs"]))
                  for r in records)


def test_resume_after_interruption_equals_an_uninterrupted_run(synthetic_data, tiny_models, tmp_path, monkeypatch):
    root, _, task = synthetic_data
    full = run_experiment(make_config(root, tiny_models["qwen2_vl"], tmp_path / "full", task), progress=False)
    assert len(full.summary) == 4 and (full.summary["n"] == 10).all()

    calls = {"n": 0}
    original = PredictionStore.append

    def crashing_append(self, records):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-run
        return original(self, records)

    monkeypatch.setattr(PredictionStore, "append", crashing_append)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(make_config(root, tiny_models["qwen2_vl"], tmp_path / "resumed", task), progress=False)
    partial = PredictionStore(tmp_path / "resumed").records()
    assert 0 < len(partial) < 40
    monkeypatch.setattr(PredictionStore, "append", original)
    resumed = run_experiment(make_config(root, tiny_models["qwen2_vl"], tmp_path / "resumed", task), progress=False)
    assert comparable(PredictionStore(tmp_path / "resumed").records()) == comparable(PredictionStore(tmp_path / "full").records())
    assert resumed.summary.drop(columns=[]).equals(full.summary)


def test_finished_run_is_not_recomputed(synthetic_data, tiny_models, tmp_path, monkeypatch):
    root, _, task = synthetic_data
    config = make_config(root, tiny_models["qwen2_vl"], tmp_path / "out", task)
    run_experiment(config, progress=False)
    from seeinpairs.backends.hf import HFBackend

    def fail(*args, **kwargs):
        raise AssertionError("model was called for a finished run")

    monkeypatch.setattr(HFBackend, "score", fail)
    monkeypatch.setattr(HFBackend, "__init__", fail)
    result = run_experiment(config, progress=False)
    assert (result.summary["n"] == 10).all()
    # where the predictions were computed: one line for the invocation that made them, none for the no-op
    lines = (tmp_path / "out" / "environment.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["predictions"] == 40 and record["torch_threads"] >= 1 and record["versions"]["torch"]


def test_predictions_record_everything_needed_to_recompute_metrics(synthetic_data, tiny_models, tmp_path):
    root, table, task = synthetic_data
    run_experiment(make_config(root, tiny_models["idefics3"], tmp_path / "out", task), progress=False)
    records = PredictionStore(tmp_path / "out").records()
    for record in records:
        case = table.get(record["case_id"])
        assert record["gold"] == case.label
        assert len(record["reference_ids"]) == record["k"]
        for ref in record["reference_ids"]:
            assert table.get(ref).patient != case.patient and table.get(ref).label == task.healthy_class
        assert record["predicted"] in task.classes and abs(sum(record["probabilities"]) - 1) < 1e-6


def test_results_are_found_by_the_condition_key_fields_never_by_its_display_name():
    import pandas as pd

    key = ConditionKey("paired-trained", "random", 2, 0, "paired")
    assert key.display == "paired-trained | random k=2 | seed 0"  # the name tables and logs show
    # a model whose name holds another condition's display text: matching on display substrings picks it
    lookalike = ConditionKey("paired-trained-old | random k=2 | x", "none", 0, 0, "single")
    result = ExperimentResult(pd.DataFrame(), pd.DataFrame(), {lookalike: [{"case_id": "a"}],
                                                               key: [{"case_id": "b"}],
                                                               ConditionKey("paired-trained", "random", 2, 1, "paired"):
                                                                   [{"case_id": "c"}]})
    assert result.records_for("paired-trained", "random", 2) == [{"case_id": "b"}]
    assert result.records_for("paired-trained", "random", 2, seed=1) == [{"case_id": "c"}]
    with pytest.raises(KeyError):
        result.records_for("paired-trained", "random", 3)
    with pytest.raises(KeyError):
        result.records_for("paired-trained", "random", 2, seed=5)


def test_case_rng_is_order_independent():
    assert case_rng(3, "a").random() == case_rng(3, "a").random()
    assert case_rng(3, "a").random() != case_rng(4, "a").random()


def test_k_larger_than_bank_fails_before_any_model_work(synthetic_data, tiny_models, tmp_path):
    root, table, task = synthetic_data
    config = make_config(root, tiny_models["qwen2_vl"], tmp_path / "out", task,
                         conditions=[{"selector": "random", "k": 10_000}])
    with pytest.raises(BankError, match="10000"):
        ExperimentRunner(config, progress=False).run()
    assert PredictionStore(tmp_path / "out").records() == []


def test_empty_bank_is_a_clear_error(synthetic_data, tiny_models, tmp_path):
    root, _, task = synthetic_data
    raw = make_config(root, tiny_models["qwen2_vl"], tmp_path / "out", task).model_dump(mode="json")
    raw["bank"] = {"split": "nonexistent"}
    with pytest.raises(BankError, match="nonexistent"):
        run_experiment(ExperimentConfig.from_dict(raw), progress=False)


def test_unknown_label_in_manifest_names_row_and_field(synthetic_data, tiny_models, tmp_path):
    root, _, task = synthetic_data
    data = tmp_path / "data"
    shutil.copytree(root, data)
    manifest = data / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines[3] = lines[3].replace(",normal,", ",pnemonia,").replace(",abnormal,", ",pnemonia,")
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"row 3 field 'label'"):
        run_experiment(make_config(data, tiny_models["qwen2_vl"], tmp_path / "out", task), progress=False)


@pytest.mark.parametrize("mutate, field", [
    (lambda raw: raw["eval"].update(conditions=[{"selector": "random", "k": -1}]), "eval.conditions.0.k"),
    (lambda raw: raw["models"][0].pop("name"), "models.0"),
    (lambda raw: raw.update(unexpected=1), "unexpected"),
    (lambda raw: raw["task"].update(healthy_class="missing"), "task"),
])
def test_malformed_config_names_the_field(tmp_path, mutate, field, synthetic_data, tiny_models):
    root, _, task = synthetic_data
    raw = make_config(root, tiny_models["qwen2_vl"], tmp_path / "out", task).model_dump(mode="json")
    mutate(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_yaml(path)
    assert field in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_selector_is_a_clear_error(synthetic_data, tiny_models, tmp_path):
    root, _, task = synthetic_data
    config = make_config(root, tiny_models["qwen2_vl"], tmp_path / "out", task,
                         conditions=[{"selector": "telepathy", "k": 1}])
    with pytest.raises(SeeInPairsError, match="unknown selector 'telepathy'"):
        run_experiment(config, progress=False)
    assert PredictionStore(tmp_path / "out").records() == []


def test_paired_model_is_tested_against_another_models_single_baseline(synthetic_data, tiny_models, tmp_path):
    root, _, task = synthetic_data
    raw = make_config(root, tiny_models["qwen2_vl"], tmp_path / "out", task).model_dump(mode="json")
    raw["models"] = [
        {"name": str(tiny_models["qwen2_vl"]), "label": "single-trained", "device": "cpu",
         "conditions": [{"selector": "none", "k": 0}]},
        {"name": str(tiny_models["idefics3"]), "label": "paired-trained", "device": "cpu",
         "conditions": [{"selector": "random", "k": [1, 2]}]},
    ]
    raw["eval"]["baseline_model"] = "single-trained"
    result = run_experiment(ExperimentConfig.from_dict(raw), progress=False)
    assert list(result.summary["model"]) == ["single-trained", "paired-trained", "paired-trained"]
    assert list(result.paired_tests["baseline"]) == ["single-trained", "single-trained"]
    assert list(result.paired_tests["k"]) == [1, 2]


def test_unknown_baseline_model_is_a_config_error(synthetic_data, tiny_models, tmp_path):
    root, _, task = synthetic_data
    raw = make_config(root, tiny_models["qwen2_vl"], tmp_path / "out", task).model_dump(mode="json")
    raw["eval"]["baseline_model"] = "nobody"
    with pytest.raises(ConfigError, match="nobody"):
        ExperimentConfig.from_dict(raw)


def test_predictions_record_how_a_remote_backend_scored(synthetic_data, tiny_models, tmp_path):
    """A server without log-probs falls back to generation, and each prediction says so."""
    import httpx

    from seeinpairs.backends.openai_compat import OpenAICompatBackend

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": "abnormal"}, "logprobs": None}]})

    root, _, task = synthetic_data
    raw = make_config(root, tiny_models["qwen2_vl"], tmp_path / "out", task).model_dump(mode="json")
    raw["models"] = [{"backend": "openai_compat", "name": "served-model", "options": {"base_url": "http://fake/v1"}}]
    raw["eval"]["conditions"] = [{"selector": "none", "k": 0}, {"selector": "random", "k": 1}]
    config = ExperimentConfig.from_dict(raw)
    def factory(model):
        assert model.name == "served-model"
        return OpenAICompatBackend(model.name, base_url="http://fake/v1", transport=httpx.MockTransport(handler),
                                   api_key_env=None)

    run_experiment(config, progress=False, backend_factory=factory)
    records = PredictionStore(tmp_path / "out").records()
    assert len(records) == 20
    assert all(r["scoring"]["method"] == "generation" and r["predicted"] == "abnormal" for r in records)


def test_selector_none_with_references_is_a_config_error():
    from seeinpairs.settings import ConditionConfig

    with pytest.raises(ValueError, match="selector 'none'"):
        ConditionConfig(selector="none", k=[0, 2])
    assert ConditionConfig(selector="random", k=[0, 1]).expand() == [("none", 0, {}), ("random", 1, {})]


def test_prior_study_is_its_own_mode_on_the_queries_that_have_a_prior(synthetic_data, tiny_models, tmp_path):
    """The patient's earlier healthy study comes from any split (the patient's history), is labelled
    'prior', covers only queries with an earlier study, and never enters the leakage-free rows."""
    from seeinpairs.cases import Case, CaseTable

    root, table, task = synthetic_data
    # the manifest and its copied images in one folder (images outside the manifest's folder are refused)
    cases = [Case(**{**c.to_record(), "images": tuple(str(tmp_path / "images" / Path(p).name) for p in c.images),
                     "extra": {**c.extra, "follow_up": int(c.case_id.rsplit("_", 1)[1])}}) for c in table]
    CaseTable(cases, str(tmp_path / "manifest.csv")).save(tmp_path / "manifest.csv")
    shutil.copytree(root / "images", tmp_path / "images")
    by_id = {c.case_id: c for c in cases}
    expected = sorted(c.case_id for c in cases if c.split == "test" and any(
        o.patient_id == c.patient_id and o.label == "normal" and o.extra["follow_up"] < c.extra["follow_up"]
        for o in cases))
    assert expected, "the fixture must contain queries with a prior"
    config = make_config(tmp_path, tiny_models["qwen2_vl"], tmp_path / "out", task, max_cases=None,
                         conditions=[{"selector": "none", "k": 0}, {"selector": "random", "k": 1},
                                     {"selector": "prior_study", "k": 1}])
    result = run_experiment(config, progress=False)
    modes = dict(zip(result.summary["selector"], result.summary["mode"]))
    assert modes == {"none": "single", "random": "paired", "prior_study": "prior"}
    prior = next(recs for key, recs in result.records.items() if key.selector == "prior_study")
    assert {key.mode for key in result.records} == {"single", "paired", "prior"}
    assert sorted(r["case_id"] for r in prior) == expected
    for record in prior:
        query, reference = by_id[record["case_id"]], by_id[record["reference_ids"][0]]
        assert reference.patient_id == query.patient_id and reference.label == "normal"
        assert reference.extra["follow_up"] < query.extra["follow_up"]
    random_records = next(recs for key, recs in result.records.items() if key.selector == "random")
    assert all(by_id[r["reference_ids"][0]].patient_id != r["patient_id"] for r in random_records)
    tests = result.paired_tests.set_index("selector")
    assert tests.loc["prior_study", "mode"] == "prior" and tests.loc["prior_study", "n"] == len(expected)
    from seeinpairs.report import findings_from

    findings = findings_from(result.summary, result.paired_tests)
    prior_lines = [f for f in findings if "prior_study" in f]
    assert len(prior_lines) == 1 and "not leakage-free" in prior_lines[0] and f"{len(expected)} queries" in prior_lines[0]
