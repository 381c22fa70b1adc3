"""Every registered tiny family builds, loads through the backend and scores one- and two-image requests."""

import json
import math
import shutil

import numpy as np
import pytest
import transformers

from seeinpairs.backends import create_backend
from seeinpairs.backends.chat_layout import labelled_messages, template_keeps_image_order
from seeinpairs.backends.encoding import answer_token_ids
from seeinpairs.backends.hf import HFBackend
from seeinpairs.backends.processors import load_processor
from seeinpairs.backends.tiny import TINY_FAMILIES
from seeinpairs.backends.tiny_families import UNSUPPORTED_FAMILIES
from seeinpairs.backends.resolution import resolution_records
from seeinpairs.cases import Case
from seeinpairs.prompts import PromptBuilder, Request
from seeinpairs.tasks import Task
from shared_helpers import random_image

FAMILIES = TINY_FAMILIES.list_names()
_BACKENDS: dict = {}


def backend(tiny_models, family) -> HFBackend:
    if family not in _BACKENDS:
        _BACKENDS[family] = create_backend({"name": str(tiny_models[family]), "device": "cpu"})
    return _BACKENDS[family]


def requests(seed=0):
    rng = np.random.default_rng(seed)

    def text(t):
        return {"type": "text", "text": t}

    one = Request([{"role": "user", "content": [text("Query:"), {"type": "image"}, text("Is it normal?")]}],
                  [random_image(rng)], ["normal", "abnormal"])
    two = Request([{"role": "user", "content": [text("Reference 1:"), {"type": "image"}, text("Query:"),
                                                {"type": "image"}, text("Is it normal?")]}],
                  [random_image(rng), random_image(rng)], ["normal", "abnormal", "pneumonia opacity"])
    return one, two


def test_the_registry_holds_the_families_and_says_why_others_are_missing():
    assert {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "llava", "llava_onevision", "idefics3", "internvl",
            "glm4v", "mllama"} <= set(FAMILIES)
    assert not set(UNSUPPORTED_FAMILIES) & set(FAMILIES)
    assert all(reason for reason in UNSUPPORTED_FAMILIES.values())


#: the transformers class each unsupported family's reason names as torchvision-only
_TORCHVISION_ONLY = {"mistral3": "PixtralProcessor", "lfm2_vl": "Lfm2VlImageProcessor"}


@pytest.mark.parametrize("family", sorted(UNSUPPORTED_FAMILIES))
def test_each_unsupported_familys_reason_holds_here(family):
    """The reason is checked, not only stated: without torchvision the named class cannot be used."""
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision is installed here")
    except ImportError:
        pass
    class_name = _TORCHVISION_ONLY[family]
    assert class_name in UNSUPPORTED_FAMILIES[family]
    with pytest.raises(ImportError, match="[Tt]orchvision"):
        getattr(transformers, class_name)()


@pytest.mark.parametrize("family", FAMILIES)
def test_family_loads_through_the_backend(tiny_models, family):
    b = backend(tiny_models, family)
    assert b.model.config.model_type.startswith(family.split("_")[0]) and b.tokenizer is not None
    assert b.processor.chat_template and b.processor.image_processor is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_family_scores_one_token_options_from_one_pass(tiny_models, family):
    """Options of one token each are read from the prompt's next-token distribution, equal to the per-option path."""
    b = backend(tiny_models, family)
    one, _ = requests()
    prompt = b.prompt_text(one)
    assert all(len(answer_token_ids(b.tokenizer, prompt, o)) == 1 for o in one.options)
    scores = b.score_options([one])[0]
    assert len(scores) == 2 and all(math.isfinite(v) and v < 0 for v in scores)
    b.single_pass = False
    try:
        reference = b.score_options([one])[0]
    finally:
        b.single_pass = True
    assert np.allclose(reference, scores, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_scores_multi_token_options(tiny_models, family):
    b = backend(tiny_models, family)
    _, two = requests()
    assert len(answer_token_ids(b.tokenizer, b.prompt_text(two), "pneumonia opacity")) > 1
    scores = b.score_options([two])[0]
    assert len(scores) == 3 and all(math.isfinite(v) and v < 0 for v in scores)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompt_scores_equal_the_per_option_path(tiny_models, family):
    b = backend(tiny_models, family)
    one, two = requests()
    scores = b.score_options([one, two])
    b.shared_prompt = False  # the per-option reference path agrees with the shared-prompt path
    try:
        reference = b.score_options([two])[0]
    finally:
        b.shared_prompt = True
    assert np.allclose(reference, scores[1], atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_generates(tiny_models, family):
    b = backend(tiny_models, family)
    one, _ = requests()
    assert len(b.generate([one], max_new_tokens=2)) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_each_label_stands_next_to_its_own_image_in_the_tokens(tiny_models, family):
    b = backend(tiny_models, family)
    _, two = requests()
    encoded = b._encode([b.prompt_text(two)], [two.images], "right")
    ids = encoded["input_ids"][0].tolist()
    image_id = b.tokenizer.convert_tokens_to_ids(b.processor.image_token)
    text = b.tokenizer.decode(ids)
    ref, query, question = text.index("Reference 1:"), text.index("Query:"), text.index("Is it normal?")
    # image tokens lie between "Reference 1:" and "Query:" and between "Query:" and the question, none before
    between = [b.tokenizer.decode(ids[:i]) for i, t in enumerate(ids) if t == image_id]
    assert between, "no image tokens"
    positions = [len(prefix) for prefix in between]
    assert min(positions) > ref
    assert any(ref < p < query for p in positions) and any(query < p < question for p in positions)
    assert max(positions) < question


@pytest.mark.parametrize("family", FAMILIES)
def test_the_prompt_starts_with_at_most_one_bos(tiny_models, family):
    """Families with a BOS token start the prompt with exactly one; families without one have none."""
    b = backend(tiny_models, family)
    one, _ = requests()
    ids = b._encode([b.prompt_text(one)], [one.images], "right")["input_ids"][0].tolist()
    bos = b.tokenizer.bos_token_id
    if bos is None:
        assert b.tokenizer.bos_token is None
    else:
        assert ids[0] == bos and ids.count(bos) == 1


@pytest.mark.parametrize("family", ["gemma3", "mllama"])
def test_families_whose_template_writes_bos_have_a_tokenizer_that_adds_one_too(tiny_models, family):
    """The case the single-BOS rule is for: both the template and the tokenizer would add BOS."""
    b = backend(tiny_models, family)
    assert b.tokenizer("x")["input_ids"][0] == b.tokenizer.bos_token_id
    assert b.prompt_text(requests()[0]).startswith(b.tokenizer.bos_token)


def test_llava_onevision_keeps_its_saved_processor_settings(tiny_models):
    processor = load_processor(tiny_models["llava_onevision"])
    assert processor.num_image_tokens == 16
    assert processor.vision_feature_select_strategy == "full"
    assert processor.vision_aspect_ratio == "anyres_max_9"
    saved = json.loads((tiny_models["llava_onevision"] / "processor_config.json").read_text())
    assert saved["processor_class"] == "LlavaOnevisionProcessor" and "video_processor" not in saved


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision", "qwen3_vl"])
def test_chat_template_saved_in_the_earlier_hub_layout_loads(tiny_models, tmp_path, family):
    """Before transformers 5 the template lived in chat_template.json next to the processor files."""
    folder = tmp_path / family
    shutil.copytree(tiny_models[family], folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    processor = load_processor(folder)
    assert processor.chat_template == template
    assert type(processor.image_processor).__name__.endswith("Pil")


#: families whose real hub chat template renders all of a message's images before its text (llava-hf)
IMAGES_FIRST = {"llava", "llava_onevision"}


def comparative_request(n_references=2, seed=1):
    """A request as the experiments build it: instruction, labelled references, the labelled query, the question."""
    rng = np.random.default_rng(seed)
    task = Task(question="Is the query image normal or abnormal?", classes=["normal", "abnormal"],
                healthy_class="normal")
    images = {f"c{i}": random_image(rng) for i in range(n_references + 1)}
    builder = PromptBuilder(task, image_loader=images.__getitem__)
    cases = [Case(case_id=f"c{i}", images=(f"c{i}",)) for i in range(n_references + 1)]
    return builder.build(cases[-1], cases[:-1])


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tiny_template_orders_images_as_the_family_ships_it(tiny_models, family):
    """The tiny LLaVA templates put a message's images first, as llava-hf's do; the others keep parts in place."""
    processor = load_processor(tiny_models[family])
    assert template_keeps_image_order(processor) == (family not in IMAGES_FIRST)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_label_precedes_its_own_image_with_no_other_image_between(tiny_models, family):
    """On the rendered tokens: "Reference i:" / "Query:" come after the previous image and before their own."""
    b = backend(tiny_models, family)
    request = comparative_request()
    ids = b._encode([b.prompt_text(request)], [request.images], "right")["input_ids"][0].tolist()
    image_id = b.tokenizer.convert_tokens_to_ids(b.processor.image_token)
    runs = [i for i, t in enumerate(ids) if t == image_id and (i == 0 or ids[i - 1] != image_id)]
    ends = [i for i, t in enumerate(ids) if t == image_id and (i + 1 == len(ids) or ids[i + 1] != image_id)]
    assert len(runs) == request.n_images == 3
    decoded = [b.tokenizer.decode(ids[:i]) for i in range(len(ids) + 1)]
    for number, label in enumerate(["Reference 1:", "Reference 2:", "Query:"]):
        label_end = next(i for i, text in enumerate(decoded) if label in text)  # tokens up to the label's end
        assert label_end <= runs[number], f"{label} comes after its image"
        assert number == 0 or ends[number - 1] < label_end - 1, f"{label} is not after the previous image"


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - IMAGES_FIRST))
def test_templates_that_keep_the_order_get_the_messages_unchanged(tiny_models, family):
    """Their prompts (and prefix-cache prefixes) stay what they were: references first, in one turn."""
    processor = load_processor(tiny_models[family])
    request = comparative_request()
    assert labelled_messages(processor, request.messages) is request.messages


def test_llava_onevision_records_the_query_resolution_that_the_processor_uses(tiny_models):
    """One image: anyres tiles (more image tokens for the query); several: base resolution. Recorded per request."""
    b = backend(tiny_models, "llava_onevision")
    paired, single = comparative_request(n_references=1), comparative_request(n_references=0)
    assert single.n_images == 1 and paired.n_images == 2
    image_id = b.processor.image_token_id

    def query_tokens(request):
        ids = b._encode([b.prompt_text(request)], [request.images], "right")["input_ids"][0]
        return int((ids == image_id).sum()) // request.n_images  # the images are all of one size

    assert query_tokens(single) > query_tokens(paired)  # the difference the record is about
    assert resolution_records(b.processor, [single, paired]) == [{"query_resolution": "anyres"},
                                                               {"query_resolution": "base"}]
    assert [s.how for s in b.score([single, paired])] == [{"query_resolution": "anyres"}, {"query_resolution": "base"}]


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"llava_onevision"}))
def test_families_whose_resolution_does_not_depend_on_the_image_count_record_nothing(tiny_models, family):
    processor = load_processor(tiny_models[family])
    assert resolution_records(processor, [comparative_request(0), comparative_request(1)]) == []
