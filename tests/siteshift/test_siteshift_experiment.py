"""The site-shift experiment end to end on the generated data (three sites, one held out), tiny budget."""

import json

import pytest

from seeinpairs.cases import CaseTable
from seeinpairs.datasets.synthetic import SYNTHETIC_TASK
from seeinpairs.errors import ConfigError
from seeinpairs.siteshift.experiment import SiteShiftSpec, run_site_shift
from seeinpairs.studies.study import StudyConfig


def tiny_study(tmp_path, synthetic_data):
    root, _, _ = synthetic_data
    return StudyConfig.from_dict({
        "name": "shift", "task": SYNTHETIC_TASK.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
        "model": {"tiny": "qwen2_vl", "batch_size": 8, "device": "cpu"},
        "tiny_spec": {"text_layers": 1, "vision_layers": 1},
        "train": {"max_steps": 2, "batch_size": 4, "eval_every": 2, "val_split": None},
        "paired_training": {"k": 1}, "eval": {"split": "test", "n_boot": 20, "max_cases": 8},
        "output_dir": str(tmp_path / "study")})


def test_leave_one_site_out_experiment_trains_on_other_sites_and_compares_every_condition(tmp_path, synthetic_data):
    spec = SiteShiftSpec(name="loso", study="shift", kind="leave_one_site_out", held_out="site_c", site_references=4,
                         k=1)
    frame = run_site_shift(spec, tiny_study(tmp_path, synthetic_data), tmp_path / "shift", progress=False)
    shifted = CaseTable.load(tmp_path / "shift" / "data" / "manifest.csv", roots=[synthetic_data[0]])
    assert {c.site for c in shifted if c.split in ("train", "val")} == {"site_a", "site_b"}
    assert {c.site for c in shifted if c.split in ("test", "site_reference")} == {"site_c"}
    references = [c for c in shifted if c.split == "site_reference"]
    assert len(references) >= 4 and all(c.label == "normal" for c in references)
    assert not {c.patient for c in references} & {c.patient for c in shifted if c.split == "test"}
    for folder in ("single", "paired", "single-aug", "paired-shared-aug"):
        summary = json.loads((tmp_path / "shift" / "models" / folder / "train_summary.json").read_text())
        trained_on = set(summary["train_case_ids"])
        assert all(c.site != "site_c" for c in shifted if c.case_id in trained_on)
    conditions = set(zip(frame["model"], frame["references"]))
    assert conditions == {("single", "none"), ("single recalibrated on new-site healthy references", "none"),
                          ("single+aug", "none"), ("paired", "1 new-site references"),
                          ("paired", "1 training-site references"), ("paired+shared-aug", "1 new-site references"),
                          ("paired+shared-aug", "1 training-site references")}
    new_site = frame[frame["evaluated_on"] == "new site"]
    assert (new_site["n"] == 8).all()
    assert new_site.drop(new_site.index[new_site["model"] == "single"])["delta_accuracy_vs_single"].notna().all()
    assert json.loads((tmp_path / "shift" / "recalibration.json").read_text())["n_references"] == len(references)


def test_leave_one_site_out_needs_a_site():
    spec = SiteShiftSpec(name="x", study="s", kind="leave_one_site_out")
    from seeinpairs.siteshift.experiment import build_shifted_table

    with pytest.raises(ConfigError, match="leave_one_site_out needs held_out"):
        build_shifted_table(spec, CaseTable([], "mem"), "normal", None)
