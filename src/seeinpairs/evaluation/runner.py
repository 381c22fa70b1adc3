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

import json
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..atomic import FileSet, folder_lock, recover_file_sets
from ..backend_options import prediction_options
from ..backends import Backend, concrete_model, content_identity, create_backend, option_probabilities
from ..cases import Case, CaseTable, case_rng, select_eval_cases
from ..datasets.preparation import ensure_data, prepare_data
from ..distributed import DistContext
from ..errors import BankError
from ..imaging import file_hash, load_image
from ..prompts import PROMPT_VERSION, PromptBuilder
from ..references.bank import ReferenceBank
from ..references.selectors import SELECTORS, create_selector
from ..runtime import environment_record
from ..stages import stage_done
from ..settings import ModelConfig
from .config import ExperimentConfig
from .stats import mcnemar, paired_bootstrap_delta, summarise, table_names, write_tables
from .store import PredictionStore, run_key

#: builds the backend of a (concrete) model config; :func:`~seeinpairs.backends.create_backend` by default
BackendFactory = Callable[[ModelConfig], Backend]

#: one line per invocation that computed predictions: where (threads, CPU/GPU, versions) and how many
ENVIRONMENT_FILE = "environment.jsonl"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConditionKey:
    """What a condition's results are keyed by: its fields are read, never parsed back out of
    ``display`` (the name tables, progress and logs show)."""

    model: str
    selector: str
    k: int
    seed: int
    mode: str
    #: the selector's parameters as sorted JSON (not shown: two conditions may differ only in them)
    params: str = "{}"

    @property
    def display(self) -> str:
        return f"{self.model} | {self.selector} k={self.k} | seed {self.seed}"


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
    def key(self) -> ConditionKey:
        return ConditionKey(self.model.display, self.selector, self.k, self.seed, self.mode, self.params_json)

    @property
    def label(self) -> str:
        return self.key.display


@dataclass
class ExperimentResult:
    summary: pd.DataFrame
    paired_tests: pd.DataFrame
    records: dict[ConditionKey, list[dict]] = field(default_factory=dict)
    output_dir: Path | None = None

    def records_for(self, model: str, selector: str, k: int, seed: int | None = None) -> list[dict]:
        """The records of the first condition of ``model`` with ``selector`` and ``k`` (in grid order), of
        ``seed`` when given."""
        for key, records in self.records.items():
            if (key.model, key.selector, key.k) == (model, selector, k) and seed in (None, key.seed):
                return records
        raise KeyError(f"{model} {selector} k={k}" + ("" if seed is None else f" seed {seed}"))


def lock_name(dist: DistContext) -> str:
    """The lock file of one process of a run: rank 0 (or a plain run) and each other rank have their own."""
    return ".seeinpairs.lock" if dist.rank == 0 else f".seeinpairs.rank{dist.rank}.lock"


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


class ExperimentRunner:
    """Runs (or resumes) every condition of a config and summarises the metrics.

    ``backend_factory`` builds each model's backend from its concrete config (tiny models built,
    this process's device chosen): :func:`~seeinpairs.backends.create_backend` unless a caller
    (a test, a service) supplies its own.
    """

    def __init__(self, config: ExperimentConfig, progress: bool = True, console: Console | None = None,
                 dist: DistContext | None = None, backend_factory: BackendFactory = create_backend,
                 table: CaseTable | None = None) -> None:
        """``table``: the cases ``config.data`` describes when the caller has them loaded already (a
        study reads its manifest once for every stage); else they are read here."""
        self.backend_factory = backend_factory
        self.console = console or Console(stderr=True)
        self.dist = dist if dist is not None else DistContext()
        self.dist.init()
        self.progress = progress and self.dist.is_main
        with self.dist.main_first():
            ensure_data(config)
        self.config = config = prepare_data(config)  # the data are ready: this only completes the task
        self.task = config.task
        self.table = table if table is not None else config.data.load_table(classes=self.task.classes)
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
        keyed = {cond.key: recs for cond, recs in by_cond.items()}
        summary = summarise(keyed, task.classes, task.healthy_class, n_boot=ev.n_boot, metrics=ev.metrics)
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
        return ExperimentResult(summary, tests_frame, keyed, self.output_dir)


def run_experiment(config: ExperimentConfig, progress: bool = True, distributed: bool = False,
                   backend_factory: BackendFactory = create_backend,
                   table: CaseTable | None = None) -> ExperimentResult | None:
    """Run (or resume) an experiment.

    ``distributed``: join the data-parallel launch described by the environment
    (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, as torchrun / accelerate set them);
    then only rank 0 gets the result, the other ranks None. ``backend_factory``: see
    :class:`ExperimentRunner`. ``table``: the cases of ``config.data``, when the caller has read
    them already.
    """
    dist = DistContext.from_env() if distributed else DistContext()
    return ExperimentRunner(config, progress=progress, dist=dist, backend_factory=backend_factory,
                            table=table).run()


def conditions_table(conditions: Iterable[Condition]) -> pd.DataFrame:
    return pd.DataFrame([{"model": c.model.display, "selector": c.selector, "k": c.k, "seed": c.seed}
                         for c in conditions])
