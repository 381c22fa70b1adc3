"""Load a VLM processor that works without torchvision.

``AutoProcessor`` in transformers 5 can silently return only the tokenizer, or
fail on the video processor, when torchvision is absent. Image-only processors
for those families are assembled from the saved PIL image processor and
tokenizer, so a checkpoint (hub id or local folder) always loads with the
preprocessing and chat template it was saved with.
"""

from __future__ import annotations

from pathlib import Path

import transformers
from transformers import AutoConfig, AutoTokenizer, ProcessorMixin

from ..errors import BackendError


class ImageOnlyQwen2VLProcessor(transformers.Qwen2VLProcessor):
    """Qwen2-VL / Qwen2.5-VL processor without the video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class ImageOnlyLlavaOnevisionProcessor(transformers.LlavaOnevisionProcessor):
    """LLaVA-OneVision processor without the video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, image_token="<image>", video_token="<video>", **kwargs):
        self.num_image_tokens = num_image_tokens
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.video_token = getattr(tokenizer, "video_token", None) or video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def _pil_image_processor(name_or_path: str, class_name: str, **kwargs):
    cls = getattr(transformers, class_name)
    return cls.from_pretrained(name_or_path, **kwargs)


def _image_only(name_or_path: str, model_type: str, **kwargs):
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    chat_template = getattr(tokenizer, "chat_template", None)
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        image_processor = _pil_image_processor(name_or_path, "Qwen2VLImageProcessorPil", **kwargs)
        return ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=chat_template)
    if model_type == "llava_onevision":
        image_processor = _pil_image_processor(name_or_path, "LlavaOnevisionImageProcessorPil", **kwargs)
        return ImageOnlyLlavaOnevisionProcessor(image_processor, tokenizer, chat_template=chat_template)
    if model_type in ("idefics3", "smolvlm"):
        image_processor = _pil_image_processor(name_or_path, "Idefics3ImageProcessorPil", **kwargs)
        processor_cls = transformers.Idefics3Processor if model_type == "idefics3" else transformers.SmolVLMProcessor
        return processor_cls(image_processor, tokenizer, chat_template=chat_template)
    return None


def load_processor(name_or_path: str | Path, **kwargs):
    """The processor of a checkpoint, with an image processor and a chat template."""
    name_or_path = str(name_or_path)
    try:
        model_type = AutoConfig.from_pretrained(name_or_path, **kwargs).model_type
    except (OSError, ValueError) as exc:
        raise BackendError(f"{name_or_path}: cannot read model config ({str(exc).splitlines()[0]})") from None
    processor = None
    try:
        processor = transformers.AutoProcessor.from_pretrained(name_or_path, **kwargs)
    except (AttributeError, ImportError, OSError, ValueError, TypeError):
        processor = None  # torchvision-only parts; assembled below from the PIL classes
    if processor is None or getattr(processor, "image_processor", None) is None or not _is_pil(processor):
        assembled = _image_only(name_or_path, model_type, **kwargs)
        if assembled is not None:
            processor = assembled
    if processor is None or getattr(processor, "image_processor", None) is None:
        raise BackendError(f"{name_or_path}: no image processor could be loaded for model type '{model_type}'")
    if not getattr(processor, "chat_template", None):
        raise BackendError(f"{name_or_path}: the processor has no chat template")
    return processor


def _is_pil(processor) -> bool:
    """True when the image processor does not need torchvision (or torchvision is present)."""
    try:
        import torchvision  # noqa: F401

        return True
    except Exception:
        return type(processor.image_processor).__name__.endswith("Pil")
