"""Tiny builders of the VLM families beyond Qwen2-VL and Idefics3.

Each builder makes a small random model of the real architecture, a tokenizer
with the family's own special tokens, the family's PIL image processor and
processor class (without a video processor, :func:`.processors.image_only_class`),
and a chat template written in the family's documented prompt format
(``templates/<family>.jinja``). Families that cannot be built or run without
torchvision are listed in :data:`UNSUPPORTED_FAMILIES` with the reason.
"""

from __future__ import annotations

import torch
import transformers

from .processors import image_only_class
from .tiny import TinySpec, chat_template, merged_patch_settings, train_tokenizer

#: families that are not registered, with the reason (shown by ``seeinpairs list``)
UNSUPPORTED_FAMILIES: dict[str, str] = {
    "mistral3": "PixtralProcessor is declared torchvision-only in transformers 5.x, so no processor builds without "
                "torchvision",
    "lfm2_vl": "Lfm2VlImageProcessor is declared torchvision-only in transformers 5.x (no PIL image processor), "
               "so no processor builds without torchvision",
}


def _text_config(spec: TinySpec, tokenizer, ids: dict, eos: str, pad: str, **extra) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=spec.text_width, intermediate_size=spec.intermediate,
                num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
                num_key_value_heads=spec.text_kv_heads, max_position_embeddings=8192,
                eos_token_id=ids[eos], pad_token_id=ids[pad], **extra)


def _tokens(specials: list[str], texts: list[str], spec: TinySpec, eos: str, pad: str, **kwargs):
    tokenizer = train_tokenizer(specials, texts, spec.vocab_size, eos_token=eos, pad_token=pad, **kwargs)
    return tokenizer, {t: tokenizer.convert_tokens_to_ids(t) for t in specials}


def _mrope(spec: TinySpec, rotary_fraction: float = 1.0) -> list[int]:
    # (temporal, height, width) sections sum to the rotary half of head_dim
    half = int(spec.text_width // spec.text_heads * rotary_fraction) // 2
    return [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]


_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def build_qwen2_5_vl(spec: TinySpec, texts: list[str]):
    tokenizer, ids = _tokens(_QWEN_SPECIALS, texts, spec, "<|im_end|>", "<|endoftext|>")
    config = transformers.Qwen2_5_VLConfig(
        text_config=_text_config(spec, tokenizer, ids, "<|im_end|>", "<|endoftext|>", bos_token_id=None,
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": _mrope(spec)}),
        vision_config=dict(depth=spec.vision_layers, hidden_size=spec.vision_width, out_hidden_size=spec.text_width,
                           intermediate_size=spec.vision_width * 2, num_heads=spec.vision_heads, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    image_processor = transformers.Qwen2VLImageProcessorPil(**merged_patch_settings(spec))
    processor = image_only_class(transformers.Qwen2_5_VLProcessor)(
        image_processor, tokenizer, chat_template=chat_template("qwen2_5_vl"))
    return model, processor


def build_qwen3_vl(spec: TinySpec, texts: list[str]):
    tokenizer, ids = _tokens(_QWEN_SPECIALS, texts, spec, "<|im_end|>", "<|endoftext|>")
    config = transformers.Qwen3VLConfig(
        text_config=_text_config(spec, tokenizer, ids, "<|im_end|>", "<|endoftext|>", bos_token_id=None,
                                 head_dim=spec.text_width // spec.text_heads,
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": _mrope(spec), "mrope_interleaved": True}),
        vision_config=dict(depth=spec.vision_layers, hidden_size=spec.vision_width, out_hidden_size=spec.text_width,
                           intermediate_size=spec.vision_width * 2, num_heads=spec.vision_heads, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    model = transformers.Qwen3VLForConditionalGeneration(config)
    image_processor = transformers.Qwen2VLImageProcessorPil(
        size={"shortest_edge": 64 ** 2, "longest_edge": 96 ** 2}, patch_size=16, merge_size=2,
        temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = image_only_class(transformers.Qwen3VLProcessor)(
        image_processor, tokenizer, chat_template=chat_template("qwen3_vl"))
    return model, processor


def build_gemma3(spec: TinySpec, texts: list[str]):
    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                "<end_of_image>", "<image_soft_token>"]
    tokenizer, ids = _tokens(specials, texts, spec, "<eos>", "<pad>", bos_token="<bos>", extra_special_tokens={
        "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"})
    image_size, patch, tokens_per_image = 56, 14, 4
    config = transformers.Gemma3Config(
        text_config=_text_config(spec, tokenizer, ids, "<end_of_turn>", "<pad>", bos_token_id=ids["<bos>"],
                                 head_dim=spec.text_width // spec.text_heads, sliding_window=64,
                                 layer_types=["sliding_attention"] + ["full_attention"] * (spec.text_layers - 1)),
        vision_config=dict(hidden_size=spec.vision_width, intermediate_size=spec.vision_width * 2,
                           num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                           image_size=image_size, patch_size=patch),
        mm_tokens_per_image=tokens_per_image, image_token_id=ids["<image_soft_token>"],
        boi_token_id=ids["<start_of_image>"], eoi_token_id=ids["<end_of_image>"],
    )
    model = transformers.Gemma3ForConditionalGeneration(config)
    # transformers initialises the image projection to zeros, which would make every image invisible to the
    # random model (zero image features, zero pixel gradients): a random projection lets images matter
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight,
                          std=config.text_config.initializer_range)
    image_processor = transformers.Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size},
                                                           do_pan_and_scan=False)
    processor = transformers.Gemma3Processor(image_processor, tokenizer, image_seq_length=tokens_per_image,
                                             chat_template=chat_template("gemma3"))
    return model, processor


def build_llava(spec: TinySpec, texts: list[str]):
    specials = ["<unk>", "<s>", "</s>", "<image>"]
    tokenizer, ids = _tokens(specials, texts, spec, "</s>", "<unk>", bos_token="<s>")
    image_size, patch = 56, 14
    config = transformers.LlavaConfig(
        text_config=dict(model_type="llama", **_text_config(spec, tokenizer, ids, "</s>", "<unk>",
                                                             bos_token_id=ids["<s>"])),
        vision_config=dict(model_type="clip_vision_model", hidden_size=spec.vision_width,
                           intermediate_size=spec.vision_width * 2, num_hidden_layers=spec.vision_layers,
                           num_attention_heads=spec.vision_heads, image_size=image_size, patch_size=patch,
                           projection_dim=spec.vision_width),
        image_token_id=ids["<image>"], vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    model = transformers.LlavaForConditionalGeneration(config)
    image_processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                                         crop_size={"height": image_size, "width": image_size})
    processor = transformers.LlavaProcessor(image_processor, tokenizer, patch_size=patch,
                                            vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                            chat_template=chat_template("llava"))
    return model, processor


def build_llava_onevision(spec: TinySpec, texts: list[str]):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    tokenizer, ids = _tokens(specials, texts, spec, "<|im_end|>", "<|endoftext|>")
    image_size, patch = 56, 14
    config = transformers.LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", **_text_config(spec, tokenizer, ids, "<|im_end|>", "<|endoftext|>",
                                                             bos_token_id=None)),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=spec.vision_width,
                           intermediate_size=spec.vision_width * 2, num_hidden_layers=spec.vision_layers,
                           num_attention_heads=spec.vision_heads, image_size=image_size, patch_size=patch),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], vision_feature_layer=-1,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=[[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]],
    )
    model = transformers.LlavaOnevisionForConditionalGeneration(config)
    image_processor = transformers.LlavaOnevisionImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_grid_pinpoints=config.image_grid_pinpoints)
    processor = image_only_class(transformers.LlavaOnevisionProcessor)(
        image_processor, tokenizer, chat_template=chat_template("llava_onevision"),
        num_image_tokens=(image_size // patch) ** 2, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9")
    return model, processor


def build_internvl(spec: TinySpec, texts: list[str]):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tokenizer, ids = _tokens(specials, texts, spec, "<|im_end|>", "<|endoftext|>", extra_special_tokens={
        "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>"})
    image_size, patch = 56, 14
    config = transformers.InternVLConfig(
        text_config=dict(model_type="qwen2", **_text_config(spec, tokenizer, ids, "<|im_end|>", "<|endoftext|>",
                                                             bos_token_id=None)),
        vision_config=dict(hidden_size=spec.vision_width, intermediate_size=spec.vision_width * 2,
                           num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                           image_size=[image_size, image_size], patch_size=[patch, patch]),
        image_token_id=ids["<IMG_CONTEXT>"], downsample_ratio=0.5, vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = transformers.InternVLForConditionalGeneration(config)
    image_processor = transformers.GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size},
                                                            crop_to_patches=False)
    processor = image_only_class(transformers.InternVLProcessor)(
        image_processor, tokenizer, chat_template=chat_template("internvl"),
        image_seq_length=(image_size // patch // 2) ** 2)
    return model, processor


def build_glm4v(spec: TinySpec, texts: list[str]):
    specials = ["<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
                "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>",
                "<|video|>"]
    tokenizer, ids = _tokens(specials, texts, spec, "<|user|>", "<|endoftext|>")
    config = transformers.Glm4vConfig(
        text_config=_text_config(spec, tokenizer, ids, "<|user|>", "<|endoftext|>",
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": _mrope(spec, 0.5), "partial_rotary_factor": 0.5}),
        vision_config=dict(depth=spec.vision_layers, hidden_size=spec.vision_width, out_hidden_size=spec.text_width,
                           intermediate_size=spec.text_width, num_heads=spec.vision_heads, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, image_size=56),
        image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
    )
    model = transformers.Glm4vForConditionalGeneration(config)
    image_processor = transformers.Glm4vImageProcessorPil(**merged_patch_settings(spec))
    processor = image_only_class(transformers.Glm4vProcessor)(
        image_processor, tokenizer, chat_template=chat_template("glm4v"))
    return model, processor


def build_mllama(spec: TinySpec, texts: list[str]):
    specials = ["<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|image|>", "<|python_tag|>"]
    tokenizer, ids = _tokens(specials, texts, spec, "<|eot_id|>", "<|finetune_right_pad_id|>",
                             bos_token="<|begin_of_text|>")
    image_size = 56
    config = transformers.MllamaConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=spec.text_width, intermediate_size=spec.intermediate,
                         num_hidden_layers=spec.text_layers + 1, num_attention_heads=spec.text_heads,
                         num_key_value_heads=spec.text_kv_heads, cross_attention_layers=[1],
                         max_position_embeddings=8192, bos_token_id=ids["<|begin_of_text|>"],
                         eos_token_id=ids["<|eot_id|>"], pad_token_id=ids["<|finetune_right_pad_id|>"]),
        vision_config=dict(hidden_size=spec.vision_width, intermediate_size=spec.vision_width * 2,
                           num_hidden_layers=spec.vision_layers, num_global_layers=1,
                           num_attention_heads=spec.vision_heads, image_size=image_size, patch_size=14,
                           max_num_tiles=2, intermediate_layers_indices=[0], vision_output_dim=spec.vision_width * 2,
                           supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]]),
        image_token_index=ids["<|image|>"],
    )
    model = transformers.MllamaForConditionalGeneration(config)
    image_processor = transformers.MllamaImageProcessorPil(size={"height": image_size, "width": image_size},
                                                           max_image_tiles=2)
    processor = transformers.MllamaProcessor(image_processor, tokenizer, chat_template=chat_template("mllama"))
    return model, processor


def build_smolvlm(spec: TinySpec, texts: list[str]):
    """SmolVLM2: the Idefics3 architecture with SmolVLM's own processor (which also reads video settings)."""
    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                "<image>", "<global-img>", "<video>", *grid]
    tokenizer, ids = _tokens(specials, texts, spec, "<end_of_utterance>", "<|im_end|>", bos_token="<|im_start|>",
                             unk_token="<|endoftext|>", extra_special_tokens={
                                 "fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                                 "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>",
                                 "video_token": "<video>"})
    patch, scale, image_size = 14, 2, spec.image_size
    config = transformers.SmolVLMConfig(
        text_config=dict(model_type="llama", **_text_config(spec, tokenizer, ids, "<end_of_utterance>", "<|im_end|>",
                                                             bos_token_id=ids["<|im_start|>"])),
        vision_config=dict(hidden_size=spec.vision_width, intermediate_size=spec.vision_width * 2,
                           num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                           image_size=image_size, patch_size=patch),
        scale_factor=scale, image_token_id=ids["<image>"], pad_token_id=ids["<|im_end|>"],
    )
    model = transformers.SmolVLMForConditionalGeneration(config)
    image_processor = transformers.SmolVLMImageProcessorPil(
        size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}, do_image_splitting=False)
    processor = image_only_class(transformers.SmolVLMProcessor)(
        image_processor, tokenizer, chat_template=chat_template("smolvlm"),
        image_seq_len=(image_size // patch) ** 2 // scale ** 2, video_settings={"num_frames": 64, "fps": 1})
    return model, processor
