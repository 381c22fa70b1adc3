"""Data-parallel evaluation: torchrun shards the cases, the merged store equals a single-process run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from seeinpairs.distributed import DistContext
from seeinpairs.evaluation.config import ExperimentConfig
from seeinpairs.evaluation.runner import run_experiment
from seeinpairs.evaluation.store import PredictionStore, rank_file_name


def record(case: str, key: str = "run1", **over) -> dict:
    rec = {"run_key": key, "case_id": case, "mode": "paired", "selector": "random", "k": 1, "seed": 0,
           "reference_ids": ["r1"], "options": ["normal", "tumor"], "option_logprobs": [-0.1, -2.3],
           "probabilities": [0.9, 0.1], "predicted": "normal", "gold": "normal", "selection_note": None,
           "seconds": 0.5}
    rec.update(over)
    return rec


def small_config(data_root, model_dir, out_dir, task) -> dict:
    return {
        "name": "dp",
        "task": task.model_dump(mode="json"),
        "data": {"manifest": str(data_root / "manifest.csv")},
        "models": [{"name": str(model_dir), "batch_size": 4, "device": "cpu"}],
        "eval": {"split": "test", "seeds": [0], "n_boot": 50, "max_cases": 8,
                 "conditions": [{"selector": "none", "k": 0}, {"selector": "random", "k": 1}]},
        "output_dir": str(out_dir),
    }


def comparable(records):
    return sorted((r["run_key"], r["case_id"], tuple(r["reference_ids"]),
                   tuple(round(x, 5) for x in r["option_logprobs"])) for r in records)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_torchrun_two_processes_equal_a_single_process_run(synthetic_data, tiny_models, tmp_path, monkeypatch):
    root, _, task = synthetic_data
    raw = small_config(root, tiny_models["qwen2_vl"], tmp_path / "dp", task)
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    started = time.perf_counter()
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "seeinpairs.cli", "eval", str(config_path), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - started
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert launched.stdout.count("Metrics (95% bootstrap CI)") == 1  # only rank 0 prints
    print(f"torchrun 2-process eval: {seconds:.1f} s")

    dp_dir = tmp_path / "dp"
    assert (dp_dir / rank_file_name(0)).exists() and (dp_dir / rank_file_name(1)).exists()
    assert not (dp_dir / "predictions.jsonl").exists()
    per_rank = [{r["case_id"] for r in PredictionStore(dp_dir)._read_file(dp_dir / rank_file_name(rank))}
                for rank in (0, 1)]
    assert per_rank[0] and per_rank[1]  # both ranks worked

    single = ExperimentConfig.from_dict({**raw, "output_dir": str(tmp_path / "single")})
    run_experiment(single, progress=False)
    dp_records = PredictionStore(dp_dir).records()
    assert len(dp_records) == 16  # 8 cases x 2 conditions, none twice
    assert comparable(dp_records) == comparable(PredictionStore(tmp_path / "single").records())
    pd.testing.assert_frame_equal(pd.read_csv(dp_dir / "metrics.csv"), pd.read_csv(tmp_path / "single" / "metrics.csv"))
    assert set(PredictionStore(dp_dir).conditions()) == set(PredictionStore(tmp_path / "single").conditions())

    # a later single-process run resumes from the rank files: nothing left to compute
    from seeinpairs.backends.hf import HFBackend

    def fail(*args, **kwargs):
        raise AssertionError("model was called although every rank file is complete")

    monkeypatch.setattr(HFBackend, "__init__", fail)
    resumed = run_experiment(ExperimentConfig.from_dict(raw), progress=False)
    assert (resumed.summary["n"] == 8).all()


def test_store_merges_rank_files_first_record_wins(tmp_path):
    PredictionStore(tmp_path).append([record("a", option_logprobs=[-1.0, -2.0]), record("b")])
    PredictionStore(tmp_path, rank=1).append([record("c"), record("a", option_logprobs=[-9.0, -9.0])])
    PredictionStore(tmp_path, rank=0).append([record("d"), record("b", key="run2")])
    PredictionStore(tmp_path, rank=10).append([record("e")])
    assert (tmp_path / "predictions.rank1.jsonl").exists() and (tmp_path / "predictions.rank10.jsonl").exists()
    (tmp_path / "predictions.rankx.jsonl").write_text("not a rank file\n")  # ignored

    store = PredictionStore(tmp_path)
    # predictions.jsonl first, then ranks in numeric order (0, 1, 10)
    assert [(r["run_key"], r["case_id"]) for r in store.records()] == [
        ("run1", "a"), ("run1", "b"), ("run1", "d"), ("run2", "b"), ("run1", "c"), ("run1", "e")]
    assert next(r for r in store.records("run1") if r["case_id"] == "a")["option_logprobs"] == [-1.0, -2.0]
    assert store.done("run1") == {"a", "b", "c", "d", "e"}
    assert store.done("run2") == {"b"}
    # a rank store reads the merged view too, and repairs only its own file's torn tail
    (tmp_path / "predictions.rank1.jsonl").open("a").write('{"run_key": "run1", "ca')
    rank1 = PredictionStore(tmp_path, rank=1)
    assert rank1.done("run1") == {"a", "b", "c", "d", "e"}
    rank1.append([record("f")])
    assert PredictionStore(tmp_path).done("run1") == {"a", "b", "c", "d", "e", "f"}


def test_dist_context_from_env(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert DistContext.from_env() == DistContext(1, 0, 0) and not DistContext.from_env().enabled
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = DistContext.from_env()
    assert ctx == DistContext(4, 3, 1) and ctx.enabled and not ctx.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(Exception, match="inconsistent"):
        DistContext.from_env()
