"""Comparative prompts: references first, the query last, the question at the end.

Putting instruction and references before the query lets a fixed reference set
share its prefix across queries (prefix/KV caching), and matches how clinicians
read: "here is normal; now this one". Image slots in the chat messages are
``{"type": "image"}`` placeholders; the images themselves travel in
``Request.images`` in slot order, which is what HF processors expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from PIL import Image

from .cases import Case
from .imaging import load_image
from .tasks import Task

#: part of every run key; v2: under chat templates that put images first (llava-hf) each image gets
#: its own turn, so stored runs rendered the older way are not reused
PROMPT_VERSION = "comparative-v2"


@dataclass
class Request:
    """One model call: chat messages with image slots, the images, the answer options."""

    messages: list[dict]
    images: list[Image.Image]
    options: list[str]
    image_ids: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.images)


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class PromptBuilder:
    """Builds single-image and comparative requests for a task."""

    def __init__(self, task: Task, image_loader: Callable[[str], Image.Image] = load_image) -> None:
        self.task = task
        self.load = image_loader

    @property
    def options(self) -> list[str]:
        return list(self.task.classes)

    def question_text(self) -> str:
        task = self.task
        lines = [task.question.strip()]
        if task.descriptions:
            lines.append("Classes: " + "; ".join(f"{c}: {task.descriptions[c]}" for c in task.classes if c in task.descriptions) + ".")
        lines.append("Options: " + ", ".join(task.classes) + ".")
        lines.append("Answer with one option.")
        return "\n".join(lines)

    def instruction_text(self, n_references: int) -> str:
        task = self.task
        return (
            f"The first {_plural(n_references, 'image')} {'is a reference' if n_references == 1 else 'are references'}: "
            f"{task.modality} of healthy controls ({task.healthy_class}). The last image is the query. "
            "Compare the query with the references and look for what differs from normal."
        )

    def build(self, query: Case, references: Sequence[Case] = ()) -> Request:
        """A request for ``query``; with references it is comparative, without it is single-image."""
        content: list[dict] = []
        images: list[Image.Image] = []
        image_ids: list[str] = []
        if references:
            content.append(_text(self.instruction_text(len(references))))
            for number, reference in enumerate(references, start=1):
                content.append(_text(f"Reference {number}:"))
                content.append({"type": "image"})
                images.append(self.load(reference.image))
                image_ids.append(reference.case_id)
            content.append(_text("Query:"))
        content.append({"type": "image"})
        images.append(self.load(query.image))
        image_ids.append(query.case_id)
        content.append(_text(self.question_text()))
        messages = [{"role": "user", "content": content}]
        return Request(messages=messages, images=images, options=self.options, image_ids=image_ids)
