"""Load a VLM processor that works without torchvision, whatever the family.

``AutoProcessor`` in transformers 5 can silently return only the tokenizer, or
fail on the video processor, when torchvision is absent. The processor is then
assembled from what the checkpoint saved, with no list of families: the
processor class and its settings (``processor_config.json``, else the class the
preprocessor or tokenizer files name, else the model type's default), the PIL
image processor that ``AutoImageProcessor`` picks, the tokenizer, and the chat
template from the tokenizer or from the processor files (both hub layouts). A
video processor is replaced by a stand-in (:class:`NoVideoProcessor`): requests
carry images only.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, ProcessorMixin

from ..errors import BackendError


class ImageOnlyQwen2VLProcessor(transformers.Qwen2VLProcessor):
    """Qwen2-VL / Qwen2.5-VL processor without the video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class NoVideoProcessor:
    """Stands in for a checkpoint's video processor, which needs torchvision: seeinpairs sends images only.

    It carries the saved frame settings that some processors read while rendering a
    chat prompt (SmolVLM reads ``num_frames`` and ``fps``) and refuses videos.
    """

    def __init__(self, settings: dict | None = None) -> None:
        settings = settings or {}
        self.num_frames = settings.get("num_frames", 64)
        self.fps = settings.get("fps", 1)
        self.merge_size = settings.get("merge_size", 2)
        self.temporal_patch_size = settings.get("temporal_patch_size", 2)

    def __call__(self, *args, **kwargs):
        raise BackendError("videos are not supported (the video processor needs torchvision)")


_IMAGE_ONLY: dict[type, type] = {}


def image_only_class(cls: type) -> type:
    """``cls`` without its video processor: built from an image processor and a tokenizer only.

    The instance gets a :class:`NoVideoProcessor` stand-in, and saves as ``cls`` (its
    ``processor_class``), so the folder also loads with stock transformers.
    """
    if "video_processor" not in cls.get_attributes():
        return cls
    if cls not in _IMAGE_ONLY:
        attributes = [a for a in cls.get_attributes() if a != "video_processor"]

        def get_attributes(klass):
            return list(attributes)

        def init(self, image_processor=None, tokenizer=None, chat_template=None, video_settings=None, **settings):
            # transformers' __init__ passes the video processor on positionally, past the attributes: dropped
            cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **settings)
            self.video_processor = NoVideoProcessor(video_settings)

        def to_dict(self):
            output = cls.to_dict(self)
            output.pop("video_processor", None)
            output.pop("video_settings", None)
            output["processor_class"] = cls.__name__
            return output

        init.__signature__ = inspect.signature(cls.__init__)  # what to_dict saves: the class's own settings
        _IMAGE_ONLY[cls] = type(f"ImageOnly{cls.__name__}", (cls,), {
            "__init__": init, "get_attributes": classmethod(get_attributes), "to_dict": to_dict,
            "__doc__": f"{cls.__name__} for images only (no video processor, which needs torchvision).",
            "__module__": __name__})
    return _IMAGE_ONLY[cls]


#: hub arguments that file look-ups take (``trust_remote_code`` goes to the Auto classes only)
_FILE_KWARGS = ("revision", "cache_dir", "local_files_only", "token")


def _saved_json(name_or_path: str, filename: str, **kwargs) -> dict:
    """A JSON file of the checkpoint (folder or hub id), or {} when it has none."""
    text = _saved_text(name_or_path, filename, **kwargs)
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _saved_text(name_or_path: str, filename: str, **kwargs) -> str | None:
    from transformers.utils import cached_file

    file_kwargs = {k: v for k, v in kwargs.items() if k in _FILE_KWARGS}
    try:
        path = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **file_kwargs)
    except (OSError, ValueError):
        return None
    return Path(path).read_text() if path else None


def saved_chat_template(name_or_path: str, **kwargs) -> str | None:
    """The chat template saved with the processor files: ``chat_template.jinja`` (transformers 5),
    ``chat_template.json`` or a ``chat_template`` entry of ``processor_config.json`` (earlier hub layout)."""
    text = _saved_text(name_or_path, "chat_template.jinja", **kwargs)
    if text:
        return text
    for filename in ("chat_template.json", "processor_config.json"):
        template = _saved_json(name_or_path, filename, **kwargs).get("chat_template")
        if isinstance(template, str) and template:
            return template
    return None


def processor_class_name(name_or_path: str, model_type: str, **kwargs) -> str | None:
    """The processor class the checkpoint was saved with, else its model type's default."""
    for filename in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        name = _saved_json(name_or_path, filename, **kwargs).get("processor_class")
        if isinstance(name, str) and name:
            return name.removeprefix("ImageOnly")
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return PROCESSOR_MAPPING_NAMES.get(model_type)


def assemble_processor(name_or_path: str, model_type: str, **kwargs):
    """The checkpoint's processor class with its saved settings, built from the PIL image processor,
    the tokenizer and the saved chat template, without a video processor."""
    class_name = processor_class_name(name_or_path, model_type, **kwargs)
    if class_name is None:
        return None
    try:
        cls = getattr(transformers, class_name)
        cls.get_attributes()  # torchvision-only classes are placeholders that raise here
    except (AttributeError, ImportError) as exc:
        reason = "needs torchvision" if isinstance(exc, ImportError) else "is not in this transformers version"
        raise BackendError(f"{name_or_path}: processor class {class_name} {reason}") from None
    attributes = cls.get_attributes()
    if "image_processor" not in attributes or "tokenizer" not in attributes:
        return None
    saved = _saved_json(name_or_path, "processor_config.json", **kwargs)
    parameters = inspect.signature(cls.__init__).parameters
    settings = {k: v for k, v in saved.items()
                if k in parameters and k not in attributes and k not in ("self", "chat_template", "kwargs")}
    image_processor = AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    chat_template = getattr(tokenizer, "chat_template", None) or saved_chat_template(name_or_path, **kwargs)
    image_only = image_only_class(cls)
    if image_only is not cls:
        video = saved.get("video_processor") or _saved_json(name_or_path, "video_preprocessor_config.json", **kwargs)
        settings["video_settings"] = video if isinstance(video, dict) else {}
    return image_only(image_processor, tokenizer, chat_template=chat_template, **settings)


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
        try:
            assembled = assemble_processor(name_or_path, model_type, **kwargs)
        except (AttributeError, ImportError, OSError, ValueError, TypeError, KeyError) as exc:  # parts that do not fit
            raise BackendError(f"{name_or_path}: cannot assemble the processor for model type '{model_type}' "
                               f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if assembled is not None:
            processor = assembled
    if processor is not None and not getattr(processor, "chat_template", None):
        processor.chat_template = saved_chat_template(name_or_path, **kwargs)
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
