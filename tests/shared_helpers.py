"""Plain helpers shared by test modules (import them from here: every test folder may have its own
``conftest``, so ``from shared_helpers import ...`` would be ambiguous)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TASK_TEXTS = ["normal", "abnormal", "pneumonia", "Is there an abnormal opacity in the query image?"]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SERVE_TOKEN = "test-token-123"


def random_image(rng: np.random.Generator, height: int = 60, width: int = 56) -> Image.Image:
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def serve_config(synthetic_data, tiny_models, **overrides):
    from seeinpairs.serve.schemas import ServeConfig

    root, _, task = synthetic_data
    data = {"task": task.model_dump(), "data": {"manifest": str(root / "manifest.csv")}, "bank": {"split": "train"},
            "selector": {"name": "random", "k": 2}, "model": {"name": str(tiny_models["qwen2_vl"]), "label": "tiny"},
            "auth_token": SERVE_TOKEN, "max_top_logprobs": 1000}
    data.update(overrides)
    return ServeConfig.from_dict(data)


