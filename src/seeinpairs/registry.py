"""One registry convention for every pluggable kind: register, create, list.

Every kind of component a config names by string (backends, selectors, metrics,
data-set adapters, ...) lives in one :class:`Registry`, filled the same way:

* an entry defined next to its registry registers by decorator::

      @SELECTORS.register("random")
      class RandomSelector(Selector): ...

* an entry whose module is heavy to import, or lives in another module that
  would otherwise have to be imported only for its side effect, registers
  lazily with a ``"module:attr"`` string, imported on first :meth:`Registry.get`::

      BACKENDS.register("hf", "seeinpairs.backends.hf:HFBackend", description="a transformers VLM")

Each entry has a description (given, or the first line of its docstring) for
``seeinpairs list``; the registry checks what is registered against the type it
expects; a duplicate name is an error; an unknown name is a one-line error that
lists the known ones. :func:`registries` returns every registry of the package,
so listings and contract tests enumerate them instead of keeping their own lists.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import RegistryError

T = TypeVar("T")


@dataclass
class _Entry:
    """One registered name: its target (a ``"module:attr"`` string until resolved) and its description."""

    target: Any
    description: str

    @property
    def lazy(self) -> bool:
        return isinstance(self.target, str)


class Registry(Generic[T]):
    """Maps names to factories (or specs) for one kind of component.

    ``expects``: the base class registered classes must subclass (or registered objects must be
    instances of); without it, entries must be callable. ``name_attribute``: for registries of
    classes that carry their own name (``Selector.name``), the attribute that must equal the name
    they are registered under, so the two cannot drift apart.
    """

    def __init__(self, kind: str, expects: type | None = None, name_attribute: str | None = None) -> None:
        self.kind = kind
        self.expects = expects
        self.name_attribute = name_attribute
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str, target: Any = None, *, description: str | None = None) -> Any:
        """Add ``target`` under ``name``; without ``target``, a decorator that adds what it decorates.

        ``target`` may be a ``"module:attr"`` string, imported on first use; such a lazy entry
        needs its ``description`` here, since listing it must not import it.
        """
        if target is None:
            def decorator(obj: Any) -> Any:
                self.register(name, obj, description=description)
                return obj

            return decorator
        if name in self._entries:
            raise RegistryError(f"{self.kind} '{name}' is registered twice")
        if isinstance(target, str):
            _split_reference(target)  # a malformed reference fails at registration, not first use
            if not description:
                raise RegistryError(f"{self.kind} '{name}': a lazy entry ('{target}') needs a description")
        else:
            self._check(name, target)
        text = description or _first_doc_line(target)
        if not text:
            raise RegistryError(f"{self.kind} '{name}': no description (give one or a docstring)")
        self._entries[name] = _Entry(target, text)
        return target

    def get(self, name: str) -> Any:
        """The registered factory (or spec) of ``name``, importing a lazy entry the first time."""
        entry = self._entries.get(name)
        if entry is None:
            raise RegistryError(f"unknown {self.kind} '{name}' (known: {', '.join(self.list_names()) or 'none'})")
        if entry.lazy:
            target = resolve_reference(entry.target)
            self._check(name, target)
            entry.target = target
        return entry.target

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Call the factory of ``name`` with the arguments."""
        return self.get(name)(*args, **kwargs)

    def list_names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def describe(self, name: str) -> str:
        """The one-line description of ``name`` (never imports a lazy entry)."""
        if name not in self._entries:
            self.get(name)  # the unknown-name error
        return self._entries[name].description

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    def _check(self, name: str, target: Any) -> None:
        """A one-line RegistryError when ``target`` is not what this registry holds."""
        where = f"{self.kind} '{name}'"
        if self.expects is not None:
            is_class = inspect.isclass(target)
            if not (issubclass(target, self.expects) if is_class else isinstance(target, self.expects)):
                raise RegistryError(f"{where}: {_what(target)} is not a {self.expects.__name__}")
        elif not callable(target):
            raise RegistryError(f"{where}: {_what(target)} is not callable")
        if self.name_attribute is not None:
            own = getattr(target, self.name_attribute, None)
            if own != name:
                raise RegistryError(f"{where}: {_what(target)} has {self.name_attribute} {own!r}, not '{name}'")


def resolve_reference(reference: str) -> Any:
    """The object a ``"package.module:attr"`` string names (the module imported if needed)."""
    module, attr = _split_reference(reference)
    try:
        return getattr(importlib.import_module(module), attr)
    except AttributeError:
        raise RegistryError(f"'{reference}': module '{module}' has no '{attr}'") from None


def _split_reference(reference: str) -> tuple[str, str]:
    module, sep, attr = reference.partition(":")
    if not (sep and module and attr.isidentifier()):
        raise RegistryError(f"'{reference}' is not a 'module:attr' reference")
    return module, attr


def _first_doc_line(target: Any) -> str:
    """The first sentence of a function's or class's own docstring (or of an object's
    ``description``), its reStructuredText markup removed, as one line for listings."""
    doc = target.__doc__ if inspect.isclass(target) or inspect.isroutine(target) else getattr(target, "description", "")
    if not isinstance(doc, str):
        return ""
    paragraph = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph, maxsplit=1)[0]
    return re.sub(r"(?::\w+:)?`+([^`]*)`+", r"\1", sentence)


def _what(target: Any) -> str:
    return getattr(target, "__qualname__", None) or type(target).__name__


#: every registry of the package, as lazy references, so listing them imports nothing until asked
_CATALOGUE: tuple[str, ...] = (
    "seeinpairs.backends.base:BACKENDS",
    "seeinpairs.backends.tiny:TINY_FAMILIES",
    "seeinpairs.studies.baselines:BASELINES",
    "seeinpairs.datasets.registry:DATASETS",
    "seeinpairs.embeddings.images:EMBEDDERS",
    "seeinpairs.evaluation.metrics:METRICS",
    "seeinpairs.explain.layouts:LAYOUTS",
    "seeinpairs.mim.generate:QA_GENERATORS",
    "seeinpairs.mim.metrics:OPEN_METRICS",
    "seeinpairs.references.selectors:SELECTORS",
    "seeinpairs.setdiff.judges:JUDGES",
    "seeinpairs.setdiff.proposers:PROPOSERS",
    "seeinpairs.setdiff.rankers:RANKERS",
    "seeinpairs.siteshift.acquisition:PROTOCOLS",
)


def registries() -> list[Registry]:
    """Every registry of the package (importing their modules), ordered by kind."""
    found = [resolve_reference(reference) for reference in _CATALOGUE]
    return sorted(found, key=lambda registry: registry.kind)

