"""Run an experiment grid: model x selector x k x seed over the evaluation cases.

Each grid cell is a *condition* whose store key hashes everything that
determines its predictions (data, task, bank, model content, selector, k,
parameters, seed, prompt version). Predictions are appended to the store after
every batch, so an interrupted run resumes where it stopped and a finished
condition is never recomputed. Reference choice uses a per-case random stream
derived from (seed, case id), so results do not depend on order, batching or
which cases were already done.

Data-parallel: launched with ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE``
> 1), every process initialises ``torch.distributed`` (NCCL on GPUs, gloo on
CPU), takes the cases ``rank::world_size`` of each condition's pending list and
appends to its own rank file of the store; rank 0 alone writes ``runs.json`` and
the tables. Predictions do not depend on which process made them, so the merged
store equals that of a single-process run.

One run per output folder: each process locks the folder for its run (rank 0 or
a plain run one lock file, every other rank its own), so a second run there is
refused with the holder's pid instead of predicting every case a second time.
Tables are published as one set and tiny models appear only once fully built
(see :mod:`seeinpairs.atomic`), so a kill at any moment leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..atomic import FileSet, atomic_write_text, folder_lock, recover_file_sets
from ..backend_options import prediction_options
from ..backends import Backend, concrete_model, content_identity, create_backend, option_probabilities
from ..cases import Case, CaseTable, stable_digest
from ..errors import BankError, ConfigError
from ..imaging import file_hash, load_image
from ..prompts import PROMPT_VERSION, PromptBuilder
from ..references.bank import ReferenceBank
from ..references.selectors import SELECTORS, create_selector
from ..runtime import environment_record
from ..stages import stage_done
from ..tasks import Task
from ..settings import ModelConfig, complete_task
from .config import ExperimentConfig
from .stats import mcnemar, paired_bootstrap_delta, summarise, table_names, write_tables
from .store import PredictionStore, run_key

#: builds the backend of a (concrete) model config; :func:`~seeinpairs.backends.create_backend` by default
BackendFactory = Callable[[ModelConfig], Backend]

#: one line per invocation that computed predictions: where (threads, CPU/GPU, versions) and how many
ENVIRONMENT_FILE = "environment.jsonl"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel launch (world_size 1: not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistContext":
        def read(name: str, default: int) -> int:
            value = os.environ.get(name, "")
            try:
                return int(value) if value.strip() else default
            except ValueError:
                raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None

        world = read("WORLD_SIZE", 1)
        rank = read("RANK", 0)
        local = read("LOCAL_RANK", rank)
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"inconsistent distributed environment: WORLD_SIZE={world}, RANK={rank}")
        return cls(world, rank, local)

    def init(self) -> None:
        """Join the process group (idempotent); NCCL when CUDA is available, else gloo."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if dist.get_backend() == "nccl":
                    import torch

                    dist.barrier(device_ids=[torch.cuda.current_device()])
                else:
                    dist.barrier()

    def shutdown(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (writing files), the other ranks after it (finding them)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


@dataclass(frozen=True)
class Condition:
    """One cell of the grid."""

    model_index: int
    selector: str
    k: int
    params_json: str
    seed: int
    model: ModelConfig = field(compare=False, hash=False)

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @property
    def mode(self) -> str:
        """``single`` (k=0), ``paired`` (leakage-free references) or ``prior`` (the patient's own earlier studies)."""
        if self.k == 0:
            return "single"
        return "paired" if SELECTORS.get(self.selector).leakage_free else "prior"

    @property
    def label(self) -> str:
        return f"{self.model.display} | {self.selector} k={self.k} | seed {self.seed}"


@dataclass
class ExperimentResult:
    summary: pd.DataFrame
    paired_tests: pd.DataFrame
    records: dict[str, list[dict]] = field(default_factory=dict)
    output_dir: Path | None = None


def lock_name(dist: DistContext) -> str:
    """The lock file of one process of a run: rank 0 (or a plain run) and each other rank have their own."""
    return ".seeinpairs.lock" if dist.rank == 0 else f".seeinpairs.rank{dist.rank}.lock"


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """A random stream for one case under one seed, independent of processing order."""
    return np.random.default_rng([seed, stable_digest(case_id)])


def expand_conditions(config: ExperimentConfig) -> list[Condition]:
    seen: set = set()
    conditions = []
    for index, model in enumerate(config.models):
        for spec in model.conditions if model.conditions is not None else config.eval.conditions:
            for selector, k, params in spec.expand():
                for seed in config.eval.seeds:
                    cond = Condition(index, selector, k, json.dumps(params, sort_keys=True), seed, model)
                    if cond not in seen:
                        seen.add(cond)
                        conditions.append(cond)
    return conditions


def ensure_data(config: ExperimentConfig) -> None:
    """Write the manifest a config asks for (generated, or from a data set adapter) unless it exists.

    The manifest is written last and atomically, so its existence means the data set is
    complete; concurrent runs that need the same data wait for the first to write it.
    """
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


C = TypeVar("C")


def adapter_task_file(manifest: Path) -> Path:
    """Where the adapter's task is kept beside a manifest written from it (``manifest.task.json``)."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".task.json")


def prepare_data(config: C) -> C:
    """:func:`ensure_data`, then the config with its task completed from the adapter's (for data
    from ``data.dataset``): the one place where a config's task becomes the task every stage uses.
    Works for any config with ``task`` and ``data`` (experiment, study, training, serve)."""
    ensure_data(config)  # type: ignore[arg-type]  (uses only .data)
    dataset = config.data.dataset  # type: ignore[attr-defined]
    if dataset is None:
        return config
    task = complete_task(config.task, adapter_task(config.data), str(dataset["name"]))  # type: ignore[attr-defined]
    return config.model_copy(update={"task": task})  # type: ignore[attr-defined]


def adapter_task(data) -> Task:
    """The task of ``data.dataset``'s adapter: stored beside the manifest when it was written, else
    (a manifest written before the task was kept, or by hand) from loading the adapter again."""
    path = adapter_task_file(data.manifest)
    if path.is_file():
        return Task.model_validate_json(path.read_text(encoding="utf-8"))
    from ..datasets.registry import load_dataset

    return load_dataset(str(data.dataset["name"]), data.dataset["root"], **data.dataset.get("options", {}))[1]


def _write_data(data) -> None:
    if data.dataset is not None:
        from ..datasets.registry import load_dataset

        table, task = load_dataset(str(data.dataset["name"]), data.dataset["root"], **data.dataset.get("options", {}))
        atomic_write_text(adapter_task_file(data.manifest), task.model_dump_json(indent=2))
        if data.resplit is not None:
            from ..datasets.registry import resplit_by_patient

            table, report = resplit_by_patient(table, data.resplit.fractions, seed=data.resplit.seed)
            atomic_write_text(Path(data.manifest).with_name("resplit_report.json"),
                              json.dumps(asdict(report), indent=2))
        table.save(data.manifest)
        return
    from ..datasets.synthetic import SyntheticConfig, generate_synthetic

    try:
        generator = SyntheticConfig(**data.synthetic)
    except TypeError as exc:
        raise ConfigError(f"data.synthetic: {exc}") from None
    generate_synthetic(Path(data.manifest).parent, generator)


def select_eval_cases(table: CaseTable, split: str, max_cases: int | None) -> list[Case]:
    """The evaluation split, optionally capped to a fixed, order-independent subset."""
    cases = [c for c in table if c.split == split]
    if not cases:
        found = ", ".join(table.splits) or "none"
        raise ConfigError(f"{table.source}: no cases in evaluation split '{split}' (splits found: {found})")
    if max_cases is not None and len(cases) > max_cases:
        ranked = sorted(cases, key=lambda c: hashlib.sha256(c.case_id.encode()).hexdigest())
        keep = {c.case_id for c in ranked[:max_cases]}
        cases = [c for c in cases if c.case_id in keep]
    return cases


class ExperimentRunner:
    """Runs (or resumes) every condition of a config and summarises the metrics.

    ``backend_factory`` builds each model's backend from its concrete config (tiny models built,
    this process's device chosen): :func:`~seeinpairs.backends.create_backend` unless a caller
    (a test, a service) supplies its own.
    """

    def __init__(self, config: ExperimentConfig, progress: bool = True, console: Console | None = None,
                 dist: DistContext | None = None, backend_factory: BackendFactory = create_backend) -> None:
        self.backend_factory = backend_factory
        self.console = console or Console(stderr=True)
        self.dist = dist if dist is not None else DistContext()
        self.dist.init()
        self.progress = progress and self.dist.is_main
        with self.dist.main_first():
            ensure_data(config)
        self.config = config = prepare_data(config)  # the data are ready: this only completes the task
        self.task = config.task
        self.table = config.data.load_table(classes=self.task.classes)
        self.eval_cases = select_eval_cases(self.table, config.eval.split, config.eval.max_cases)
        self.output_dir = Path(config.output_dir)
        self.store = PredictionStore(self.output_dir, rank=self.dist.rank if self.dist.enabled else None)
        self.conditions = expand_conditions(config)
        self._bank: ReferenceBank | None = None
        self._history_bank: ReferenceBank | None = None
        self._load = lru_cache(maxsize=2048)(load_image)
        self.builder = PromptBuilder(self.task, image_loader=self._load)
        self._data_identity = {"manifest": str(Path(config.data.manifest).name),
                               "sha256": file_hash(config.data.manifest), "split": config.eval.split}
        self._models: dict[str, ModelConfig] = {}

    # ----- components ---------------------------------------------------------------------------
    @property
    def bank(self) -> ReferenceBank:
        if self._bank is None:
            started = time.perf_counter()
            self._bank = ReferenceBank.from_table(self.table, self.task, split=self.config.bank.split,
                                                  cache_dir=self.config.bank.cache_dir)
            if self.dist.is_main:
                stage_done("reference bank built", f"{len(self._bank)} healthy cases of split "
                           f"'{self.config.bank.split}'", time.perf_counter() - started)
        return self._bank

    @property
    def history_bank(self) -> ReferenceBank:
        """Every healthy case of every split: the bank of modes that show a patient's own history."""
        if self._history_bank is None:
            self._history_bank = ReferenceBank.from_table(self.table, self.task, split=None,
                                                          cache_dir=self.config.bank.cache_dir)
        return self._history_bank

    def bank_for(self, cond: Condition) -> ReferenceBank | None:
        if cond.k == 0:
            return None
        return self.bank if cond.mode == "paired" else self.history_bank

    def cases_for(self, cond: Condition, selector=None) -> list[Case]:
        """The evaluation cases a condition covers: all of them, except for modes that need a prior."""
        if cond.mode != "prior":
            return self.eval_cases
        selector = selector or create_selector(cond.selector, self.bank_for(cond), **cond.params)
        return [c for c in self.eval_cases if selector.eligible(c)]

    def check_feasible(self) -> None:
        """Fail before any model work on unknown selectors or more references than the bank has."""
        for cond in self.conditions:
            SELECTORS.get(cond.selector)
        largest = max((c.k for c in self.conditions if c.mode == "paired"), default=0)
        if largest > 0 and largest > len(self.bank):
            raise BankError(f"k={largest} is larger than the reference bank ({len(self.bank)} healthy cases "
                            f"in split '{self.config.bank.split}')")

    def concrete_model(self, model: ModelConfig) -> ModelConfig:
        """The model as its backend loads it: a tiny model built once into the output folder (its
        tokenizer learning the task's words); in a data-parallel launch, this process's GPU."""
        if model.display not in self._models:
            texts = [*self.task.classes, self.task.question, *self.task.descriptions.values()]
            rank = self.dist.local_rank if self.dist.enabled else None
            self._models[model.display] = concrete_model(model, self.output_dir / "models", texts, rank)
        return self._models[model.display]

    def condition_key(self, cond: Condition) -> tuple[str, dict[str, Any]]:
        model = cond.model
        description = {
            "data": self._data_identity,
            "task": self.task.model_dump(),
            "bank": ({"split": self.config.bank.split} if cond.mode == "paired" else {"split": "all"})
            if cond.k > 0 else None,
            "model": {"backend": model.backend, "source": model.name or f"tiny:{model.tiny}",
                      "fingerprint": content_identity(self.concrete_model(model)), "dtype": model.dtype,
                      "options": prediction_options(model.backend, model.options)},
            "selector": cond.selector, "k": cond.k, "params": cond.params, "seed": cond.seed,
            "prompt": PROMPT_VERSION,
        }
        return run_key(description), description

    # ----- running ------------------------------------------------------------------------------
    def _predict(self, backend: Backend, cond: Condition, key: str, cases: list[Case]) -> list[dict]:
        selector = create_selector(cond.selector, self.bank_for(cond), **cond.params)
        selections = [selector.select(case, cond.k, case_rng(cond.seed, case.case_id)) for case in cases]
        requests = [self.builder.build(case, sel.references) for case, sel in zip(cases, selections)]
        started = time.perf_counter()
        scored = backend.score(requests)
        seconds = (time.perf_counter() - started) / max(1, len(cases))
        records = []
        for case, selection, request, result in zip(cases, selections, requests, scored):
            option_scores, how = result.log_likelihoods, result.how  # how: e.g. log-probs vs generation fallback
            probs = option_probabilities(option_scores)
            records.append({
                "run_key": key, "case_id": case.case_id, "mode": cond.mode, "model": cond.model.display,
                "selector": cond.selector, "k": cond.k, "seed": cond.seed,
                "reference_ids": selection.case_ids, "options": request.options,
                "option_logprobs": [float(s) for s in option_scores],
                "probabilities": [float(p) for p in probs],
                "predicted": request.options[int(np.argmax(probs))], "gold": case.label,
                "patient_id": case.patient, "selection_note": selection.note, "seconds": seconds,
                **({"scoring": how} if how is not None else {}),
            })
        return records

    def run(self) -> ExperimentResult | None:
        """Run every pending prediction; the summary on rank 0 (other ranks of a launch get None).

        The output folder is locked for the run: a second run on it would predict every
        case again (both see the same cases as pending) and mix two sets of tables. Each
        rank of a data-parallel launch holds its own lock, so the ranks of one launch work
        side by side while a second launch (or a plain run) is refused.
        """
        try:
            with folder_lock(self.output_dir, lock_name(self.dist)):
                if self.dist.is_main:
                    recover_file_sets(self.output_dir)  # tables a killed run had committed but not renamed
                return self._run()
        finally:
            self.dist.shutdown()

    def _run(self) -> ExperimentResult | None:
        dist = self.dist
        with dist.main_first():  # rank 0 builds the bank, tiny models and registers runs; the others find them
            self.check_feasible()
            keys = {cond: self.condition_key(cond) for cond in self.conditions}
            if dist.is_main:
                for key, description in keys.values():
                    self.store.register_run(key, description)
        pending = {cond: [c for c in self.cases_for(cond) if c.case_id not in self.store.done(key)]
                   for cond, (key, _) in keys.items()}
        everything = sum(len(v) for v in pending.values())
        # every rank has read the same done sets before any rank appends; each takes every world_size-th case
        dist.barrier()
        if dist.enabled:
            pending = {cond: todo[dist.rank::dist.world_size] for cond, todo in pending.items()}
        total = sum(len(v) for v in pending.values())
        if everything == 0 and dist.is_main:
            self.console.print(f"all {len(self.conditions)} conditions already computed in {self.output_dir}",
                               style="green", markup=False)
        backends: dict[str, Backend] = {}
        with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                      disable=not self.progress or total == 0) as bar:
            overall = bar.add_task("predictions", total=total)
            for cond in self.conditions:
                key, _ = keys[cond]
                todo = pending[cond]
                if not todo:
                    continue
                display = cond.model.display
                if display not in backends:
                    backends.clear()  # one model in memory at a time
                    backends[display] = self.backend_factory(self.concrete_model(cond.model))
                backend = backends[display]
                bar.update(overall, description=cond.label)
                step = cond.model.batch_size
                started = time.perf_counter()
                for start in range(0, len(todo), step):
                    batch = todo[start:start + step]
                    self.store.append(self._predict(backend, cond, key, batch))
                    bar.advance(overall, len(batch))
                if dist.is_main:
                    stage_done("condition evaluated", f"{cond.label}: n={len(todo)}", time.perf_counter() - started)
        backends.clear()
        if total and dist.is_main:
            self.record_environment(everything)
        dist.barrier()  # every rank's predictions are on disk
        if not dist.is_main:
            return None
        return self.summarise()

    def record_environment(self, predictions: int) -> None:
        """Append where this invocation's predictions were computed to ``environment.jsonl``: a run
        resumed elsewhere (other threads, CPU, GPU or library versions) shows as a second line."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "predictions": predictions,
                  "world_size": self.dist.world_size, **environment_record()}
        with open(self.output_dir / ENVIRONMENT_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # ----- results ------------------------------------------------------------------------------
    def records_by_condition(self) -> dict[Condition, list[dict]]:
        position = {c.case_id: i for i, c in enumerate(self.eval_cases)}
        out = {}
        for cond in self.conditions:
            key, _ = self.condition_key(cond)
            # in evaluation-case order, so bootstrap resamples do not depend on which process wrote what
            out[cond] = sorted((r for r in self.store.records(key) if r["case_id"] in position),
                               key=lambda r: position[r["case_id"]])
        return out

    def summarise(self) -> ExperimentResult:
        task, ev = self.task, self.config.eval
        by_cond = self.records_by_condition()
        labelled = {cond.label: recs for cond, recs in by_cond.items()}
        summary = summarise(labelled, task.classes, task.healthy_class, n_boot=ev.n_boot, metrics=ev.metrics)
        meta = pd.DataFrame([{"model": c.model.display, "mode": c.mode, "selector": c.selector, "k": c.k,
                              "seed": c.seed} for c in by_cond])
        summary = pd.concat([meta, summary.drop(columns=["condition"])], axis=1)
        tests = []
        for cond, recs in by_cond.items():
            if cond.k == 0:
                continue
            baseline_model = self.config.eval.baseline_model or cond.model.display
            baseline = next((b for b in by_cond if b.k == 0 and b.model.display == baseline_model
                             and b.seed == cond.seed), None)
            if baseline is None:
                continue
            base_recs = by_cond[baseline]
            test = mcnemar(base_recs, recs)
            row = {"model": cond.model.display, "baseline": baseline.model.display, "mode": cond.mode,
                   "selector": cond.selector, "k": cond.k, "seed": cond.seed,
                   "n": test["n"], "single_right_paired_wrong": test["b"],
                   "single_wrong_paired_right": test["c"], "mcnemar_p": test["p"]}
            for metric in ("accuracy", "auroc"):
                delta = paired_bootstrap_delta(base_recs, recs, task.classes, task.healthy_class, metric,
                                               n_boot=ev.n_boot)
                row.update({f"delta_{metric}": delta["delta"], f"delta_{metric}_lo": delta["lo"],
                            f"delta_{metric}_hi": delta["hi"]})
            tests.append(row)
        tests_frame = pd.DataFrame(tests)
        with FileSet(self.output_dir, "tables") as tables:  # one set: a kill leaves the old tables or the new
            write_tables(summary, self.output_dir, "metrics", tables)
            if tests_frame.empty:  # paired tests of an earlier grid would not belong to these metrics
                for name in table_names("paired_tests"):
                    tables.remove(name)
            else:
                write_tables(tests_frame, self.output_dir, "paired_tests", tables)
        stage_done("tables written", f"{len(summary)} conditions in {self.output_dir}")
        return ExperimentResult(summary, tests_frame, {c.label: r for c, r in by_cond.items()}, self.output_dir)


def run_experiment(config: ExperimentConfig, progress: bool = True, distributed: bool = False,
                   backend_factory: BackendFactory = create_backend) -> ExperimentResult | None:
    """Run (or resume) an experiment.

    ``distributed``: join the data-parallel launch described by the environment
    (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, as torchrun / accelerate set them);
    then only rank 0 gets the result, the other ranks None. ``backend_factory``: see
    :class:`ExperimentRunner`.
    """
    dist = DistContext.from_env() if distributed else DistContext()
    return ExperimentRunner(config, progress=progress, dist=dist, backend_factory=backend_factory).run()


def conditions_table(conditions: Iterable[Condition]) -> pd.DataFrame:
    return pd.DataFrame([{"model": c.model.display, "selector": c.selector, "k": c.k, "seed": c.seed}
                         for c in conditions])
