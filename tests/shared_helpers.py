"""Plain helpers shared by test modules (import them from here: every test folder may have its own
``conftest``, so ``from shared_helpers import ...`` would be ambiguous)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """``app`` on a free loopback port, run by a real uvicorn server in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
