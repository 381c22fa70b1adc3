"""Shared fixtures: tiny offline models of real architectures and a small generated data set.

They are built once per session; nothing is downloaded.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

TASK_TEXTS = ["normal", "abnormal", "pneumonia", "Is there an abnormal opacity in the query image?"]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from seeinpairs.backends.tiny import build_tiny_vlm, list_tiny_families

    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_vlm(family, root / family, texts=TASK_TEXTS, seed=0)
            for family in list_tiny_families()}


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    from seeinpairs.datasets.synthetic import SyntheticConfig, generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    table, task = generate_synthetic(root, SyntheticConfig(n_patients=40, seed=3))
    return root, table, task


def random_image(rng: np.random.Generator, height: int = 60, width: int = 56) -> Image.Image:
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))
