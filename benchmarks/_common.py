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
#: five multi-token options, for the option-scoring comparisons
GRADES = Task(question="What is the diabetic retinopathy grade of the query fundus photograph?",
              classes=[f"grade {g} retinopathy" for g in range(5)], healthy_class="grade 0 retinopathy",
              modality="fundus photograph")
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


def requests_with_fresh_references(factory: RequestFactory, rng: np.random.Generator, n: int, k: int,
                                   size: int = 56) -> list[Request]:
    """n queries, each with its own k references (per-query selection)."""
    return [factory.request(random_image(rng, size), [random_image(rng, size) for _ in range(k)]) for _ in range(n)]


def comparative_cost(backend, factory: RequestFactory, n: int, repeats: int, size: int, label: str) -> None:
    """Per-query scoring cost at k = 0, 1, 4 (fresh references per query) against the token-count bound
    ``1 + k * image_tokens / prompt_tokens`` and the prompt's actual token ratio; one line per k."""
    image_token = backend.model.config.image_token_id
    tokens, seconds = {}, {}
    for k in (0, 1, 4):
        requests = requests_with_fresh_references(factory, np.random.default_rng(100 + k), n, k, size)
        encoded = backend.processor(text=[backend.prompt_text(requests[0])], images=[requests[0].images],
                                    return_tensors="pt")
        ids = encoded["input_ids"][0]
        tokens[k] = (len(ids), int((ids == image_token).sum()) // (k + 1))
        backend.score_options(requests[:1])  # warm-up at this shape
        seconds[k], _ = timed(lambda requests=requests: backend.score_options(requests), repeats)
    prompt0, image_tokens = tokens[0]
    print(f"{label} k=0: {prompt0} prompt tokens, {image_tokens} tokens per image, {seconds[0] / n * 1e3:.1f} ms/query")
    for k in (1, 4):
        bound = 1 + k * image_tokens / prompt0
        actual = tokens[k][0] / prompt0
        cost = seconds[k] / seconds[0]
        print(f"{label} k={k}: {tokens[k][0]} prompt tokens ({actual:.2f}x k=0), {seconds[k] / n * 1e3:.1f} ms/query, "
              f"paired/single cost {cost:.2f}x | image-token bound 1+k*image_tokens/prompt_tokens {bound:.2f} "
              f"(cost/bound {cost / bound:.2f}) | all-token ratio {actual:.2f} (cost/ratio {cost / actual:.2f})")
