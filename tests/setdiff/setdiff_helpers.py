"""Helpers of the set-difference tests: a scripted backend, request text, small images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seeinpairs.backends.base import Backend, Scored
from seeinpairs.prompts import Request


class ScriptedBackend(Backend):
    """Generates replies from ``reply(request)`` and scores options with ``score(request)``; records calls."""

    kind = "scripted"

    def __init__(self, reply: Callable[[Request], str] | Sequence[str] = (),
                 score: Callable[[Request], list[float]] | None = None) -> None:
        self._reply = reply
        self._replies = list(reply) if not callable(reply) else []
        self._score = score
        self.generated: list[Request] = []
        self.scored: list[Request] = []

    def generate(self, requests: Sequence[Request], max_new_tokens: int = 32) -> list[str]:
        out = []
        for request in requests:
            self.generated.append(request)
            out.append(self._reply(request) if callable(self._reply) else self._replies.pop(0))
        return out

    def score(self, requests: Sequence[Request]) -> list[Scored]:
        self.scored.extend(requests)
        return [Scored(self._score(r) if self._score else [0.0] * len(r.options)) for r in requests]

    def identity(self) -> dict[str, Any]:
        return {"backend": self.kind}


def request_text(request: Request) -> str:
    return " ".join(p["text"] for m in request.messages for p in m["content"] if p.get("type") == "text")


def write_image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(path)
