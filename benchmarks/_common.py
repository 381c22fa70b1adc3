"""Shared pieces of the benchmarks: a tiny offline model, random images, comparative requests
built by the project's own PromptBuilder (so timed prompts have the real layout), and timing."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from seeinpairs.backends.tiny import TinySpec, build_tiny_vlm  # noqa: E402
from seeinpairs.cases import Case  # noqa: E402
from seeinpairs.prompts import PromptBuilder, Request  # noqa: E402
from seeinpairs.tasks import Task  # noqa: E402

TASK = Task(question="Is there an abnormal opacity in the query image?", classes=["normal", "abnormal"],
            healthy_class="normal", modality="chest x-ray")
TEXTS = [*TASK.classes, TASK.question]


def tiny_model(family: str = "qwen2_vl", folder: str | Path | None = None, max_image_size: int | None = None) -> Path:
    """Build (once per call) a tiny model of ``family`` in ``folder`` or a temporary folder; ``max_image_size``
    raises the processor's pixel cap (more tokens per image)."""
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="seeinpairs-bench-")) / family
    spec = TinySpec(max_image_size=max_image_size) if max_image_size else None
    return build_tiny_vlm(family, folder, texts=TEXTS, seed=0, spec=spec)


def random_image(rng: np.random.Generator, size: int = 56) -> Image.Image:
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


class RequestFactory:
    """Comparative requests over in-memory images, laid out by :class:`PromptBuilder`."""

    def __init__(self, task: Task = TASK) -> None:
        self.images: dict[str, Image.Image] = {}
        self.builder = PromptBuilder(task, image_loader=self.images.__getitem__)

    def case(self, image: Image.Image) -> Case:
        key = f"mem-{len(self.images)}"
        self.images[key] = image
        return Case(case_id=key, images=(key,))

    def request(self, query: Image.Image, references: Sequence[Image.Image] = ()) -> Request:
        return self.builder.build(self.case(query), [self.case(r) for r in references])


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall time over ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
