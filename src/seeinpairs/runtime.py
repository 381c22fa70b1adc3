"""How many CPU threads torch uses, and the record of where a result was computed.

Torch sizes its intra-op thread pool from the machine, not from what the process
may use: inside a container limited to two CPUs of a large host, or beside a
second job on a small machine, its OpenMP threads outnumber the cores. OpenMP
threads also spin while they wait at the end of each parallel region, so an
oversubscribed job burns its time slices spinning: two demo-sized jobs on two
cores each ran over 20 times slower than alone. The command line therefore
sizes the pool from the cores this process may use (affinity mask and cgroup
quota), lets waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user
chose otherwise, and both settings are written next to every result, because
figures depend on the thread count (one vs two threads gave a seed different
models in the real-data suite).
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: the environment variable (and ``--threads``) that fixes the thread count
THREADS_ENV = "SEEINPAIRS_THREADS"
#: libraries whose versions decide the figures
RECORDED_PACKAGES = ("seeinpairs", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn", "scipy",
                     "pydicom", "pillow", "faiss-cpu")


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max`` or v1 quota/period), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cores() -> int:
    """Cores this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def configure_threads(threads: int | None = None) -> int:
    """Fix the thread count before torch starts its pool (``--threads``, else ``SEEINPAIRS_THREADS``, else
    :func:`available_cores`) and let idle OpenMP threads sleep; returns the count.

    Settings the user made through ``OMP_NUM_THREADS`` or ``OMP_WAIT_POLICY`` are kept unless
    ``threads`` is given explicitly. When torch is already imported, its pool is resized directly.
    """
    if threads is None:
        from_env = os.environ.get(THREADS_ENV, "").strip()
        threads = int(from_env) if from_env.isdigit() and int(from_env) > 0 else None
    if threads is None:
        threads = int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS", "").isdigit() \
            else available_cores()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision(folder: Path | None = None) -> str | None:
    """The project's git revision when running from a checkout (``+dirty`` with local changes), else None."""
    folder = folder or Path(__file__).resolve().parent
    try:
        revision = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=folder, capture_output=True,
                                  text=True, timeout=5)
        if revision.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5)
        return revision.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_record() -> dict[str, Any]:
    """Where a result was computed: threads, cores, CPU and GPU, library versions, git revision.

    Figures are reproducible across machines only where these agree; the record travels with each
    run (``environment.json``) and into reports.
    """
    record: dict[str, Any] = {
        "cores_available": available_cores(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in RECORDED_PACKAGES},
        "git_revision": git_revision(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            record["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return record


def environment_summary(record: dict[str, Any] | None = None) -> str:
    """One line for reports: threads, CPU/GPU and the main library versions."""
    record = record or environment_record()
    versions = record.get("versions", {})
    device = ", ".join(record["gpu"]) if record.get("gpu") else record.get("cpu", "unknown CPU")
    threads = record.get("torch_threads", record.get("omp_num_threads"))
    return (f"{threads} torch threads of {record.get('cores_available')} cores available; {device}; "
            f"torch {versions.get('torch')}, transformers {versions.get('transformers')}, "
            f"seeinpairs {versions.get('seeinpairs')}" + (f" ({record['git_revision']})" if record.get("git_revision")
                                                          else ""))
