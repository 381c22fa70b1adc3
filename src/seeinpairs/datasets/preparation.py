"""Data preparation: the manifest a config names, written once, and the task it implies.

Every stage that reads cases (evaluation, training, studies, serving, explanation) starts
here: a config's ``data`` either points at a manifest that exists or says how to write it
(``synthetic`` generator settings, or a data set adapter in ``dataset``). The manifest is
written last and atomically, so its existence means the data are complete; concurrent runs
that need the same data wait for the first to write it. With an adapter, the config's task
is completed from the adapter's (class names, healthy class, question) in :func:`prepare_data`,
the one place where a config's task becomes the task every stage uses.

The configs are duck-typed (anything with ``data`` and ``task`` fields), so this module sits
below every stage that uses it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from ..atomic import atomic_write_text, folder_lock
from ..errors import ConfigError
from ..stages import stage_done
from ..settings import complete_task
from ..tasks import Task
from .registry import load_dataset, resplit_by_patient
from .synthetic import SyntheticConfig, generate_synthetic

C = TypeVar("C")


def ensure_data(config: Any) -> None:
    """Write the manifest ``config.data`` asks for (generated, or from a data set adapter) unless it exists."""
    data = config.data
    manifest = Path(data.manifest)
    if manifest.exists() or (data.synthetic is None and data.dataset is None):
        return
    if data.synthetic is not None and manifest.name != "manifest.csv":
        raise ConfigError(f"data.manifest: a generated data set is written as manifest.csv, got '{manifest.name}'")
    with folder_lock(manifest.parent, ".seeinpairs-data.lock", wait=True):
        if not manifest.exists():  # not written meanwhile by the process we waited for
            started = time.perf_counter()
            _write_data(data)
            stage_done("data prepared", str(manifest), time.perf_counter() - started)


def adapter_task_file(manifest: Path) -> Path:
    """Where the adapter's task is kept beside a manifest written from it (``manifest.task.json``)."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".task.json")


def prepare_data(config: C) -> C:
    """:func:`ensure_data`, then the config with its task completed from the adapter's (for data
    from ``data.dataset``). Works for any config with ``task`` and ``data`` (experiment, study,
    training, serve)."""
    ensure_data(config)
    dataset = config.data.dataset  # type: ignore[attr-defined]
    if dataset is None:
        return config
    task = complete_task(config.task, adapter_task(config.data), str(dataset["name"]))  # type: ignore[attr-defined]
    return config.model_copy(update={"task": task})  # type: ignore[attr-defined]


def adapter_task(data: Any) -> Task:
    """The task of ``data.dataset``'s adapter: stored beside the manifest when it was written, else
    (a manifest written before the task was kept, or by hand) from loading the adapter again."""
    path = adapter_task_file(data.manifest)
    if path.is_file():
        return Task.model_validate_json(path.read_text(encoding="utf-8"))
    return _load_adapter(data)[1]


def _load_adapter(data: Any):
    dataset = data.dataset
    return load_dataset(str(dataset["name"]), dataset["root"], **dataset.get("options", {}))


def _write_data(data: Any) -> None:
    if data.dataset is not None:
        table, task = _load_adapter(data)
        atomic_write_text(adapter_task_file(data.manifest), task.model_dump_json(indent=2))
        if data.resplit is not None:
            table, report = resplit_by_patient(table, data.resplit.fractions, seed=data.resplit.seed)
            atomic_write_text(Path(data.manifest).with_name("resplit_report.json"),
                              json.dumps(asdict(report), indent=2))
        table.save(data.manifest)
        return
    try:
        generator = SyntheticConfig(**data.synthetic)
    except TypeError as exc:
        raise ConfigError(f"data.synthetic: {exc}") from None
    generate_synthetic(Path(data.manifest).parent, generator)
