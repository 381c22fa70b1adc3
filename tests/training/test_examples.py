"""Training on generic (request, answer) examples: the same loop as comparative SFT."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from seeinpairs.backends.encoding import answer_log_probs
from seeinpairs.backends.hf import HFBackend
from seeinpairs.backends.processors import load_processor
from seeinpairs.errors import ConfigError
from seeinpairs.imaging import load_image
from seeinpairs.prompts import Request
from seeinpairs.training import (
    LabelledRequest,
    RequestExamples,
    SFTSettings,
    encode_examples,
    train_on_examples,
)


def two_image_examples(synthetic_data, n: int, with_options: bool = True) -> list[LabelledRequest]:
    """'Which image is abnormal?' over pairs of one normal and one abnormal image, gold order alternating."""
    _, table, _ = synthetic_data
    normal = [c for c in table if c.label == "normal"]
    abnormal = [c for c in table if c.label == "abnormal"]
    examples = []
    for i in range(n):
        first, second = (abnormal[i % len(abnormal)], normal[i % len(normal)])
        if i % 2:
            first, second = second, first
        content = [{"type": "image"}, {"type": "image"},
                   {"type": "text", "text": "Which image shows an abnormal opacity?\nA: the first image\nB: the second image"}]
        options = ["A: the first image", "B: the second image"] if with_options else []
        answer = "A: the first image" if first.label == "abnormal" else "B: the second image"
        request = Request([{"role": "user", "content": content}], [load_image(first.image), load_image(second.image)],
                          options, [first.case_id, second.case_id])
        examples.append(LabelledRequest(request, answer, f"pair{i}"))
    return examples


def settings(tmp_path, **overrides) -> SFTSettings:
    data = {"model": {"tiny": "qwen2_vl", "device": "cpu", "batch_size": 8}, "batch_size": 4, "lr": 2e-3,
            "max_steps": 4, "eval_every": 2, "output_dir": str(tmp_path / "run")}
    data.update(overrides)
    return SFTSettings.from_dict(data)


def test_examples_encode_with_answer_labels_only(synthetic_data, tiny_models):
    processor = load_processor(tiny_models["qwen2_vl"])
    examples = two_image_examples(synthetic_data, 3)
    batch = encode_examples(processor, examples)
    for row, example in enumerate(examples):
        kept = (batch.labels[row] != -100).nonzero().flatten().tolist()
        assert processor.tokenizer.decode(batch.inputs["input_ids"][row, kept]).strip() == example.answer
    # a tuple is accepted too, and ids must be unique
    source = RequestExamples([(e.request, e.answer) for e in examples], processor)
    assert source.ids == ["0", "1", "2"]
    with pytest.raises(ConfigError, match="not unique"):
        RequestExamples([examples[0], examples[0]], processor)


def test_train_on_examples_trains_validates_and_reloads(synthetic_data, tmp_path):
    train_examples = two_image_examples(synthetic_data, 12)
    val_examples = two_image_examples(synthetic_data, 6)
    result = train_on_examples(settings(tmp_path), train_examples, val_examples, progress=False)
    assert result.steps == 4 and result.mode == "full" and [h["step"] for h in result.history] == [2, 4]
    assert all(0 <= h["val_accuracy"] <= 1 and h["val_loss"] > 0 for h in result.history)
    assert result.train_case_ids == [f"pair{i}" for i in range(12)]
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert summary["n_train"] == 12 and summary["n_val"] == 6
    # the tiny tokenizer learned the examples' words; val_loss is the gold option's score per token
    requests = [e.request for e in val_examples]
    reloaded = HFBackend(result.checkpoint, device="cpu")
    scores = reloaded.score_options(requests)
    in_memory = HFBackend.from_components(result.model, result.processor).score_options(requests)
    assert np.max(np.abs(np.array(scores) - np.array(in_memory))) < 1e-5
    tokens = sum(len(reloaded.tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in val_examples)
    nll = -sum(s[e.request.options.index(e.answer)] for s, e in zip(scores, val_examples)) / tokens
    best = next(h for h in result.history if h["step"] == result.best_step)
    assert nll == pytest.approx(best["val_loss"], rel=1e-4)


def test_open_ended_validation_uses_answer_nll(synthetic_data, tmp_path):
    train_examples = two_image_examples(synthetic_data, 8, with_options=False)
    result = train_on_examples(settings(tmp_path, max_steps=2), train_examples, train_examples[:4], progress=False)
    record = result.history[-1]
    assert "val_accuracy" not in record
    processor = result.processor
    with torch.no_grad():
        log_probs = answer_log_probs(result.model, encode_examples(processor, train_examples[:4]))
    expected = -float(sum(v.sum() for v in log_probs)) / sum(len(v) for v in log_probs)
    assert record["val_loss"] == pytest.approx(expected, rel=1e-4)


def test_resume_on_examples_matches_and_refuses_changed_examples(synthetic_data, tmp_path):
    examples = two_image_examples(synthetic_data, 8)
    full = train_on_examples(settings(tmp_path / "a"), examples, examples[:4], progress=False)
    config = settings(tmp_path / "b")
    partial = train_on_examples(config, examples, examples[:4], progress=False, stop_after=3)
    assert partial.steps == 3 and not (partial.output_dir / "final").exists()
    resumed = train_on_examples(config, examples, examples[:4], progress=False, resume=True)
    expected, got = load_file(full.checkpoint / "model.safetensors"), load_file(resumed.checkpoint / "model.safetensors")
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) < 1e-6
    with pytest.raises(ConfigError, match="train_examples"):
        train_on_examples(config, examples[:6], examples[:4], progress=False, resume=True)
    with pytest.raises(ConfigError, match="no training examples"):
        train_on_examples(config, [], progress=False)


def test_lora_on_examples_for_a_non_tiny_base(synthetic_data, tiny_models, tmp_path):
    config = settings(tmp_path, model={"name": str(tiny_models["qwen2_vl"]), "device": "cpu"},
                      lora={"enabled": True, "r": 4, "dropout": 0.0}, max_steps=2)
    result = train_on_examples(config, two_image_examples(synthetic_data, 4), progress=False)
    assert result.mode == "lora" and result.adapter is not None
    assert 0 < result.summary["trainable_parameters"] < result.summary["total_parameters"] / 10


def test_end_of_turn_appends_the_eos_label_only_when_asked(synthetic_data, tiny_models):
    processor = load_processor(tiny_models["qwen2_vl"])
    examples = two_image_examples(synthetic_data, 2)
    plain, ended = encode_examples(processor, examples), encode_examples(processor, examples, end_of_turn=True)
    eos = processor.tokenizer.eos_token_id
    for row in range(len(examples)):
        plain_labels = plain.labels[row][plain.labels[row] != -100].tolist()
        ended_labels = ended.labels[row][ended.labels[row] != -100].tolist()
        assert ended_labels == [*plain_labels, eos] and eos not in plain_labels
    eos_token = processor.tokenizer.eos_token
    processor.tokenizer.eos_token = None
    try:
        with pytest.raises(ConfigError, match="end_of_turn: the tokenizer defines no end-of-sequence token"):
            RequestExamples(examples, processor, end_of_turn=True)
    finally:
        processor.tokenizer.eos_token = eos_token
    assert processor.tokenizer.eos_token_id == eos


def test_end_of_turn_training_makes_generation_stop_after_the_answer(synthetic_data, tmp_path):
    examples = two_image_examples(synthetic_data, 16)
    run = settings(tmp_path, end_of_turn=True, max_steps=40, eval_every=40, lr=3e-3)
    result = train_on_examples(run, examples, examples[:4], progress=False)
    backend = HFBackend.from_components(result.model, result.processor)
    answers = backend.generate([e.request for e in examples[:6]], max_new_tokens=12)
    assert all(a in ("A: the first image", "B: the second image") for a in answers), answers
    assert "end_of_turn" in json.loads((result.output_dir / "train_summary.json").read_text())["config"]
