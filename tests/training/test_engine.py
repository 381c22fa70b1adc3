"""The training engine's options: mixed-precision autocast, gradient checkpointing, several processes."""

import json

import pytest
import torch
from safetensors.torch import load_file

from seeinpairs.errors import ConfigError
from seeinpairs.training import TrainConfig, train


def make_config(synthetic_data, tiny_models, tmp_path, **overrides) -> TrainConfig:
    root, _, task = synthetic_data
    data = {"task": task.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
            "model": {"name": str(tiny_models["qwen2_vl"]), "device": "cpu", "batch_size": 16},
            "batch_size": 4, "max_val_cases": 6, "output_dir": str(tmp_path / "run"), **overrides}
    return TrainConfig.from_dict(data)


FAST = {"k": 1, "max_steps": 3, "eval_every": 3, "lr": 1e-2, "val_split": None, "lora": {"enabled": False}}


def test_bf16_autocast_trains_with_float32_weights(synthetic_data, tiny_models, tmp_path, monkeypatch):
    seen: list[bool] = []
    original = torch.nn.Linear.forward

    def spy(self, x):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    overrides = {**FAST, "max_steps": 6, "eval_every": 1}
    result = train(make_config(synthetic_data, tiny_models, tmp_path, mixed_precision="bf16", **overrides),
                   progress=False)
    assert seen and all(seen)  # every projection ran under bf16 autocast
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    weights = load_file(result.checkpoint / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}  # weights stay float32 with autocast
    assert result.summary["engine"]["mixed_precision"] == "bf16"
    assert result.summary["config"]["mixed_precision"] == "bf16"
    seen.clear()
    plain = train(make_config(synthetic_data, tiny_models, tmp_path / "plain", **overrides), progress=False)
    assert seen and not any(seen)
    assert "mixed_precision" not in plain.summary["config"]  # the default leaves older runs' dumps unchanged
    # bf16 changes the figures a little, not the course of training
    assert [h["train_loss"] for h in plain.history] == pytest.approx(losses, rel=0.05)


def test_fp16_is_refused_without_cuda(synthetic_data, tiny_models, tmp_path):
    with pytest.raises(ConfigError, match="field 'mixed_precision': fp16 needs a CUDA device") as info:
        train(make_config(synthetic_data, tiny_models, tmp_path, mixed_precision="fp16", **FAST), progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="mixed_precision"):
        make_config(synthetic_data, tiny_models, tmp_path, mixed_precision="fp8")


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_loss(synthetic_data, tiny_models, tmp_path, monkeypatch, lora):
    calls: list[dict] = []
    original = torch.utils.checkpoint.checkpoint

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    import transformers.modeling_utils

    # transformers binds torch's checkpoint function when gradient checkpointing is enabled
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", spy)
    overrides = {**FAST, "eval_every": 1, "lora": {"enabled": lora, "r": 4, "dropout": 0.1}}
    plain = train(make_config(synthetic_data, tiny_models, tmp_path / "plain", **overrides), progress=False)
    assert not calls
    checkpointed = train(make_config(synthetic_data, tiny_models, tmp_path / "gc", gradient_checkpointing=True,
                                     **overrides), progress=False)
    assert calls and all(c.get("use_reentrant") is False for c in calls)  # activations were recomputed
    assert [h["train_loss"] for h in checkpointed.history] == pytest.approx(
        [h["train_loss"] for h in plain.history], rel=1e-5, abs=1e-6)
    a, b = load_file(plain.checkpoint / "model.safetensors"), load_file(checkpointed.checkpoint / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    assert checkpointed.summary["engine"]["gradient_checkpointing"] is True
    assert json.loads((checkpointed.output_dir / "train_summary.json").read_text())["config"]["gradient_checkpointing"]


def test_two_processes_train_on_disjoint_shards_into_one_loadable_checkpoint(synthetic_data, tiny_models, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from seeinpairs.backends import create_backend
    from seeinpairs.references.bank import ReferenceBank
    from seeinpairs.training import ExampleBuilder

    config = make_config(synthetic_data, tiny_models, tmp_path, k=1, max_steps=6, eval_every=3, lr=1e-2,
                         lora={"enabled": False}, class_balance="none")
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))
    script = Path(__file__).with_name("distributed_train.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(config_file)], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = Path(config.output_dir)
    shards = [json.loads((out / f"drawn_{rank}.json").read_text()) for rank in (0, 1)]
    assert shards[0]["steps"] == shards[1]["steps"] == 6
    n = len([c for c in synthetic_data[1] if c.split == "train"])
    for first, second in zip(shards[0]["drawn"], shards[1]["drawn"]):  # each step: two disjoint batches of 4
        assert len(first) == len(second) == 4 and not set(first) & set(second)
    first_epoch = [i for shard in shards for batch in shard["drawn"][:n // 8] for i in batch]
    assert len(set(first_epoch)) == len(first_epoch) == 8 * (n // 8)  # no example twice within an epoch
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["engine"]["processes"] == 2 and summary["steps"] == 6
    _, table, task = synthetic_data
    backend = create_backend({"name": str(out / "final"), "device": "cpu"})
    bank = ReferenceBank.from_table(table, task, split="train")
    builder = ExampleBuilder(task, backend.processor, bank, "random", [1], seed=0)
    requests = [builder.eval_request(c, 1) for c in [c for c in table if c.split == "val"][:4]]
    scores = backend.score_options(requests)
    assert len(scores) == len(requests) > 0 and all(len(s) == len(task.classes) for s in scores)
    base, final = load_file(tiny_models["qwen2_vl"] / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    assert max(float((base[k] - final[k]).abs().max()) for k in base) > 1e-3  # the processes' training is saved


@pytest.mark.parametrize("overrides, message", [
    ({"lora": {"enabled": True, "quantize": 4}}, "field 'lora.quantize': 4-bit bitsandbytes needs a CUDA device"),
    ({"lora": {"enabled": False, "quantize": 8}}, "field 'lora.quantize': a quantised base trains an adapter only"),
    ({"lora": {"enabled": True, "quantize": 3}}, "lora.quantize"),
])
def test_quantised_lora_is_refused_where_it_cannot_run(synthetic_data, tiny_models, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        train(make_config(synthetic_data, tiny_models, tmp_path, **{**FAST, **overrides}), progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "last").exists()


@pytest.mark.parametrize("tracker, package", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_report_to_needs_its_package_or_logs_every_evaluation(synthetic_data, tiny_models, tmp_path, tracker, package):
    import importlib.util

    with pytest.raises(ConfigError, match="report_to"):
        make_config(synthetic_data, tiny_models, tmp_path, report_to="mlflow")
    config = make_config(synthetic_data, tiny_models, tmp_path, report_to=tracker, **FAST)
    if importlib.util.find_spec(package) is None:
        with pytest.raises(ConfigError, match=f"field 'report_to': {tracker} needs the {package} package") as info:
            train(config, progress=False)
        assert "\n" not in str(info.value)
        return
    train(config, progress=False)  # pragma: no cover - where the tracker is installed
    assert any((tmp_path / "run" / "logs").rglob("*"))


def test_max_image_tokens_bounds_every_image_and_travels_with_the_checkpoint(synthetic_data, tiny_models, tmp_path):
    from seeinpairs.backends.processors import load_processor
    from seeinpairs.training.examples import CaseExamples

    def image_tokens_per_image(budget: int | None) -> list[int]:
        counts: list[int] = []
        original = CaseExamples.batch

        def recording(self, indices, epoch):
            batch = original(self, indices, epoch)
            grid = batch.inputs["image_grid_thw"]
            counts.extend(int(t * h * w) // 4 for t, h, w in grid.tolist())  # merged 2x2 patches
            return batch

        CaseExamples.batch = recording
        try:
            overrides = {**FAST, "max_steps": 1, **({"max_image_tokens": budget} if budget else {})}
            result = train(make_config(synthetic_data, tiny_models, tmp_path / str(budget), **overrides),
                           progress=False)
        finally:
            CaseExamples.batch = original
        if budget:
            assert load_processor(result.checkpoint).image_processor.size.longest_edge == budget * 28 * 28
        return counts

    unbounded = image_tokens_per_image(None)
    assert max(unbounded) > 2
    bounded = image_tokens_per_image(2)
    assert bounded and max(bounded) <= 2


def test_max_image_tokens_is_refused_for_other_processors(synthetic_data, tiny_models, tmp_path):
    config = make_config(synthetic_data, tiny_models, tmp_path, max_image_tokens=4, **FAST)
    config = config.model_copy(update={"model": config.model.model_copy(update={"name": str(tiny_models["idefics3"])})})
    with pytest.raises(ConfigError, match="field 'max_image_tokens': supported for Qwen2-VL-style processors"):
        train(config, progress=False)
