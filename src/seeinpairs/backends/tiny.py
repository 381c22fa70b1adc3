"""Tiny, randomly initialised VLMs of real architectures, built offline.

Tests and the embedded default need real ``transformers`` code paths without
downloading weights. Each builder creates a small model of a real family
(Qwen2-VL, Idefics3/SmolVLM), a byte-level BPE tokenizer trained locally on
prompt vocabulary, and the family's processor and chat template, then saves
them together with ``save_pretrained`` so the folder reloads like any hub
checkpoint (``create_backend({"name": folder})``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ..atomic import atomic_dir
from ..errors import ConfigError
from ..registry import Registry
from .processors import ImageOnlyQwen2VLProcessor

#: words that prompts, class names and clinical answers are made of; the tokenizer learns them as units
BASE_CORPUS = """
The first image is a reference. The first images are references. The last image is the query.
Compare the query with the references and look for what differs from normal. Reference Query
medical image chest x-ray radiograph fundus photograph dermoscopy CT MR scan slice of healthy controls
Is the query image normal or abnormal? Which diagnosis fits this image? Options: Answer with one option.
Classes: normal abnormal healthy pneumonia lesion nodule effusion opacity benign malignant melanoma nevus
no finding diabetic retinopathy grade 0 1 2 3 4 mild moderate severe proliferative yes no left right
A B C D E F G the a an is are of with and or in on this that which what where first second third last
patient age sex male female site center hospital scanner view PA AP lateral temporal comparison change
improved worsened stable larger smaller new resolved difference between set images shows appears shows
"""


def train_tokenizer(special_tokens: list[str], texts: Iterable[str] = (), vocab_size: int = 1000,
                    eos_token: str = "<|im_end|>", pad_token: str = "<|endoftext|>",
                    **tokenizer_kwargs) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the base corpus plus ``texts`` (class names, questions).

    ``tokenizer_kwargs`` (e.g. ``bos_token``, ``extra_special_tokens`` naming a family's image tokens)
    go to :class:`PreTrainedTokenizerFast`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bos = tokenizer_kwargs.get("bos_token")
    corpus = [BASE_CORPUS] * 4 + [t for t in texts for _ in range(4)]
    tokenizer.train_from_iterator(corpus, trainer)
    if bos:  # like the family's real tokenizer, which starts every encoded text with BOS
        bos_id = tokenizer.token_to_id(bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=eos_token,
        pad_token=pad_token,
        additional_special_tokens=[t for t in special_tokens if t not in (eos_token, pad_token)],
        **tokenizer_kwargs,
    )


def chat_template(family: str) -> str:
    return resources.files("seeinpairs.backends").joinpath(f"templates/{family}.jinja").read_text()


@dataclass
class TinySpec:
    """Sizes of a tiny model. The defaults train in about a minute on 2 CPU cores."""

    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 2
    intermediate: int = 256
    image_size: int = 56
    max_image_size: int = 84
    vocab_size: int = 1000
    extra: dict = field(default_factory=dict)


TinyBuilder = Callable[[TinySpec, list[str]], tuple[torch.nn.Module, object]]
TINY_FAMILIES: Registry[TinyBuilder] = Registry("tiny model family")
#: the families beyond Qwen2-VL and Idefics3, by architecture: lazy entries of .tiny_families
_OTHER_FAMILIES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "internvl": "InternVLForConditionalGeneration",
    "glm4v": "Glm4vForConditionalGeneration",
    "mllama": "MllamaForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
}
for _family, _architecture in _OTHER_FAMILIES.items():
    TINY_FAMILIES.register(_family, f"seeinpairs.backends.tiny_families:build_{_family}",
                           description=f"a tiny {_architecture}")


def merged_patch_settings(spec: TinySpec) -> dict:
    """Image-processor settings of the families that merge 2x2 patches of 14 px over two frames
    (Qwen2-VL, Qwen2.5-VL, GLM-4V): a pixel budget between ``image_size`` and ``max_image_size`` squared."""
    return {"size": {"shortest_edge": spec.image_size ** 2, "longest_edge": spec.max_image_size ** 2},
            "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}


@TINY_FAMILIES.register("qwen2_vl", description="a tiny Qwen2VLForConditionalGeneration")
def _build_qwen2_vl(spec: TinySpec, texts: list[str]):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tokenizer = train_tokenizer(specials, texts, spec.vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    head_dim = spec.text_width // spec.text_heads
    half = head_dim // 2  # mrope sections (temporal, height, width) must sum to head_dim / 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    config = transformers.Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=spec.text_width, intermediate_size=spec.intermediate,
            num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
            num_key_value_heads=spec.text_kv_heads, max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=spec.vision_layers, embed_dim=spec.vision_width, hidden_size=spec.text_width,
            num_heads=spec.vision_heads, mlp_ratio=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    model = transformers.Qwen2VLForConditionalGeneration(config)
    image_processor = transformers.Qwen2VLImageProcessorPil(**merged_patch_settings(spec))
    processor = ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=chat_template("qwen2_vl"))
    return model, processor


@TINY_FAMILIES.register("idefics3", description="a tiny Idefics3ForConditionalGeneration")
def _build_idefics3(spec: TinySpec, texts: list[str]):
    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    specials = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                "<image>", "<global-img>", *grid]
    tokenizer = train_tokenizer(specials, texts, spec.vocab_size, eos_token="<end_of_utterance>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    patch, scale = 14, 2
    image_size = spec.image_size
    config = transformers.Idefics3Config(
        text_config=dict(
            model_type="llama", vocab_size=len(tokenizer), hidden_size=spec.text_width,
            intermediate_size=spec.intermediate, num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.text_heads, num_key_value_heads=spec.text_kv_heads,
            max_position_embeddings=8192, bos_token_id=None, eos_token_id=ids["<end_of_utterance>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            hidden_size=spec.vision_width, intermediate_size=spec.vision_width * 2,
            num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
            image_size=image_size, patch_size=patch,
        ),
        scale_factor=scale, image_token_id=ids["<image>"], pad_token_id=ids["<|endoftext|>"],
    )
    model = transformers.Idefics3ForConditionalGeneration(config)
    image_processor = transformers.Idefics3ImageProcessorPil(
        size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}, do_image_splitting=False,
    )
    seq_len = int(((image_size // patch) ** 2) / (scale ** 2))
    processor = transformers.Idefics3Processor(image_processor, tokenizer, image_seq_len=seq_len,
                                               chat_template=chat_template("idefics3"))
    return model, processor


#: written last into a tiny model's folder; its presence means the build finished
TINY_MARKER = "seeinpairs_tiny.json"


def build_tiny_vlm(family: str, out_dir: str | Path, texts: Iterable[str] = (), seed: int = 0,
                   spec: TinySpec | None = None, marker: dict | None = None) -> Path:
    """Build, randomly initialise and save a tiny VLM of ``family``; returns the folder.

    The model is saved into a temporary folder that replaces ``out_dir`` only once
    complete, so a killed build leaves no half-written checkpoint that a later run
    would take for a finished one. ``marker`` (default: family, seed and sizes) is
    written as :data:`TINY_MARKER`, which callers compare to decide whether to rebuild.
    """
    spec = spec or TinySpec()
    builder = TINY_FAMILIES.get(family)
    _check_replaceable(Path(out_dir))
    torch.manual_seed(seed)
    model, processor = builder(spec, list(texts))
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / TINY_MARKER).write_text(json.dumps(marker or tiny_marker(family, seed, spec), indent=2))
    return out


#: what ``save_pretrained`` writes; a folder of only these (and config.json) is a half-written build
_CHECKPOINT_SUFFIXES = {".json", ".safetensors", ".bin", ".jinja", ".txt", ".model"}


def _check_replaceable(out: Path) -> None:
    """Refuse to replace anything but a new or empty folder or an earlier (possibly half-written) build.

    The finished build replaces ``out`` as a whole, so a mistyped output folder
    (the project root, a data folder) must not be taken for an old model.
    """
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose a new or empty folder for the tiny model")
    entries = list(out.iterdir())
    if not entries or (out / TINY_MARKER).is_file():
        return
    if (out / "config.json").is_file() and all(e.is_file() and e.suffix in _CHECKPOINT_SUFFIXES for e in entries):
        return  # left by a build that was killed before this rule existed
    raise ConfigError(f"{out}: exists and is not a tiny model folder (no {TINY_MARKER}); "
                      f"choose a new or empty folder, the build replaces the whole folder")


def tiny_marker(family: str, seed: int, spec: TinySpec | None = None) -> dict:
    """What :func:`build_tiny_vlm` records about a build by default."""
    return {"family": family, "seed": seed, **asdict(spec or TinySpec())}


def built_tiny_vlm(folder: str | Path, marker: dict | None = None) -> bool:
    """Whether ``folder`` holds a finished tiny build (with ``marker``, if given)."""
    path = Path(folder) / TINY_MARKER
    if not path.is_file():
        return False
    if marker is None:
        return True
    try:
        return json.loads(path.read_text()) == json.loads(json.dumps(marker))
    except (OSError, ValueError):
        return False


def list_tiny_families() -> list[str]:
    return TINY_FAMILIES.list_names()

