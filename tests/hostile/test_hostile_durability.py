"""kill -9 at chosen moments and two runs on one folder: what is on disk stays usable.

Each child process is a real ``seeinpairs eval`` (or tiny build) that a small
prelude (``HOOKS``) makes SIGKILL itself, or wait, at one moment of its work;
the parent then checks what a later run, or a second run at the same time, sees.
A new kill moment is one entry in ``HOOKS`` plus one parametrize line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

TIMEOUT = 600  # a hang guard only

#: preludes run in the child before the CLI; each patches one moment to SIGKILL (or pause) the process
HOOKS = {
    # the model weights of a tiny build are saved, its processor is not yet
    "tiny_build": """
import transformers
_save = transformers.PreTrainedModel.save_pretrained
def save_pretrained(self, *args, **kwargs):
    _save(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
transformers.PreTrainedModel.save_pretrained = save_pretrained
""",
    # the first batch of predictions is on disk, the second is being written
    "prediction_write": """
import seeinpairs.evaluation.store as store
_append = store.PredictionStore.append
def append(self, records):
    n = _append(self, records)
    os.kill(os.getpid(), signal.SIGKILL)
store.PredictionStore.append = append
""",
    # the first table file is written, the Markdown table is being rendered
    "table_write": """
import seeinpairs.evaluation.stats as stats
def to_markdown(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
stats.to_markdown = to_markdown
""",
    # the first predictions are stored; wait (holding the folder) until the parent says go
    "pause_after_append": """
from pathlib import Path
import time
import seeinpairs.evaluation.store as store
_append = store.PredictionStore.append
def append(self, records):
    n = _append(self, records)
    Path(os.environ["READY_FILE"]).write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not Path(os.environ["GO_FILE"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return n
store.PredictionStore.append = append
""",
}


def cli(args: list, hook: str | None = None, env: dict | None = None, wait: bool = True):
    """Run ``seeinpairs ARGS`` in a fresh process, with one of ``HOOKS`` installed first."""
    prelude = "import os, signal, sys\n" + (HOOKS[hook] if hook else "")
    script = prelude + "\nsys.argv = ['seeinpairs', *sys.argv[1:]]\nfrom seeinpairs.cli.app import main\nmain()\n"
    command = [sys.executable, "-c", script, *map(str, args)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        full_env.pop(name, None)
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=full_env)


def write_config(path: Path, synthetic_data, model: dict, out: Path, max_cases: int = 3) -> Path:
    root, _, task = synthetic_data
    raw = {"task": task.model_dump(mode="json"), "data": {"manifest": str(root / "manifest.csv")},
           "models": [{**model, "batch_size": 2, "device": "cpu"}],
           "eval": {"max_cases": max_cases, "n_boot": 10,
                    "conditions": [{"selector": "none", "k": 0}, {"selector": "random", "k": 1}]},
           "output_dir": str(out)}
    path.write_text(yaml.safe_dump(raw))
    return path


def killed(result) -> bool:
    return result.returncode == -signal.SIGKILL


def table_set(folder: Path) -> dict[str, bytes | None]:
    names = [f"{stem}.{suffix}" for stem in ("metrics", "paired_tests") for suffix in ("csv", "md", "json")]
    return {name: (folder / name).read_bytes() if (folder / name).exists() else None for name in names}


def prediction_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("moment", ["tiny_build", "prediction_write", "table_write"])
def test_a_run_killed_at_any_moment_is_finished_by_the_next(synthetic_data, tmp_path, moment):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", synthetic_data, {"tiny": "qwen2_vl"}, out, max_cases=2)
    first = cli(["eval", config, "--no-progress"], hook=moment)
    assert killed(first), first.stderr
    again = cli(["eval", config, "--no-progress"])
    assert again.returncode == 0, again.stderr
    records = prediction_lines(out)
    assert len(records) == 4 and len({(r["run_key"], r["case_id"]) for r in records}) == 4
    assert all(content is not None for content in table_set(out).values())


@pytest.mark.parametrize("before", ["empty folder", "older complete set"])
def test_kill_during_table_write_leaves_old_set_or_nothing(synthetic_data, tiny_models, tmp_path, before):
    out = tmp_path / "out"
    model = {"name": str(tiny_models["qwen2_vl"])}
    if before == "older complete set":
        done = cli(["eval", write_config(tmp_path / "a.yaml", synthetic_data, model, out, max_cases=2), "--no-progress"])
        assert done.returncode == 0, done.stderr
    old = table_set(out)
    config = write_config(tmp_path / "b.yaml", synthetic_data, model, out, max_cases=3)
    result = cli(["eval", config, "--no-progress"], hook="table_write")
    assert killed(result), result.stderr
    assert table_set(out) == old
    again = cli(["eval", config, "--no-progress"])
    assert again.returncode == 0, again.stderr
    tables = table_set(out)
    assert all(content is not None for content in tables.values())
    assert all(row["n"] == 3 for row in json.loads(tables["metrics.json"]))


def test_second_eval_on_one_folder_is_refused_naming_the_holder(synthetic_data, tiny_models, tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", synthetic_data, {"name": str(tiny_models["qwen2_vl"])}, out)
    flags = {"READY_FILE": str(tmp_path / "ready"), "GO_FILE": str(tmp_path / "go")}
    first = cli(["eval", config, "--no-progress"], hook="pause_after_append", env=flags, wait=False)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (tmp_path / "ready").exists():
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = cli(["eval", config, "--no-progress"])
    finally:
        (tmp_path / "go").write_text("")
        _, first_err = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"process {first.pid}" in lines[0] and str(out) in lines[0], lines[0]
    records = prediction_lines(out)
    assert len(records) == 6 and len({(r["run_key"], r["case_id"]) for r in records}) == 6


def test_lock_of_a_killed_run_is_taken_over(synthetic_data, tiny_models, tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", synthetic_data, {"name": str(tiny_models["qwen2_vl"])}, out)
    flags = {"READY_FILE": str(tmp_path / "ready"), "GO_FILE": str(tmp_path / "go")}
    first = cli(["eval", config, "--no-progress"], hook="pause_after_append", env=flags, wait=False)
    deadline = time.monotonic() + TIMEOUT
    while not (tmp_path / "ready").exists():
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=TIMEOUT)
    again = cli(["eval", config, "--no-progress"])
    assert again.returncode == 0, again.stderr
    records = prediction_lines(out)
    assert len(records) == 6 and len({(r["run_key"], r["case_id"]) for r in records}) == 6
