"""The config records that many packages share: data, bank, model and condition settings, the
partial task a data set adapter completes, and the strict base every config model derives from.

They sit low in the package (imports: tasks, cases, configfile, backend_options only), so
evaluation, training, serving, studies and the backends read one definition of each.
Validated with pydantic: an unknown or invalid field is a one-line error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Sequence

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WrapSerializer,
                      WrapValidator, field_validator, model_validator)

from .backend_options import checked_options, known_backend
from .cases import CaseTable
from .configfile import resolve_path
from .errors import ConfigError
from .tasks import Task


def cache_root() -> Path:
    """Where converted images and other derived files are cached (``$SEEINPAIRS_CACHE`` or
    ``~/.cache/seeinpairs``); a manifest written by an adapter that converts images points there,
    so it is one of the folders a data config's images may lie in."""
    return Path(os.environ.get("SEEINPAIRS_CACHE", Path.home() / ".cache" / "seeinpairs")).expanduser()


#: adapter options whose values are paths, resolved against the config's folder like the manifest
PATH_OPTION_SUFFIXES = ("_dir", "_dirs", "_csv", "_path", "_lists")


def _check_reference_count(value: int | list[int]) -> int | list[int]:
    values = value if isinstance(value, list) else [value]
    if not values or any(v < 0 for v in values):
        raise ValueError("k must be a non-negative integer or a non-empty list of them")
    return value


#: k references: one count, or a list (a grid in evaluation, a per-example draw in training)
ReferenceCount = Annotated[int | list[int], AfterValidator(_check_reference_count)]


class StrictModel(BaseModel):
    """The base of every config record: an unknown field is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


#: the task fields an adapter supplies when a config leaves them out
ADAPTER_TASK_FIELDS = ("question", "classes", "healthy_class")


class PartialTask(StrictModel):
    """The task fields a config gives when its data come from an adapter (``data.dataset``): the
    rest (class names, healthy class, question) is the adapter's. Completed by :func:`complete_task`
    once the data are prepared, so that users need not know an adapter's exact class names."""

    name: str | None = None
    question: str | None = None
    classes: list[str] | None = None
    healthy_class: str | None = None
    descriptions: dict[str, str] | None = None
    modality: str | None = None


def _task_or_partial(value: Any, handler: Any) -> Any:
    """A PartialTask (set by a config's before-validator) is kept; anything else is a full Task."""
    return value if isinstance(value, PartialTask) else handler(value)


def _dump_task(value: Any, handler: Any) -> Any:
    return value.model_dump(exclude_none=True) if isinstance(value, PartialTask) else handler(value)


#: a config's task: a full Task, or (only with ``data.dataset``) the fields that override the adapter's
ConfigTask = Annotated[Task, WrapValidator(_task_or_partial), WrapSerializer(_dump_task)]


def partial_task_input(raw: Any) -> Any:
    """Before validation: with ``data.dataset`` given, a task that leaves out any of question,
    classes, healthy_class (or the whole task) becomes a :class:`PartialTask`, completed later."""
    if not isinstance(raw, dict):
        return raw
    data = raw.get("data")
    dataset = data.get("dataset") if isinstance(data, dict) else getattr(data, "dataset", None)
    task = raw.get("task", {})
    if dataset is None or not isinstance(task, dict) or all(task.get(f) is not None for f in ADAPTER_TASK_FIELDS):
        return raw
    try:
        partial = PartialTask.model_validate(task)
    except ValidationError:  # an unknown field or a wrong type: the full Task's error names the field
        return raw
    return {**raw, "task": partial}


def complete_task(task: Task | PartialTask, adapter_task: Task, dataset: str) -> Task:
    """The task of a config whose data come from adapter ``dataset``. A partial task is the
    adapter's task with the config's fields over it; a full task is kept as written (its prompts
    and stored run keys stay as they were). Class names a config gives must be the adapter's (in
    any order); otherwise a one-line :class:`ConfigError` lists the adapter's class names."""
    classes = task.classes
    if classes is not None and sorted(classes) != sorted(adapter_task.classes):
        raise ConfigError(f"field 'task.classes': {', '.join(classes)} are not the classes of dataset '{dataset}' "
                          f"({', '.join(adapter_task.classes)}); leave task.classes out to use the adapter's")
    if isinstance(task, Task):
        return task
    given = task.model_dump(exclude_none=True)
    return Task.from_dict({**adapter_task.model_dump(), **given}, source=f"task (with dataset '{dataset}')")


def check_partial_task(task: Task | PartialTask, data: DataConfig) -> None:
    """A task may leave fields out only when an adapter supplies them."""
    if isinstance(task, PartialTask) and data.dataset is None:
        missing = [f for f in ADAPTER_TASK_FIELDS if getattr(task, f) is None]
        raise ValueError(f"task: {', '.join(missing)} missing (give them, or name a data set adapter in "
                         f"data.dataset to take them from it)")


class ResplitConfig(StrictModel):
    """Re-split an adapter's cases by patient before the manifest is written (see
    :func:`seeinpairs.datasets.registry.resplit_by_patient`): ``fractions`` null keeps each patient
    in the split holding most of their cases; a (train, val, test) list deals patients out anew."""

    fractions: list[float] | dict[str, float] | None = None
    seed: int = 0


class DataConfig(StrictModel):
    """A manifest. If it is absent, ``synthetic`` (generator settings) or ``dataset`` (an adapter:
    ``{name, root, options}``) writes it first, so a config can start from native data;
    ``resplit`` then moves whole patients so that no patient spans two splits."""

    manifest: Path
    image_root: Path | None = None
    synthetic: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    resplit: ResplitConfig | None = None
    #: further folders the manifest's images may lie in (besides its own folder and image_root)
    roots: list[Path] = Field(default_factory=list)
    #: let image paths point anywhere (by default they must stay under the folders above)
    allow_outside_root: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if self.synthetic is not None and self.dataset is not None:
            raise ValueError("give at most one of 'synthetic' and 'dataset'")
        if self.dataset is not None and not {"name", "root"} <= set(self.dataset):
            raise ValueError("'dataset' needs 'name' and 'root' (and optional 'options')")
        return self

    def resolved(self, base: Path) -> "DataConfig":
        """Relative paths (manifest, image root, adapter root and path options) taken from ``base``."""
        def resolve(path: Path | None) -> Path | None:
            return resolve_path(path, base)

        dataset = self.dataset
        if dataset is not None:
            options = {key: (str(resolve(Path(value).expanduser())) if key.endswith(PATH_OPTION_SUFFIXES)
                             and isinstance(value, str) else value)
                       for key, value in dict(dataset.get("options") or {}).items()}
            dataset = {**dataset, "root": str(resolve(Path(str(dataset["root"])).expanduser())), "options": options}
        return self.model_copy(update={"manifest": resolve(self.manifest), "image_root": resolve(self.image_root),
                                       "dataset": dataset, "roots": [resolve(r) for r in self.roots]})

    def table_roots(self) -> list[Path]:
        """The folders images may lie in besides the manifest's own: ``image_root``, ``roots`` and
        an adapter's data folder (a manifest written from ``dataset`` points into it)."""
        folders = [self.image_root] if self.image_root is not None else []
        if self.dataset is not None:
            options = self.dataset.get("options") or {}
            folders.append(Path(str(self.dataset["root"])).expanduser())
            folders += [Path(str(v)).expanduser() for k, v in options.items()
                        if k.endswith(PATH_OPTION_SUFFIXES) and isinstance(v, str)]
            folders.append(cache_root())  # adapters that convert images (MedMNIST) write them there
        return folders + list(self.roots)

    def load_table(self, classes: Sequence[str] | None = None) -> CaseTable:
        """The manifest as a validated CaseTable, with this config's path rule."""
        return CaseTable.load(self.manifest, image_root=self.image_root, classes=classes, roots=self.table_roots(),
                              allow_outside_root=self.allow_outside_root)


class BankConfig(StrictModel):
    """Where healthy references come from (default: the train split)."""

    split: str | None = "train"
    cache_dir: Path | None = None

    def resolved(self, base: Path) -> "BankConfig":
        return self.model_copy(update={"cache_dir": resolve_path(self.cache_dir, base)})


class ConditionConfig(StrictModel):
    """A selector with one or several k; k=0 is the single-image baseline."""

    selector: str = "none"
    k: ReferenceCount = 0
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _none_means_no_references(self) -> "ConditionConfig":
        ks = self.k if isinstance(self.k, list) else [self.k]
        if self.selector == "none" and any(k > 0 for k in ks):
            raise ValueError("selector 'none' gives no references: use k 0, or name a selector for k > 0")
        return self

    def expand(self) -> list[tuple[str, int, dict[str, Any]]]:
        ks = self.k if isinstance(self.k, list) else [self.k]
        return [(self.selector if k > 0 else "none", k, self.params if k > 0 else {}) for k in ks]


class ModelConfig(StrictModel):
    """A model: a hub id or folder (``name``), or a tiny offline model of a family (``tiny``)."""

    backend: str = "hf"
    name: str | None = None
    tiny: str | None = None
    tiny_seed: int = 0
    label: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = Field(8, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)
    #: conditions for this model only (default: the experiment's eval.conditions)
    conditions: list[ConditionConfig] | None = None

    _known_backend = field_validator("backend")(known_backend)
    _backend_options = field_validator("options")(checked_options)

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        if (self.name is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'name' (hub id or folder) or 'tiny' (a tiny model family)")
        return self

    def resolved(self, base: Path) -> "ModelConfig":
        """A ``name`` that exists relative to ``base`` is a local folder; otherwise a hub id."""
        if self.name is not None and (base / self.name).exists():
            return self.model_copy(update={"name": str(resolve_path(Path(self.name), base))})
        return self

    @property
    def display(self) -> str:
        return self.label or (self.name if self.name is not None else f"tiny-{self.tiny}-{self.tiny_seed}")
