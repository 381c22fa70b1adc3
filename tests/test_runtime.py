"""Thread settings and the environment record (see benchmarks/bench_threads.py for what they buy)."""

import json
import os
import subprocess
import sys

import pytest

from seeinpairs.runtime import available_cores, cgroup_cpu_limit, environment_record, environment_summary


@pytest.mark.parametrize("files, limit", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_quota_v1_and_v2(tmp_path, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == limit


def _threads_in_child(args: list[str], env: dict[str, str]) -> dict:
    """Run the CLI's option callback in a fresh process, then report what torch uses."""
    code = ("import json, os, sys\n"
            "from typer.testing import CliRunner\n"
            "from seeinpairs.cli.app import app\n"
            "CliRunner().invoke(app, sys.argv[1:] + ['list'])\n"
            "import torch\n"
            "print(json.dumps({'threads': torch.get_num_threads(), 'policy': os.environ.get('OMP_WAIT_POLICY')}))\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "SEEINPAIRS_THREADS")}
    result = subprocess.run([sys.executable, "-c", code, *args], env={**clean, **env}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_fresh_cli_process_sets_threads_from_available_cores_and_lets_waits_sleep():
    assert _threads_in_child([], {}) == {"threads": available_cores(), "policy": "PASSIVE"}


@pytest.mark.parametrize("argument, env, threads, policy", [
    (None, {}, None, "PASSIVE"),  # None: available_cores()
    (1, {}, 1, "PASSIVE"),
    (None, {"SEEINPAIRS_THREADS": "1"}, 1, "PASSIVE"),
    (None, {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"}, 1, "ACTIVE"),  # what the user set is kept
])
def test_configure_threads_sources_and_precedence(monkeypatch, argument, env, threads, policy):
    import torch

    from seeinpairs.runtime import configure_threads

    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "SEEINPAIRS_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        expected = threads if threads is not None else available_cores()
        assert configure_threads(argument) == expected
        assert torch.get_num_threads() == expected  # torch was loaded: its pool is resized directly
        assert os.environ["OMP_NUM_THREADS"] == str(expected) and os.environ["OMP_WAIT_POLICY"] == policy
    finally:
        torch.set_num_threads(before)


def test_environment_record_names_threads_cpu_and_versions():
    import torch  # noqa: F401  (the record reads torch's pool when torch is loaded)

    record = environment_record()
    assert record["torch_threads"] >= 1 and record["cores_available"] >= 1
    assert record["versions"]["torch"] and record["versions"]["seeinpairs"] and record["cpu"]
    line = environment_summary(record)
    assert f"{record['torch_threads']} torch threads" in line and "torch " in line
