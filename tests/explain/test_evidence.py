"""The evidence analysis: its summaries (pure tables, exact values), what it saves, and one run on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from explain_data import TASK

from seeinpairs.explain.evidence import (EvidenceConfig, EvidenceResult, EvidenceRunner, localization_delta,
                                         summarise_localization, summarise_reference_share, summarise_swaps)
from seeinpairs.references.bank import ReferenceBank

N_BOOT = 200


def localization_rows() -> pd.DataFrame:
    """Three cases scored by both models with one method; case c3 also by a second method, single only."""
    rows = []
    for case_id, single, paired in (("c1", (0, 0.2), (1, 0.6)), ("c2", (1, 0.4), (1, 0.5)), ("c3", (0, 0.1), (1, 0.7))):
        for model, (hit, energy), share in (("single", single, np.nan), ("paired", paired, 0.25)):
            rows.append({"model": model, "method": "grad_x_input", "case_id": case_id, "pointing_game": hit,
                         "energy_inside": energy, "chance": 0.1, "p_gold": 0.5, "reference_share": share})
    rows.append({"model": "single", "method": "attention", "case_id": "c3", "pointing_game": 1, "energy_inside": 0.9,
                 "chance": 0.1, "p_gold": 0.5, "reference_share": np.nan})
    return pd.DataFrame(rows)


def test_localization_summary_is_the_mean_per_model_and_method_inside_its_interval():
    summary = summarise_localization(localization_rows(), n_boot=N_BOOT).set_index(["model", "method"])
    assert list(summary.index) == [("single", "grad_x_input"), ("paired", "grad_x_input"), ("single", "attention")]
    single, paired = summary.loc[("single", "grad_x_input")], summary.loc[("paired", "grad_x_input")]
    assert single["n"] == 3 and single["pointing_game"] == pytest.approx(1 / 3)
    assert paired["energy_inside"] == pytest.approx(0.6) and paired["chance"] == pytest.approx(0.1)
    for metric in ("pointing_game", "energy_inside"):
        assert (summary[f"{metric}_lo"] <= summary[metric]).all() and (summary[metric] <= summary[f"{metric}_hi"]).all()


def test_localization_delta_is_paired_minus_single_on_the_same_cases():
    delta = localization_delta(localization_rows(), n_boot=N_BOOT).set_index("metric")
    # attention was scored by one model only: there is nothing to pair
    assert set(delta["method"]) == {"grad_x_input"} and set(delta["n"]) == {3}
    assert delta.loc["pointing_game", "delta"] == pytest.approx(2 / 3)
    assert delta.loc["energy_inside", "delta"] == pytest.approx((0.4 + 0.1 + 0.6) / 3)
    assert (delta["delta_lo"] <= delta["delta"]).all() and (delta["delta"] <= delta["delta_hi"]).all()


def test_a_case_scored_by_one_model_only_is_left_out_of_the_delta():
    frame = localization_rows()
    frame = frame[~((frame["model"] == "paired") & (frame["case_id"] == "c1"))]
    delta = localization_delta(frame, n_boot=N_BOOT).set_index("metric")
    assert set(delta["n"]) == {2} and delta.loc["pointing_game", "delta"] == pytest.approx(1 / 2)


def test_reference_share_summarises_the_paired_model_only():
    share = summarise_reference_share(localization_rows(), n_boot=N_BOOT)
    assert share.to_dict("records")[0]["method"] == "grad_x_input" and len(share) == 1
    assert share.loc[0, "n"] == 3 and share.loc[0, "reference_share"] == pytest.approx(0.25)


def test_swap_summary_is_per_swap_and_gold_class_with_the_share_of_changed_answers():
    swaps = pd.DataFrame({"swap": ["abnormal"] * 3 + ["random_healthy"] * 2, "gold": ["abnormal"] * 5,
                          "delta_p_healthy": [0.3, 0.1, 0.2, 0.0, -0.1], "answer_changed": [True, False, True, False, False]})
    summary = summarise_swaps(swaps, n_boot=N_BOOT).set_index("swap")
    assert summary.loc["abnormal", "delta_p_healthy"] == pytest.approx(0.2)
    assert summary.loc["abnormal", "answer_changed"] == pytest.approx(2 / 3) and summary.loc["abnormal", "n"] == 3
    assert summary.loc["random_healthy", "answer_changed"] == 0.0


def test_empty_tables_give_empty_summaries():
    empty = pd.DataFrame()
    assert all(f(empty).empty for f in (summarise_localization, localization_delta, summarise_reference_share,
                                         summarise_swaps))


def result(overlays: int) -> EvidenceResult:
    frame = localization_rows()
    return EvidenceResult(frame, summarise_localization(frame, N_BOOT), localization_delta(frame, N_BOOT),
                          summarise_reference_share(frame, N_BOOT), pd.DataFrame({"swap": ["abnormal"]}), pd.DataFrame(),
                          pd.DataFrame({"model": ["single"], "layer": [0]}),
                          [(f"c{i}", b"\x89PNG" + bytes([i])) for i in range(overlays)], {"k": 1})


def test_save_writes_every_table_the_overlays_and_what_was_computed(tmp_path):
    out = result(overlays=2).save(tmp_path / "evidence")
    tables = ("localization", "localization_summary", "localization_delta", "reference_share", "swaps",
              "swap_summary", "layers")
    assert all((out / f"{name}.csv").is_file() for name in tables)
    assert pd.read_csv(out / "localization.csv").shape == localization_rows().shape
    assert (out / "overlay_1.png").read_bytes() == b"\x89PNG\x01"
    assert json.loads((out / "evidence_config.json").read_text()) == {"k": 1}
    assert "python" in json.loads((out / "environment.json").read_text())


def test_a_second_save_with_fewer_overlays_leaves_no_overlay_of_the_first(tmp_path):
    result(overlays=3).save(tmp_path)
    result(overlays=1).save(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("overlay_*.png")) == ["overlay_0.png"]


def test_the_config_is_strict_and_bounded():
    config = EvidenceConfig()
    assert (config.split, config.k, config.methods, config.mask_field) == ("test", 1, ["grad_x_input", "attention"],
                                                                           "mask")
    with pytest.raises(ValueError, match="n_cases"):
        EvidenceConfig(n_cases=1)
    with pytest.raises(ValueError, match="extra"):
        EvidenceConfig(n_localisation=3)


def test_a_run_scores_both_models_on_the_same_masked_abnormal_cases(region_model):
    """The region model stands in for both models: the bookkeeping, not the numbers, is under test."""
    backend, table, root = region_model
    bank = ReferenceBank.from_table(table, TASK, split="train")
    config = EvidenceConfig(n_localization=3, n_cases=4, n_overlays=1, n_boot=N_BOOT, methods=["grad_x_input"],
                            selector="random", k=1)
    evidence = EvidenceRunner(backend, backend, table, TASK, bank, config, mask_root=root).run()
    local = evidence.localization
    cases = local.groupby("model")["case_id"].apply(list)
    assert len(cases["single"]) == 3 and cases["single"] == cases["paired"]
    chosen = [table.get(case_id) for case_id in cases["single"]]
    assert all(c.split == "test" and c.label != TASK.healthy_class and c.extra.get("mask") for c in chosen)
    assert local.loc[local["model"] == "single", "reference_share"].isna().all()
    paired_share = local.loc[local["model"] == "paired", "reference_share"]
    assert ((paired_share >= 0) & (paired_share <= 1)).all()
    assert ((local["chance"] > 0) & (local["chance"] < 1)).all() and set(local["pointing_game"]) <= {0.0, 1.0}
    assert [case_id for case_id, _ in evidence.overlays] == cases["single"][:1]
    assert set(evidence.swaps["swap"]) == {"random_healthy", "abnormal"} and evidence.swaps["case_id"].nunique() == 4
    assert set(evidence.layers["model"]) == {"single", "paired"} and evidence.config["n_cases"] == 4
