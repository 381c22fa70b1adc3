"""Tiny Qwen2-VL models trained on the constructed data sets (a few seconds each on 2 cores)."""

from __future__ import annotations

import pytest
from explain_data import TASK, write_calibration_data, write_region_data

from seeinpairs.backends.hf import HFBackend
from seeinpairs.backends.tiny import build_tiny_vlm
from seeinpairs.training import TrainConfig, train


def _train(root, k: int, steps: int, **extra) -> HFBackend:
    tiny = build_tiny_vlm("qwen2_vl", root / "tiny", texts=["normal", "abnormal", TASK.question], seed=0)
    config = {"task": TASK.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
              "model": {"name": str(tiny), "device": "cpu", "batch_size": 16},
              "k": k, "batch_size": 16, "lr": 2e-3, "max_steps": steps, "eval_every": steps, "val_split": None,
              "seed": 0, "output_dir": str(root / "run"), **extra}
    result = train(TrainConfig.from_dict(config), progress=False)
    return HFBackend(result.checkpoint, device="cpu")


@pytest.fixture(scope="session")
def region_model(tmp_path_factory):
    """Single-image model whose answer only the top-left quadrant can change."""
    root = tmp_path_factory.mktemp("region")
    table = write_region_data(root)
    return _train(root, k=0, steps=150), table, root


@pytest.fixture(scope="session")
def calibration_model(tmp_path_factory):
    """Paired model (k=1, same-site references) that can only answer by comparing with its reference."""
    root = tmp_path_factory.mktemp("calibration")
    table = write_calibration_data(root)
    return _train(root, k=1, steps=300, selector="same_center"), table, root
