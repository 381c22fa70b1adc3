"""Comparative prompts: references first, the query last, the question at the end.

The order is a contract: the prefix cache (``backends/prefix_cache.py``) computes the text and the
reference images before the query once and reuses them for every query with the same references,
so everything before the query image must be the same text whatever the query is.
"""

from __future__ import annotations

from pathlib import Path

import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from PIL import Image

import seeinpairs
from seeinpairs.cases import Case
from seeinpairs.prompts import PromptBuilder, Request
from seeinpairs.tasks import Task

TASK = Task(name="cxr", question="Is there an abnormal opacity in the query image?",
            classes=["normal", "pneumonia", "effusion"], healthy_class="normal",
            descriptions={"pneumonia": "patchy consolidation", "normal": "clear lungs"}, modality="chest X-ray")
#: the image marker each family's template writes for an image slot (the prefix cache's split point)
MARKERS = {"qwen2_vl": "<|vision_start|>", "idefics3": "<image>"}
#: the families' chat templates as shipped (read as files: importing the backends would load torch)
TEMPLATES = Path(seeinpairs.__file__).parent / "backends" / "templates"


def case(case_id: str) -> Case:
    return Case(case_id=case_id, images=(f"{case_id}.png",), label="normal")


class RecordingLoader:
    """Stands in for image decoding: a distinct 1x1 image per path, and the paths in load order."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def __call__(self, path: str) -> Image.Image:
        self.loaded.append(path)
        return Image.new("RGB", (1, 1), (len(self.loaded), 0, 0))


def builder(task: Task = TASK) -> tuple[PromptBuilder, RecordingLoader]:
    loader = RecordingLoader()
    return PromptBuilder(task, image_loader=loader), loader


def parts(request: Request) -> list[str]:
    """The user turn's content as text, an image slot written as ``<img>``."""
    return ["<img>" if p["type"] == "image" else p["text"] for p in request.messages[0]["content"]]


def render(family: str, request: Request) -> str:
    """The request through the family's chat template, rendered as transformers renders one."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    return env.from_string((TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")).render(messages=request.messages, add_generation_prompt=True)


def test_references_come_first_each_after_its_label_then_the_query_then_the_question():
    prompts, loader = builder()
    request = prompts.build(case("q"), [case("r1"), case("r2")])
    assert parts(request) == [prompts.instruction_text(2), "Reference 1:", "<img>", "Reference 2:", "<img>",
                              "Query:", "<img>", prompts.question_text()]
    assert request.messages[0]["role"] == "user" and len(request.messages) == 1
    # images travel in slot order: the references in the order given, the query last
    assert loader.loaded == ["r1.png", "r2.png", "q.png"]
    assert request.image_ids == ["r1", "r2", "q"]
    assert request.n_images == 3 and [im.getpixel((0, 0))[0] for im in request.images] == [1, 2, 3]


def test_without_references_the_request_is_the_single_image_question():
    prompts, loader = builder()
    request = prompts.build(case("q"))
    assert parts(request) == ["<img>", prompts.question_text()]
    assert loader.loaded == ["q.png"] and request.image_ids == ["q"]


def test_the_instruction_counts_the_references_and_names_the_healthy_class():
    prompts, _ = builder()
    one, three = prompts.instruction_text(1), prompts.instruction_text(3)
    assert one.startswith("The first 1 image is a reference: chest X-ray of healthy controls (normal).")
    assert three.startswith("The first 3 images are references: chest X-ray of healthy controls (normal).")
    assert "The last image is the query." in three


def test_two_queries_with_the_same_references_share_the_whole_prefix_before_the_query():
    prompts, _ = builder()
    references = [case("r1"), case("r2")]
    first, second = prompts.build(case("q1"), references), prompts.build(case("q2"), references)
    query_slot = parts(first).index("Query:") + 1
    assert parts(first)[:query_slot] == parts(second)[:query_slot]
    assert first.image_ids[:-1] == second.image_ids[:-1] == ["r1", "r2"]
    assert first.image_ids[-1] != second.image_ids[-1]


@pytest.mark.parametrize("family", sorted(MARKERS))
def test_the_rendered_prompt_is_references_then_query_and_its_prefix_is_shared(family):
    """In the prefix cache's families the text before the last image marker is the same for every query
    with the same references, holds every reference's marker, and ends with the query's label."""
    prompts, _ = builder()
    references = [case("r1"), case("r2")]
    first, second = (render(family, prompts.build(case(q), references)) for q in ("q1", "q2"))
    marker = MARKERS[family]
    prefix, _, suffix = first.rpartition(marker)
    assert first.count(marker) == 3 and second.rpartition(marker)[0] == prefix
    assert prefix.index("Reference 1:") < prefix.index("Reference 2:") < prefix.rindex("Query:")
    assert prefix.rstrip().endswith("Query:") and "Reference" not in suffix
    assert prompts.question_text() in suffix


def test_options_are_the_task_classes_in_order_and_a_copy():
    prompts, _ = builder()
    request = prompts.build(case("q"), [case("r1")])
    assert request.options == ["normal", "pneumonia", "effusion"] == prompts.options
    request.options.append("other")
    assert TASK.classes == ["normal", "pneumonia", "effusion"] and prompts.options == TASK.classes


def test_the_question_lists_the_options_and_only_the_given_descriptions_in_class_order():
    prompts, _ = builder()
    assert prompts.question_text().splitlines() == [
        "Is there an abnormal opacity in the query image?",
        "Classes: normal: clear lungs; pneumonia: patchy consolidation.",
        "Options: normal, pneumonia, effusion.",
        "Answer with one option."]
    plain, _ = builder(TASK.model_copy(update={"descriptions": {}}))
    assert not any(line.startswith("Classes:") for line in plain.question_text().splitlines())
