"""Two training jobs on one machine: how much does the second slow the first?

Runs a demo-sized comparative training (tiny Qwen2-VL from scratch, batch 16, one
reference per example, the project's own ``train_on_examples``) alone and then two
copies at once, under two thread settings measured side by side in one run:

* ``torch default``: what a plain ``python`` process gets (torch sizes its pool from
  the machine; OpenMP threads spin while they wait);
* ``seeinpairs``: what the command line sets (:func:`seeinpairs.runtime.configure_threads`:
  threads from the cores this process may use, waiting threads sleep).

Each line prints the mean time of the jobs and the ratio concurrent / alone. On a
machine with C cores and two jobs, a fair share is a ratio of about 2.

    python benchmarks/bench_threads.py [--steps 40] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "torch default": {"SEEINPAIRS_BENCH_CONFIGURE": "0"},
    "seeinpairs": {"SEEINPAIRS_BENCH_CONFIGURE": "1"},
}
#: variables that would hide what each setting does
CLEARED = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "SEEINPAIRS_THREADS")


def worker(steps: int, out: Path) -> None:
    """One training job; prints its JSON line (seconds of training, threads) and exits."""
    if os.environ.get("SEEINPAIRS_BENCH_CONFIGURE") == "1":
        from seeinpairs.runtime import configure_threads

        configure_threads()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    import torch
    from _common import TASK, RequestFactory, random_image

    from seeinpairs.training import SFTSettings, train_on_examples

    rng = np.random.default_rng(0)
    factory = RequestFactory()
    examples = []
    for i in range(64):
        label = TASK.classes[i % 2]
        examples.append((factory.request(random_image(rng, 64), [random_image(rng, 64)]), label))
    settings = SFTSettings.from_dict({
        "name": "bench_threads", "model": {"tiny": "qwen2_vl", "device": "cpu", "batch_size": 16},
        "batch_size": 16, "lr": 1e-3, "max_steps": steps, "eval_every": steps * 10, "output_dir": str(out)},
        source="bench_threads")
    started = time.perf_counter()
    train_on_examples(settings, examples, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - started, "threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


def run_jobs(n: int, setting: dict[str, str], steps: int, folder: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(setting)
    jobs = [subprocess.Popen([sys.executable, __file__, "--worker", "--steps", str(steps),
                              "--out", str(folder / f"job{i}")], env=env, stdout=subprocess.PIPE, text=True)
            for i in range(n)]
    results = []
    for job in jobs:
        stdout, _ = job.communicate(timeout=3600)
        if job.returncode != 0:
            raise SystemExit(f"a benchmark job failed (exit {job.returncode})")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.out)
        return
    from seeinpairs.runtime import available_cores

    print(f"cores available: {available_cores()}; {args.steps} training steps per job, batch 16, k=1")
    with tempfile.TemporaryDirectory(prefix="seeinpairs-bench-threads-") as tmp:
        folder = Path(tmp)
        for name, setting in SETTINGS.items():
            alone, together = [], []
            for repeat in range(args.repeats):
                alone += run_jobs(1, setting, args.steps, folder / f"{name}-{repeat}-a")
                together += run_jobs(2, setting, args.steps, folder / f"{name}-{repeat}-b")
            mean_alone = sum(r["seconds"] for r in alone) / len(alone)
            mean_together = sum(r["seconds"] for r in together) / len(together)
            print(f"{name}: threads {alone[0]['threads']}, wait policy {alone[0]['wait_policy'] or 'unset'}: "
                  f"alone {mean_alone:.1f} s, two at once {mean_together:.1f} s each, "
                  f"ratio {mean_together / mean_alone:.2f}x")


if __name__ == "__main__":
    main()
