"""The embedded default: the comparative study on the generated benchmark, offline on a CPU.

``seeinpairs demo`` generates the benchmark, trains single-image and comparative
tiny Qwen2-VL models from scratch, evaluates them across selectors and k, runs
a small sample-efficiency ladder and writes ``report.html``. The settings live
in the packaged ``configs/demo_study.yaml``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from .study import StudyConfig, StudyResult, run_study


def demo_config(output: str | Path, family: str = "qwen2_vl", patients: int | None = None) -> StudyConfig:
    raw = yaml.safe_load(resources.files("seeinpairs").joinpath("configs/demo_study.yaml").read_text())
    raw["model"]["tiny"] = family
    if patients is not None:
        raw["data"]["synthetic"]["n_patients"] = patients
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    (output / "demo_study.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return StudyConfig.from_dict(raw, source="demo", base=output)


def run_demo(output: str | Path, family: str = "qwen2_vl", patients: int | None = None,
             progress: bool = True) -> StudyResult:
    return run_study(demo_config(output, family, patients), progress=progress)
