"""Shared helpers and fixtures of the set-difference tests (imported by name, not a conftest, so the
suite-wide ``conftest`` module stays unique): a scripted backend, small generated pairs, benchmark files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytest
from PIL import Image

from seeinpairs.backends.base import Backend
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

    def score_options(self, requests: Sequence[Request]) -> list[list[float]]:
        self.scored.extend(requests)
        return [self._score(r) if self._score else [0.0] * len(r.options) for r in requests]

    def identity(self) -> dict[str, Any]:
        return {"backend": self.kind}


def request_text(request: Request) -> str:
    return " ".join(p["text"] for m in request.messages for p in m["content"] if p.get("type") == "text")


@pytest.fixture
def scripted():
    return ScriptedBackend


@pytest.fixture(scope="session")
def small_pairs(tmp_path_factory):
    """Three generated pairs (presence, location, sex), 8 images per set, ground truth in metadata."""
    from seeinpairs.setdiff.benchmark import PAIR_DESIGNS, build_benchmark_pairs

    designs = [next(d for d in PAIR_DESIGNS if d.family == family) for family in ("presence", "location", "sex")]
    return build_benchmark_pairs(tmp_path_factory.mktemp("setdiff-pairs"), images_per_set=8, seed=1, designs=designs)


def write_image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def raddiff_files(tmp_path):
    """A RadDiffBench-shaped JSONL (with a .jpg_.gstmp entry) and its row-aligned difficulty CSV."""
    rows = [
        {"set1": "pleural effusion ", "set2": "no finding ",
         "set1_images": ["p10/p10000032/s50414267/02aa804e.jpg", "p10/p10000032/s53189527/2a2277a9.jpg_.gstmp",
                         "p10/p10000764/s57375967/096052b7.jpg"],
         "set2_images": ["p11/p11000011/s51029426/174413ec.jpg", "p11/p11000183/s51967283/2c37a4d6.jpg"]},
        {"set1": "enlarge cardiac silhouette ", "set2": "no finding ",
         "set1_images": ["p12/p12000008/s50000001/a.jpg"], "set2_images": ["p12/p12000009/s50000002/b.jpg"]},
    ]
    jsonl = tmp_path / "raddiffbench.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    csv = tmp_path / "raddiffbench_difficulty.csv"
    csv.write_text("set1,set2,difficulty\npleural effusion ,no finding ,easy\nenlarge cardiac silhouette ,no finding ,Hard\n")
    return jsonl, csv, rows


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A randomly initialised CLIP (1 layer per tower) with a locally trained tokenizer, saved to a folder."""
    import torch
    import transformers

    from seeinpairs.backends.tiny import train_tokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = train_tokenizer(["<|endoftext|>"], ["a lesion in the left lung", "an older patient"], vocab_size=300,
                                eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformers.CLIPImageProcessorPil(size={"shortest_edge": 32},
                                       crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
