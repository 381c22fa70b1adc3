"""Shared fixtures: tiny offline models of real architectures and a small generated data set.

They are built once per session; nothing is downloaded.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# caches the product writes (e.g. MedMNIST PNGs) go to a throwaway folder, not the user's home
os.environ.setdefault("SEEINPAIRS_CACHE", __import__("tempfile").mkdtemp(prefix="seeinpairs-cache-"))

from pathlib import Path

import pytest
from seeinpairs.serve.background import serve_in_thread
from shared_helpers import (  # noqa: F401
    SERVE_TOKEN,
    SHARED_DATA,
    TASK_TEXTS,
    random_image,
    serve_config,
)


class _TinyModels(dict):
    """Tiny model folders by family, each built the first time a test asks for it (once per session)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        from seeinpairs.backends.tiny import build_tiny_vlm

        self[family] = build_tiny_vlm(family, self.root / family, texts=TASK_TEXTS, seed=0)
        return self[family]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    return _TinyModels(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    from seeinpairs.datasets.synthetic import SyntheticConfig, generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    table, task = generate_synthetic(root, SyntheticConfig(n_patients=40, seed=3))
    return root, table, task


# ----- the served tiny model (tests/serve, tests/backends/test_openai_compat.py) -----------------------
@pytest.fixture(scope="session")
def served_backend(tiny_models):
    from seeinpairs.backends.hf import HFBackend

    return HFBackend(tiny_models["qwen2_vl"], device="cpu")


@pytest.fixture(scope="session")
def served_app(synthetic_data, tiny_models, served_backend):
    from seeinpairs.serve.app import create_app

    return create_app(serve_config(synthetic_data, tiny_models), backend_factory=lambda _: served_backend)


@pytest.fixture(scope="session")
def live_server(served_app):
    """The app on a free loopback port, run by a real uvicorn server in a thread; yields its base URL."""
    with serve_in_thread(served_app) as url:
        yield url
