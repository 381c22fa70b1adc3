import json

from seeinpairs.mim.demo import ABLATION, AFTER, BEFORE, MimDemoConfig, run_mim_demo


def test_demo_pipeline_end_to_end(tmp_path):
    """A miniature run of the whole demo: every stage runs and writes its files (numbers not judged here)."""
    config = MimDemoConfig(patients=30, train_items=8, val_items=2, test_items=6, steps=2, eval_every=1,
                           held_out_patients=12, held_out_items=2)
    result, section = run_mim_demo(tmp_path, config, progress=False)
    assert {BEFORE, AFTER, ABLATION} <= set(result.evaluations)
    assert (result.evaluations[ABLATION].predictions["n_shown"] == 1).all()
    table = result.accuracy_table()
    assert set(table["condition"]) >= {BEFORE, AFTER, ABLATION}
    assert result.report.is_file() and section.anchor in result.report.read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["training"]["steps"] == 2 and saved["accuracy"]
    assert (tmp_path / "eval" / "predictions_after_sft.csv").is_file()
    splits = set(result.evaluations[AFTER].predictions["split"])
    assert splits == {"held_in", "held_out"}
