"""Fixtures of the set-difference tests, loaded with ``pytest_plugins = ["setdiff_fixtures"]`` (not a
conftest, so the suite-wide ``conftest`` module stays unique): small generated pairs, benchmark files,
a tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_pairs(tmp_path_factory):
    """Three generated pairs (presence, location, sex), 8 images per set, ground truth in metadata."""
    from seeinpairs.setdiff.benchmark import PAIR_DESIGNS, build_benchmark_pairs

    designs = [next(d for d in PAIR_DESIGNS if d.family == family) for family in ("presence", "location", "sex")]
    return build_benchmark_pairs(tmp_path_factory.mktemp("setdiff-pairs"), images_per_set=8, seed=1, designs=designs)


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
    # the official difficulty CSV codes levels as numbers (1.0 easy ... 3.0 hard)
    csv.write_text("set1,set2,difficulty\npleural effusion ,no finding ,1.0\nenlarge cardiac silhouette ,no finding ,3.0\n")
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
