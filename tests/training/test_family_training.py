"""Every registered family trains: LoRA adapts the language model only by default, and a step gives a finite loss."""

import math

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import AutoModelForImageTextToText

from seeinpairs.backends.encoding import answer_log_probs
from seeinpairs.backends.lora_targets import adapted_modules
from seeinpairs.backends.processors import load_processor
from seeinpairs.backends.tiny import TINY_FAMILIES
from seeinpairs.errors import ConfigError
from seeinpairs.prompts import Request
from seeinpairs.training import LabelledRequest, LoraConfig, SFTSettings, encode_examples, train_on_examples
from shared_helpers import random_image

#: words in the names of vision towers and projectors across the families (visual, vision_tower,
#: vision_model, multi_modal_projector, connector); the language model is language_model or text_model
VISION_WORDS = ("visual", "vision", "projector", "connector")
LANGUAGE_WORDS = ("language_model", "text_model")


def examples(seed=0) -> list[LabelledRequest]:
    rng = np.random.default_rng(seed)

    def text(t):
        return {"type": "text", "text": t}

    content = [text("Reference 1:"), {"type": "image"}, text("Query:"), {"type": "image"}, text("Is it normal?")]
    return [LabelledRequest(Request([{"role": "user", "content": content}], [random_image(rng), random_image(rng)],
                                    ["normal", "abnormal"]), answer)
            for answer in ("normal", "abnormal pneumonia")]


def load(folder):
    return AutoModelForImageTextToText.from_pretrained(folder), load_processor(folder)


@pytest.mark.parametrize("family", TINY_FAMILIES.list_names())
def test_default_lora_targets_adapt_the_language_models_attention_only_and_a_step_trains(tiny_models, family):
    model, processor = load(tiny_models[family])
    peft_model = get_peft_model(model, PeftLoraConfig(r=4, target_modules=LoraConfig().targets(model)))
    adapted = adapted_modules(peft_model)
    assert adapted, "nothing adapted"
    assert not [n for n in adapted if any(w in n for w in VISION_WORDS)]
    assert all(any(w in n for w in LANGUAGE_WORDS) for n in adapted)
    assert any(n.endswith(".self_attn.q_proj") for n in adapted)

    batch = encode_examples(processor, examples())
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = -torch.cat(answer_log_probs(peft_model, batch)).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert losses[1] != losses[0]  # the adapters were updated (LoRA B starts at zero)


def test_explicit_targets_are_used_as_given_vision_tower_included(tiny_models):
    model, _ = load(tiny_models["qwen2_vl"])
    targets = LoraConfig(target_modules="all-linear").targets(model)
    adapted = adapted_modules(get_peft_model(model, PeftLoraConfig(r=4, target_modules=targets)))
    assert any("visual" in n for n in adapted) and any("language_model" in n for n in adapted)


def test_a_model_without_a_language_model_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="lora.target_modules.*name the modules") as info:
        LoraConfig().targets(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert "\n" not in str(info.value)


def test_mllama_lora_training_runs_through_the_trainer_with_a_finite_loss(tiny_models, tmp_path):
    """Mllama's per-token cross-attention mask must grow with the appended answer tokens in training."""
    settings = SFTSettings(model={"name": str(tiny_models["mllama"]), "device": "cpu"}, max_steps=1, batch_size=2,
                           lora={"enabled": True, "r": 4}, output_dir=tmp_path / "run")
    result = train_on_examples(settings, examples(), progress=False)
    assert result.mode == "lora" and result.steps == 1
    losses = [h["train_loss"] for h in result.history]
    assert losses and all(math.isfinite(v) and v > 0 for v in losses)
