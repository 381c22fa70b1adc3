import json
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from seeinpairs.backends.encoding import answer_log_probs
from seeinpairs.backends.hf import HFBackend
from seeinpairs.backends.processors import load_processor
from seeinpairs.errors import ConfigError
from seeinpairs.references.bank import ReferenceBank
from seeinpairs.training import ExampleBuilder, TrainConfig, select_train_cases, train
from seeinpairs.training.data import example_rng


def make_config(synthetic_data, tiny_models, tmp_path, **overrides) -> TrainConfig:
    root, _, task = synthetic_data
    data = {
        "task": task.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
        "model": {"name": str(tiny_models["qwen2_vl"]), "device": "cpu", "batch_size": 16},
        "k": 1, "batch_size": 4, "lr": 1e-3, "max_steps": 4, "eval_every": 2, "max_val_cases": 6,
        "output_dir": str(tmp_path / "run"),
    }
    data.update(overrides)
    return TrainConfig.from_dict(data)


def train_cases(synthetic_data):
    _, table, _ = synthetic_data
    return [c for c in table if c.split == "train"]


@pytest.fixture(scope="module")
def qwen(tiny_models):
    from transformers import AutoModelForImageTextToText

    path = tiny_models["qwen2_vl"]
    return AutoModelForImageTextToText.from_pretrained(path), load_processor(path)


def builder_for(synthetic_data, processor, ks, seed=0) -> ExampleBuilder:
    _, table, task = synthetic_data
    bank = ReferenceBank.from_table(table, task, split="train")
    return ExampleBuilder(task, processor, bank, "random", ks, seed=seed)


# ----- examples ---------------------------------------------------------------------------------------
def test_labels_mask_everything_but_the_answer_tokens(synthetic_data, qwen):
    _, processor = qwen
    builder = builder_for(synthetic_data, processor, [1])
    cases = train_cases(synthetic_data)[:4]
    batch = builder.train_batch(cases, epoch=0)
    labels, ids = batch.labels, batch.inputs["input_ids"]
    for row, case in enumerate(cases):
        start, answer = batch.prompt_lengths[row], batch.answer_ids[row]
        kept = (labels[row] != -100).nonzero().flatten().tolist()
        assert kept == list(range(start, start + len(answer)))
        assert ids[row, kept].tolist() == answer == labels[row, kept].tolist()
        assert processor.tokenizer.decode(answer).strip() == case.label
        assert batch.inputs["attention_mask"][row].sum() == start + len(answer)
        assert int(batch.inputs["mm_token_type_ids"][row, start:].abs().sum()) == 0
    assert batch.inputs["mm_token_type_ids"].shape == ids.shape


def test_loss_is_the_negative_option_score(synthetic_data, qwen):
    """Training optimises exactly what evaluation scores: the gold option's token log-probs."""
    model, processor = qwen
    builder = builder_for(synthetic_data, processor, [1])
    case = train_cases(synthetic_data)[0]
    request = builder.train_request(case, epoch=0)
    with torch.no_grad():
        trained_on = float(answer_log_probs(model.eval(), builder.encode([request], [case.label]))[0].sum())
    scored = HFBackend.from_components(model, processor).score_options([request])[0]
    assert trained_on == pytest.approx(scored[request.options.index(case.label)], abs=1e-5)


def test_references_are_deterministic_per_epoch_and_k_lists_mix(synthetic_data, qwen):
    _, processor = qwen
    builder = builder_for(synthetic_data, processor, [0, 2])
    cases = train_cases(synthetic_data)
    counts = [builder.train_request(c, epoch=0).n_images for c in cases]
    assert set(counts) == {1, 3}
    again = builder_for(synthetic_data, processor, [0, 2])
    for case in cases:
        first, second = builder.train_request(case, 0), again.train_request(case, 0)
        assert first.image_ids == second.image_ids
        assert case.case_id not in first.image_ids[:-1]
        assert all(not ref.startswith(case.patient + "_") for ref in first.image_ids[:-1])
    paired = builder_for(synthetic_data, processor, [2])
    epochs = [[paired.train_request(c, e).image_ids for c in cases] for e in (0, 1)]
    assert epochs[0] != epochs[1]  # references vary between epochs
    assert example_rng(0, 1, "x").random() == example_rng(0, 1, "x").random()


# ----- subsets ----------------------------------------------------------------------------------------
def test_single_and_paired_runs_train_on_the_same_cases(synthetic_data, tiny_models, tmp_path):
    common = dict(n_train=12, seed=5, max_steps=1, val_split=None)
    single = train(make_config(synthetic_data, tiny_models, tmp_path / "s", k=0, **common), progress=False)
    paired = train(make_config(synthetic_data, tiny_models, tmp_path / "p", k=1, selector="random", **common),
                   progress=False)
    assert len(single.train_case_ids) == 12
    assert single.train_case_ids == paired.train_case_ids
    summary = json.loads((tmp_path / "p" / "run" / "train_summary.json").read_text())
    assert summary["train_case_ids"] == paired.train_case_ids and summary["n_train"] == 12


def test_subsets_are_nested_seeded_and_balanceable(synthetic_data):
    cases = train_cases(synthetic_data)
    small = [c.case_id for c in select_train_cases(cases, 6, seed=1)]
    large = [c.case_id for c in select_train_cases(cases, 12, seed=1)]
    assert large[:6] == small
    assert small != [c.case_id for c in select_train_cases(cases, 6, seed=2)]
    assert small == [c.case_id for c in select_train_cases(list(reversed(cases)), 6, seed=1)]
    balanced = select_train_cases(cases, 10, seed=1, balance_labels=True, classes=["normal", "abnormal"])
    labels = [c.label for c in balanced]
    assert labels.count("normal") == labels.count("abnormal") == 5
    with pytest.raises(ConfigError, match="n_train"):
        select_train_cases(cases, 10_000, seed=1)


# ----- the loop ---------------------------------------------------------------------------------------
def test_training_steps_lower_the_loss_on_a_fixed_batch(synthetic_data, tiny_models):
    from transformers import AutoModelForImageTextToText

    path = tiny_models["qwen2_vl"]
    model, processor = AutoModelForImageTextToText.from_pretrained(path), load_processor(path)
    builder = builder_for(synthetic_data, processor, [1])
    batch = builder.train_batch(train_cases(synthetic_data)[:8], epoch=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    torch.manual_seed(0)

    def loss_now():
        return -torch.cat(answer_log_probs(model, batch)).mean()

    with torch.no_grad():
        before = float(loss_now())
    for _ in range(30):
        optimizer.zero_grad()
        loss_now().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss_now())
    assert after < 0.5 * before and after < 1.0


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_checkpoint_reloads_to_identical_scores(synthetic_data, tiny_models, tmp_path, family):
    config = make_config(synthetic_data, tiny_models, tmp_path, val_split=None, max_steps=5,
                         model={"name": str(tiny_models[family]), "device": "cpu"})
    result = train(config, progress=False)
    assert result.mode == "full" and result.steps == 5 and result.checkpoint.name == "final"
    assert [h["step"] for h in result.history] == [2, 4, 5]
    builder = builder_for(synthetic_data, result.processor, [1])
    requests = [builder.eval_request(c, 1) for c in train_cases(synthetic_data)[:6]]
    in_memory = HFBackend.from_components(result.model, result.processor).score_options(requests)
    reloaded = HFBackend(result.checkpoint, device="cpu").score_options(requests)
    base = HFBackend(tiny_models[family], device="cpu").score_options(requests)
    assert np.max(np.abs(np.array(in_memory) - np.array(reloaded))) < 1e-5
    assert np.max(np.abs(np.array(base) - np.array(reloaded))) > 1e-3  # training changed the model
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert summary["steps"] == 5 and summary["mode"] == "full"
    assert json.loads((result.output_dir / "history.json").read_text()) == result.history


def test_resume_ends_with_the_same_weights(synthetic_data, tiny_models, tmp_path):
    overrides = dict(k=[0, 1], max_steps=6, eval_every=2, lora={"enabled": False})
    full = train(make_config(synthetic_data, tiny_models, tmp_path / "a", **overrides), progress=False)
    config = make_config(synthetic_data, tiny_models, tmp_path / "b", **overrides)
    partial = train(config, progress=False, stop_after=3)
    assert partial.steps == 3 and (partial.output_dir / "last" / "trainer_state.pt").is_file()
    assert not (partial.output_dir / "final").exists()
    resumed = train(config, progress=False, resume=True)
    assert resumed.steps == 6 and resumed.best_step == full.best_step
    expected = load_file(full.checkpoint / "model.safetensors")
    got = load_file(resumed.checkpoint / "model.safetensors")
    assert expected.keys() == got.keys()
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) < 1e-6
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in full.history], abs=1e-6)
    with pytest.raises(ConfigError, match="lr"):
        train(make_config(synthetic_data, tiny_models, tmp_path / "b", **{**overrides, "lr": 1e-2}),
              progress=False, resume=True)


def test_lora_trains_only_adapters_and_saves_loadable_models(synthetic_data, tiny_models, tmp_path):
    config = make_config(synthetic_data, tiny_models, tmp_path, lora={"enabled": True, "r": 4, "dropout": 0.0},
                         max_steps=3, lr=1e-2, val_split=None)
    result = train(config, progress=False)
    assert result.mode == "lora" and result.adapter is not None
    summary = result.summary
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"] / 10
    base = load_file(tiny_models["qwen2_vl"] / "model.safetensors")
    merged = load_file(result.checkpoint / "model.safetensors")
    assert base.keys() == merged.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    # only the language model's attention projections (the default targets for qwen2_vl) changed
    assert changed and all("visual" not in k and k.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj")
                           for k in changed)
    adapter_weights = load_file(result.adapter / "adapter_model.safetensors")
    assert adapter_weights and all("lora_" in k for k in adapter_weights)
    builder = builder_for(synthetic_data, result.processor, [1])
    requests = [builder.eval_request(c, 1) for c in train_cases(synthetic_data)[:4]]
    from_merged = HFBackend(result.checkpoint, device="cpu").score_options(requests)
    from_adapter = HFBackend(result.adapter, device="cpu").score_options(requests)
    assert np.max(np.abs(np.array(from_merged) - np.array(from_adapter))) < 1e-5


def test_validation_keeps_the_best_checkpoint(synthetic_data, tiny_models, tmp_path):
    result = train(make_config(synthetic_data, tiny_models, tmp_path, max_steps=8, eval_every=1, lr=5e-2,
                               patience=2), progress=False)
    losses = [h["val_loss"] for h in result.history]
    assert all("val_auroc" in h and "train_loss" in h for h in result.history)
    assert result.best_step == result.history[int(np.argmin(losses))]["step"]
    if result.stopped_early:  # two evaluations in a row without a new best, before the last step
        assert result.steps < 8 and min(losses[-2:]) >= min(losses)
    else:
        assert result.steps == 8
    provenance = json.loads((result.checkpoint / "seeinpairs_sft.json").read_text())
    assert provenance["step"] == result.best_step
    best = load_file(result.output_dir / "best" / "model.safetensors")
    final = load_file(result.checkpoint / "model.safetensors")
    assert all(torch.equal(best[k], final[k]) for k in best)


# ----- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, field", [
    ({"lr": -1}, "lr"),
    ({"epochz": 2}, "epochz"),
    ({"k": [1, -2]}, "k"),
    ({"lora": {"enabled": "maybe"}}, "lora.enabled"),
    ({"lora": {"rank": 4}}, "lora.rank"),
    ({"tiny_spec": {"width": 3}}, "tiny_spec"),
    ({"k": 0, "val_k": 2}, "val_k"),
    ({"model": {"name": "x", "tiny": "qwen2_vl"}}, "model"),
])
def test_config_errors_name_the_field(synthetic_data, tiny_models, tmp_path, override, field):
    with pytest.raises(ConfigError) as info:
        make_config(synthetic_data, tiny_models, tmp_path, **override)
    message = str(info.value)
    assert f"field '{field}'" in message and "\n" not in message


def test_from_yaml_resolves_paths_and_lora_auto(synthetic_data, tiny_models, tmp_path):
    root, _, task = synthetic_data
    (tmp_path / "cfg.yaml").write_text(
        f"task: {json.dumps(task.model_dump())}\n"
        f"data: {{manifest: {root / 'manifest.csv'}}}\n"
        "model: {tiny: qwen2_vl, tiny_seed: 1}\n"
        "k: [0, 1, 2]\nlora: {r: 4}\noutput_dir: out\n")
    config = TrainConfig.from_yaml(tmp_path / "cfg.yaml")
    assert config.output_dir == tmp_path / "out" and config.ks == [0, 1, 2] and config.validation_k == 2
    assert config.lora.enabled == "auto"
    from seeinpairs.training.sft import uses_lora

    assert not uses_lora(config, str(tiny_models["qwen2_vl"]))  # tiny, random init: full training
    assert uses_lora(config, "Qwen/Qwen2-VL-2B-Instruct")
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


# ----- acquisition augmentation ---------------------------------------------------------------------------
def test_acquisition_augment_is_opt_in_wired_and_part_of_the_resume_check(synthetic_data, tiny_models, tmp_path):
    common = {"max_steps": 2, "val_split": None, "lora": {"enabled": False}}
    plain = make_config(synthetic_data, tiny_models, tmp_path / "plain", **common)
    assert plain.augment is None and "augment" not in plain.model_dump(mode="json")  # older runs still match
    augmented = make_config(synthetic_data, tiny_models, tmp_path / "aug", augment={"kind": "acquisition"}, **common)
    assert augmented.model_dump(mode="json")["augment"]["shared"] is True
    a = train(plain, progress=False)
    b = train(augmented, progress=False)
    assert b.summary["config"]["augment"]["kind"] == "acquisition"
    weights_a = load_file(a.checkpoint / "model.safetensors")
    weights_b = load_file(b.checkpoint / "model.safetensors")
    assert any(not torch.equal(weights_a[k], weights_b[k]) for k in weights_a)  # other images were trained on
    # interrupted and resumed, an augmented run ends with the same weights (the draws are keyed by seed, epoch, case)
    partial = make_config(synthetic_data, tiny_models, tmp_path / "part", augment={"kind": "acquisition"}, **common)
    train(partial, progress=False, stop_after=1)
    changed = make_config(synthetic_data, tiny_models, tmp_path / "part", augment={"shared": False}, **common)
    with pytest.raises(ConfigError, match="augment"):
        train(changed, progress=False, resume=True)
    resumed = load_file(train(partial, progress=False, resume=True).checkpoint / "model.safetensors")
    assert max(float((resumed[k] - weights_b[k]).abs().max()) for k in weights_b) < 1e-6


def test_a_second_training_in_one_folder_is_refused(synthetic_data, tiny_models, tmp_path):
    from seeinpairs.atomic import FolderInUseError, folder_lock

    config = make_config(synthetic_data, tiny_models, tmp_path)
    with folder_lock(config.output_dir):  # as a training in another process would hold it
        with pytest.raises(FolderInUseError, match="is in use by process"):
            train(config, progress=False)


# ----- class balance ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imbalanced_data(tmp_path_factory):
    """A small synthetic table with about 25% abnormal cases and a conspicuous lesion."""
    from seeinpairs.datasets.synthetic import SyntheticConfig, generate_synthetic

    root = tmp_path_factory.mktemp("imbalanced")
    table, task = generate_synthetic(root, SyntheticConfig(n_patients=70, seed=5, abnormal_fraction=0.25,
                                                           lesion_contrast=0.8, image_size=32))
    return root, table, task


def imbalanced_config(data, tmp_path, **overrides) -> TrainConfig:
    root, _, task = data
    return TrainConfig.from_dict({
        "task": task.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
        "model": {"tiny": "qwen2_vl", "device": "cpu", "batch_size": 32},
        "tiny_spec": {"text_layers": 1, "vision_layers": 1}, "k": 0, "batch_size": 8, "lr": 3e-3,
        "val_split": None, "output_dir": str(tmp_path / "run"), **overrides})


def test_the_balanced_sampler_draws_each_class_equally_often_in_training(imbalanced_data, tmp_path):
    _, table, _ = imbalanced_data
    counts = Counter(c.label for c in table if c.split == "train")
    assert counts["normal"] >= 2 * counts["abnormal"]  # the fixture is imbalanced
    result = train(imbalanced_config(imbalanced_data, tmp_path, epochs=1, class_balance="sampler"), progress=False)
    balance = result.summary["class_balance"]
    assert balance["applied"] == "sampler" and balance["label_counts"] == dict(sorted(counts.items()))
    drawn = balance["drawn_label_counts"]
    assert sum(drawn.values()) == sum(counts.values()) and abs(drawn["normal"] - drawn["abnormal"]) <= 1
    assert result.summary["training_flags"]["flat_loss"]["flagged"] is None  # too few steps for a verdict


def _held_out_verdict(result, table, task) -> tuple[str, float]:
    """(degenerate_reason, balanced accuracy) of a trained single-image model on the val and test cases."""
    from seeinpairs.backends.base import option_probabilities
    from seeinpairs.evaluation.degenerate import degenerate_reason
    from seeinpairs.evaluation.metrics import balanced_accuracy

    held_out = [c for c in table if c.split in ("val", "test")]
    builder = ExampleBuilder(task, result.processor, None, "none", [0])
    requests = [builder.eval_request(c, 0) for c in held_out]
    scores = HFBackend.from_components(result.model, result.processor).score_options(requests)
    probs = np.array([option_probabilities(s) for s in scores])
    options = requests[0].options
    gold = np.array([options.index(c.label) for c in held_out])
    return (degenerate_reason(gold, probs, options),
            balanced_accuracy(gold, probs, options, options.index(task.healthy_class)))


def test_balanced_training_on_an_imbalanced_table_does_not_answer_a_constant(imbalanced_data, tmp_path):
    """The default (auto: the balanced sampler here) learns; the same run without balancing answers the
    class shares for every case, and its training summary flags the flat loss."""
    _, table, task = imbalanced_data
    balanced = train(imbalanced_config(imbalanced_data, tmp_path / "auto", max_steps=150), progress=False)
    assert balanced.summary["class_balance"]["mode"] == "auto"
    assert balanced.summary["class_balance"]["applied"] == "sampler"
    reason, score = _held_out_verdict(balanced, table, task)
    assert reason == "" and score > 0.6
    flat = balanced.summary["training_flags"]["flat_loss"]
    assert flat["flagged"] is False and flat["late"] < 0.5 * flat["prior_loss"]

    plain = train(imbalanced_config(imbalanced_data, tmp_path / "none", max_steps=150, class_balance="none"),
                  progress=False)
    reason, score = _held_out_verdict(plain, table, task)
    assert reason.startswith("near-constant") and score == pytest.approx(0.5)
    flat = plain.summary["training_flags"]["flat_loss"]
    assert flat["flagged"] is True and "flat training loss" in flat["why"]
    saved = json.loads((tmp_path / "none" / "run" / "train_summary.json").read_text())
    assert saved["training_flags"] == plain.summary["training_flags"]
