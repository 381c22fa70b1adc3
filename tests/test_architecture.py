"""The import structure of ``seeinpairs``, read from the source with :mod:`ast` (nothing is imported).

Three rules keep the tree readable as the data flow:

* **No private names across modules.** A name with one leading underscore is private to the module
  that defines it: no other module imports it, not even a sibling in the same package. A helper that
  a second module needs is shared code, so it gets a public name where it lives (or moves to a
  module below both users). The same holds one level up for a private module (``pkg/_impl.py``):
  only modules inside ``pkg`` import it.
* **No import cycles** between modules, counting imports inside functions: a cycle hidden behind a
  local import is still two modules that cannot be understood (or tested) one without the other.
* **Layers.** Every module belongs to one layer of :data:`LAYERS`; a module imports only from its
  own layer or a lower one. Layers are keyed on dotted-name prefixes relative to the package
  (``"backends"`` covers ``seeinpairs.backends`` and all its modules; ``""`` is the package's own
  ``__init__``); the longest matching prefix wins, so one module of a package can sit lower than
  its package (``siteshift.experiment`` above the rest of ``siteshift``). A new module must be
  placed explicitly: an unmapped module fails the test.

An edge goes from the importing module to the module named: ``from .x import y`` is an edge to
``x`` (to ``x.y`` when that is a module). Running a package's ``__init__`` on the way is not counted
(the usual convention, as in import-linter); a package's ``__init__`` that re-exports its modules
has edges to them like any other module. Imports under ``if TYPE_CHECKING:`` count for the
private-name and layer rules but not for cycles (they never run). Lazy registry entries
(``"seeinpairs.x.y:Name"`` strings, imported on first use) are names, not imports, and are not read.

:data:`KNOWN_VIOLATIONS` lists violations that exist today and are being removed; each entry must
still occur (a fixed one fails the test until it is deleted from the list), and anything not listed
fails.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Collection

PACKAGE = "seeinpairs"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


@dataclass(frozen=True)
class Layer:
    name: str
    #: why the layer sits where it does
    why: str
    #: module prefixes relative to the package ("backends" is seeinpairs.backends and below)
    prefixes: tuple[str, ...]


#: lowest first; a module may import from its own layer and the ones before it
LAYERS: tuple[Layer, ...] = (
    Layer("foundation",
          "Plumbing with no domain knowledge: errors, atomic writes, JSON lines, environment records, the "
          "Registry class, the strict YAML config base, image decoding, stage timing and where a process sits "
          "in a data-parallel launch. Everything may use it.",
          ("errors", "atomic", "jsonl", "runtime", "registry", "configfile", "imaging", "stages", "distributed")),
    Layer("records",
          "The core records every other part speaks in: a Task, a Case and its table, the comparative "
          "prompt (references first), the declared backend options and the shared config records (data, "
          "bank, model, condition settings); the package's own __init__ re-exports them.",
          ("", "tasks", "cases", "prompts", "backend_options", "settings")),
    Layer("models and data",
          "What an experiment is made of: model backends, image and text embedders, data set adapters, the "
          "reference bank and its selectors, and the site-shift building blocks (acquisition transforms, "
          "augmentation, site splits, recalibration) that training and evaluation both use.",
          ("backends", "embeddings", "datasets", "references", "siteshift")),
    Layer("experiments",
          "Running models on data: evaluation (metrics, statistics, the runner) and training.",
          ("evaluation", "training")),
    Layer("analysis",
          "Reading results and models after the fact: explanations of a model's answers and the report's "
          "formatting and plots; they consume experiments' outputs and never run them.",
          ("explain", "report")),
    Layer("applications",
          "Self-contained uses built from the layers below: the HTTP service, multi-image QA (mim), set "
          "differences (setdiff) and the site-shift experiment.",
          ("serve", "mim", "setdiff", "siteshift.experiment")),
    Layer("studies",
          "End-to-end jobs that combine training, evaluation, explanations and reports: studies, the "
          "real-data suite with its non-VLM baselines, the demo and the checkpoint check (which runs a "
          "backend's fast paths, the attribution layout and LoRA targets on generated requests).",
          ("studies",)),
    Layer("entry points",
          "The command line: it may use everything and nothing uses it.",
          ("cli",)),
)

#: Violations at the time of writing, each being removed by work on the structure; the test fails on
#: any violation not listed here and on any listed one that no longer occurs. Keys:
#: ("private", importer, imported module, name) | ("layer", importer, imported module) | ("cycle", *members)
KNOWN_VIOLATIONS: frozenset[tuple[str, ...]] = frozenset()


# ----- reading the source ------------------------------------------------------------------------
@dataclass(frozen=True)
class Import:
    """One imported name (or module) at one line of one module."""

    importer: str   # dotted name relative to the package ("" for its __init__)
    target: str     # the module imported from, relative to the package
    name: str | None  # the name taken from it (None for ``import x.y``)
    line: int
    type_checking: bool

    @property
    def where(self) -> str:
        return f"{module_path(self.importer)}:{self.line}"


def relative(dotted: str) -> str:
    return "" if dotted == PACKAGE else dotted.removeprefix(PACKAGE + ".")


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every module of the package by relative dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def absolute(module: str) -> str:
    return ".".join(filter(None, (PACKAGE, module)))


def module_path(module: str) -> str:
    return modules()[module].relative_to(SOURCE.parents[1]).as_posix()


def _known_module(dotted: str, known: Collection[str]) -> str:
    """The longest prefix of ``dotted`` that is a module of the package."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def _absolute_from(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute dotted module of a ``from ... import`` (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = [PACKAGE, *filter(None, importer.split("."))]
    if not is_package:
        package.pop()
    if node.level > len(package):
        raise AssertionError(f"{absolute(importer)}:{node.lineno}: relative import beyond the package")
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(importer: str, is_package: bool, node: ast.AST, known: Collection[str]) -> list[tuple[str, str | None]]:
    """(absolute module, name or None for a whole module) for each name an import statement binds."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    source = _absolute_from(importer, is_package, node)
    inside = source == PACKAGE or source.startswith(PACKAGE + ".")
    return [(f"{source}.{alias.name}", None) if inside and relative(f"{source}.{alias.name}") in known
            else (source, alias.name) for alias in node.names]  # ``from pkg import module`` names a module


def read_imports(importer: str, text: str, is_package: bool, known: Collection[str]) -> list[Import]:
    """The imports of package modules in one module's source, at any depth (functions included)."""
    tree = ast.parse(text)
    guarded = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        for dotted, name in _imported(importer, is_package, node, known):
            if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
                continue
            target = relative(dotted)
            if target not in known:
                if name is None:
                    raise AssertionError(f"{absolute(importer)}:{node.lineno}: {dotted} is not a module")
                target = _known_module(target, known)
            found.append(Import(importer, target, name, node.lineno, node.lineno in guarded))
    return found


@lru_cache(maxsize=None)
def imports() -> tuple[Import, ...]:
    """Every import of a package module by a package module."""
    return tuple(imp for importer, path in modules().items()
                 for imp in read_imports(importer, path.read_text(encoding="utf-8"), path.name == "__init__.py",
                                         modules()))


# ----- the three rules ---------------------------------------------------------------------------
def _private(word: str) -> bool:
    return word.startswith("_") and not word.startswith("__")


def private_imports() -> dict[tuple[str, ...], list[str]]:
    """Imports of another module's private name, or of a private module from outside its package."""
    found: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for imp in imports():
        if imp.name is not None and _private(imp.name) and imp.target != imp.importer:
            found[("private", imp.importer, imp.target, imp.name)].append(
                f"{imp.where}: from {absolute(imp.target)} import {imp.name}")
        parts = imp.target.split(".")
        for depth, part in enumerate(parts):
            owner = ".".join(parts[:depth])
            inside = imp.importer == owner or imp.importer.startswith(owner + ".") or owner == ""
            if _private(part) and not inside:
                found[("private", imp.importer, imp.target, "")].append(
                    f"{imp.where}: imports the private module {absolute(imp.target)} from outside {absolute(owner)}")
    return found


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the longest prefix that covers ``module``."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, layer in enumerate(LAYERS):
        for prefix in layer.prefixes:
            covers = module == prefix or (prefix != "" and module.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def upward_imports() -> dict[tuple[str, ...], list[str]]:
    found: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for imp in imports():
        low, high = layer_of(imp.importer), layer_of(imp.target)
        if low is not None and high is not None and high > low:
            found[("layer", imp.importer, imp.target)].append(
                f"{imp.where}: {imp.importer} ({LAYERS[low].name}) imports {imp.target} ({LAYERS[high].name})")
    return found


def _graph() -> dict[str, dict[str, Import]]:
    """Module -> imported module -> the first import that makes the edge (run-time imports only)."""
    graph: dict[str, dict[str, Import]] = defaultdict(dict)
    for imp in sorted(imports(), key=lambda i: (i.importer, i.line)):
        if not imp.type_checking and imp.target != imp.importer:
            graph[imp.importer].setdefault(imp.target, imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, {}):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(modules()):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle(graph: dict[str, dict[str, Import]], members: list[str]) -> list[Import]:
    """The shortest cycle inside a strongly connected component (breadth first from each member)."""
    inside, best = set(members), None
    for start in members:
        paths: dict[str, list[Import]] = {start: []}
        frontier, cycle = [start], None
        while frontier and cycle is None:
            following = []
            for node in frontier:
                for successor, imp in sorted(graph.get(node, {}).items()):
                    if successor == start and cycle is None:
                        cycle = paths[node] + [imp]
                    elif successor in inside and successor not in paths:
                        paths[successor] = paths[node] + [imp]
                        following.append(successor)
            frontier = following
        if cycle is not None and (best is None or len(cycle) < len(best)):
            best = cycle
    assert best is not None, f"no cycle among {members}"  # a strongly connected component always has one
    return best


def import_cycles() -> dict[tuple[str, ...], list[str]]:
    graph = _graph()
    found: dict[tuple[str, ...], list[str]] = {}
    for members in _strongly_connected(graph):
        chain = _shortest_cycle(graph, members)
        steps = " -> ".join(f"{imp.importer} ({imp.where})" for imp in chain) + f" -> {chain[0].importer}"
        found[("cycle", *members)] = [f"cycle among {', '.join(members)}: {steps}"]
    return found


def _unexpected(found: dict[tuple[str, ...], list[str]]) -> str:
    lines = [line for key in sorted(found) if key not in KNOWN_VIOLATIONS for line in found[key]]
    return "\n".join(lines)


# ----- tests -------------------------------------------------------------------------------------
def test_every_module_has_a_layer_and_every_prefix_a_module():
    unmapped = [module_path(m) for m in modules() if layer_of(m) is None]
    assert not unmapped, "modules without a layer (add them to LAYERS in tests/test_architecture.py):\n" + \
        "\n".join(unmapped)
    stale = [p for layer in LAYERS for p in layer.prefixes
             if not any(m == p or (p and m.startswith(p + ".")) for m in modules())]
    assert not stale, f"LAYERS names prefixes that match no module: {stale}"


def test_no_private_name_is_imported_from_another_module():
    problems = _unexpected(private_imports())
    assert not problems, "private names imported from another module (make them public where they live, " \
                         "or move them below their users):\n" + problems


def test_no_import_cycles():
    problems = _unexpected(import_cycles())
    assert not problems, "import cycles (imports inside functions included):\n" + problems


def test_no_module_imports_from_a_higher_layer():
    problems = _unexpected(upward_imports())
    assert not problems, "imports from a higher layer (see LAYERS):\n" + problems


def test_known_violations_still_occur():
    found = {**private_imports(), **import_cycles(), **upward_imports()}
    fixed = sorted(KNOWN_VIOLATIONS - set(found))
    assert not fixed, f"fixed: delete these entries from KNOWN_VIOLATIONS: {fixed}"


def test_the_reader_finds_relative_absolute_local_and_type_checking_imports():
    """What the rules are applied to, on a fixed source: every kind of import the rules are about."""
    source = "\n".join([
        "from .stats import summarise",              # 1: relative, one level
        "from ..errors import ConfigError",           # 2: relative, two levels
        "import seeinpairs.imaging",                  # 3: absolute module
        "from seeinpairs import prompts, Case",       # 4: a module and a name of the package
        "import numpy",                               # 5: not the package's
        "def load():",
        "    from ..datasets.medmnist import _cache",  # 7: inside a function, private
        "if TYPE_CHECKING:",
        "    from ..backends import base",            # 9: a module, for type checking only
    ])
    known = {"", "evaluation", "evaluation.stats", "errors", "imaging", "prompts", "datasets", "datasets.medmnist",
             "backends", "backends.base"}
    found = [(i.target, i.name, i.line, i.type_checking)
             for i in sorted(read_imports("evaluation.config", source, False, known), key=lambda i: i.line)]
    assert found == [("evaluation.stats", "summarise", 1, False), ("errors", "ConfigError", 2, False),
                     ("imaging", None, 3, False), ("prompts", None, 4, False), ("", "Case", 4, False),
                     ("datasets.medmnist", "_cache", 7, False), ("backends.base", None, 9, True)]


def test_the_layer_map_is_read_by_longest_prefix():
    assert layer_of("siteshift.experiment") > layer_of("siteshift.augment") > layer_of("cases")
    assert layer_of("") == layer_of("tasks") and layer_of("cli") == len(LAYERS) - 1
    assert layer_of("cli.mim") == len(LAYERS) - 1 and layer_of("evaluation.runner") == layer_of("evaluation")


#: the backend classes and their constructors: only backends/ builds a backend directly
BACKEND_CONSTRUCTORS = ("HFBackend", "OpenAICompatBackend", "from_components", "from_config")


def direct_backend_constructions(sources: dict[str, str]) -> list[str]:
    """``module:line`` of each call of a backend class or constructor in a module outside ``backends``."""
    found = []
    for module, text in sources.items():
        if module == "backends" or module.startswith("backends."):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in BACKEND_CONSTRUCTORS:
                    found.append(f"{module}:{node.lineno}: {name}(...)")
    return found


def test_backends_are_built_only_through_the_backends_package_doors():
    """``create_backend(model_config)`` (or ``loaded_backend`` for weights in memory) everywhere else."""
    sources = {module: path.read_text(encoding="utf-8") for module, path in modules().items()}
    found = direct_backend_constructions(sources)
    assert not found, "backends built outside backends/ (use create_backend or loaded_backend):\n" + "\n".join(found)
    planted = {"serve.x": "from ..backends.hf import HFBackend\nb = HFBackend('m')\n"
                          "c = HFBackend.from_components(m, p)\n"}
    assert len(direct_backend_constructions(planted)) == 2
