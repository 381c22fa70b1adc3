"""Med-MIM-layout fixtures: duplicate ids, 3-image items, options without a final newline, trailing spaces,
a path with a space, both conversation styles, an open-ended item; images written as real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def image_file(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((40, 44)) * 255).astype(np.uint8)).save(path)


TEMPORAL = [
    {"id": "3512", "images": ["p1/study_a.png", "p1/study_b.png"], "source": "MS_CXR_T_3512",
     "conversation": [
         {"role": "user", "content": "<image><image>Compared with the first image, how has the effusion in the "
                                     "second image changed?\nA: improved  \nB: stable\nC: worsened"},
         {"role": "assistant", "content": "C: worsened"}]},
    {"id": "3512", "images": ["p1/study_b.png", "p1/study_a.png"], "source": "MS_CXR_T_3512",
     "conversation": [
         {"role": "user", "content": "<image><image>Is the opacity in the second image new?\nA: yes\nB: no\n"},
         {"role": "assistant", "content": "B: no"}]},
    {"id": "77", "images": ["p2/one.png", "p2/two.png"], "source": "MS_CXR_T_77",
     "conversation": [
         {"role": "user", "content": "<image><image>Describe the change between the two studies."},
         {"role": "assistant", "content": "The consolidation has resolved."}]},
]

COREFERENCE = [
    {"id": "c1", "images": ["p1/study_a.png", "p2/one.png", "p2/two.png"], "source": "MS_CXR_T_c1",
     "conversation": [
         {"role": "user", "content": "<image><image><image>Which image shows a pleural effusion?\n"
                                     "A: the first image\nB: the second image\nC: the third image"},
         {"role": "assistant", "content": "A: the first image"}]},
]

ODIR = [
    {"id": "123", "images": ["Training Images/123_left.jpg", "Training Images/123_right.jpg"],
     "source": "VQA_ODIR_123",
     "conversations": [
         {"from": "human", "value": "<image><image>Which eye shows signs of diabetic retinopathy?\n"
                                    "A: left eye\nB: right eye\nC: both eyes\nD: neither eye"},
         {"from": "gpt", "value": "B: right eye"}]},
]

#: the quirk of the released held-out ODIR file: one item whose option C line is empty
ODIR_NOISY = {
    "id": "456", "images": ["Training Images/123_left.jpg", "Training Images/123_right.jpg"],
    "source": "VQA_ODIR_456",
    "conversations": [
        {"from": "human", "value": "<image><image>Which eye shows drusen?\nA: left eye\nB: right eye\n\nD: neither eye"},
        {"from": "gpt", "value": "A: left eye"}]}


def build_mim_files(tmp_path: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the three files and their images under ``tmp_path``: (files by subset, image roots by data set)."""
    cxr, odir = tmp_path / "ms-cxr-t", tmp_path / "odir"
    for i, name in enumerate(["p1/study_a.png", "p1/study_b.png", "p2/one.png", "p2/two.png"]):
        image_file(cxr / name, i)
    for i, name in enumerate(["Training Images/123_left.jpg", "Training Images/123_right.jpg"]):
        image_file(odir / name, 10 + i)
    qa = tmp_path / "qa"
    qa.mkdir()
    files = {"temporal": qa / "Med_MIM_benchmark_Held_in_Temporal.json",
             "coreference": qa / "Med_MIM_benchmark_Held_in_Coreference.json",
             "odir": qa / "Med_MIM_benchmark_Held_out_ODIR.json"}
    for key, items in (("temporal", TEMPORAL), ("coreference", COREFERENCE), ("odir", ODIR)):
        files[key].write_text(json.dumps(items, indent=1))
    return files, {"MS_CXR_T": cxr, "VQA_ODIR": odir}


def write_items(path: Path, items: list) -> Path:
    path.write_text(json.dumps(items))
    return path
