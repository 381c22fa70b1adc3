"""The embedded demo: generated images, a tiny offline VLM, single vs paired evaluation.

It runs end to end on a laptop CPU without downloads. The tiny model is
randomly initialised (training comes with comparative SFT), so its metrics
show the pipeline working, not a diagnostic skill.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .datasets.synthetic import SyntheticConfig, generate_synthetic
from .evaluation.config import ExperimentConfig
from .evaluation.runner import ExperimentResult, run_experiment


def demo_config(data_dir: Path, output_dir: Path, family: str) -> dict:
    from .datasets.synthetic import SYNTHETIC_TASK

    return {
        "name": "demo",
        "task": SYNTHETIC_TASK.model_dump(),
        "data": {"manifest": str(data_dir / "manifest.csv")},
        "bank": {"split": "train"},
        "models": [{"tiny": family, "tiny_seed": 0, "batch_size": 8}],
        "eval": {
            "split": "test",
            "conditions": [
                {"selector": "none", "k": 0},
                {"selector": "random", "k": [1, 2]},
                {"selector": "embedding", "k": 1, "params": {"embedder": "pixel"}},
                {"selector": "demographic", "k": 1, "params": {"match": ["sex"]}},
                {"selector": "cross_center", "k": 1},
            ],
            "seeds": [0],
            "n_boot": 500,
        },
        "output_dir": str(output_dir / "results"),
    }


def run_demo(output: str | Path, family: str = "qwen2_vl", patients: int = 120,
             progress: bool = True) -> ExperimentResult:
    output = Path(output).resolve()
    data_dir = output / "data"
    if not (data_dir / "manifest.csv").exists():
        generate_synthetic(data_dir, SyntheticConfig(n_patients=patients))
    raw = demo_config(data_dir, output, family)
    (output / "demo.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return run_experiment(ExperimentConfig.from_dict(raw, source="demo"), progress=progress)
