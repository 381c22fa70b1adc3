import json

import pytest
import transformers

from seeinpairs.backends.processors import load_processor
from seeinpairs.backends.tiny import TINY_FAMILIES, list_tiny_families

EXPECTED = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "idefics3": "Idefics3ForConditionalGeneration",
            "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration",
            "gemma3": "Gemma3ForConditionalGeneration", "llava": "LlavaForConditionalGeneration",
            "llava_onevision": "LlavaOnevisionForConditionalGeneration",
            "internvl": "InternVLForConditionalGeneration", "glm4v": "Glm4vForConditionalGeneration",
            "mllama": "MllamaForConditionalGeneration", "smolvlm": "SmolVLMForConditionalGeneration"}


def test_registry_lists_both_required_families():
    assert {"qwen2_vl", "idefics3"} <= set(list_tiny_families())


@pytest.mark.parametrize("family", TINY_FAMILIES.list_names())
def test_tiny_model_reloads_as_its_real_architecture_with_processor(tiny_models, family):
    folder = tiny_models[family]
    model = transformers.AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == EXPECTED[family]
    processor = load_processor(folder)
    assert processor.image_processor is not None
    assert type(processor.image_processor).__name__.endswith("Pil")
    assert processor.chat_template
    meta = json.loads((folder / "seeinpairs_tiny.json").read_text())
    assert meta["family"] == family


@pytest.mark.parametrize("family", TINY_FAMILIES.list_names())
def test_chat_template_puts_images_in_order_and_opens_the_answer(tiny_models, family):
    processor = load_processor(tiny_models[family])
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Reference 1:"}, {"type": "image"},
        {"type": "text", "text": "Query:"}, {"type": "image"}, {"type": "text", "text": "Is it normal?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.index("Reference 1:") < text.index("Query:") < text.index("Is it normal?")
    image_token = processor.image_token
    assert text.count(image_token) == 2
    # the assistant's turn is opened in the family's words (Gemma 3 calls it "model")
    opened = text.rstrip().lower()
    assert opened.endswith(("assistant:", "assistant", "model", "<|assistant|>", "assistant<|end_header_id|>"))


def test_tokenizer_learns_task_words_as_single_tokens(tiny_models):
    processor = load_processor(tiny_models["qwen2_vl"])
    for word in ("normal", "abnormal"):
        assert len(processor.tokenizer(word, add_special_tokens=False)["input_ids"]) == 1
