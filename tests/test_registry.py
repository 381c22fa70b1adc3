"""The registry convention: the Registry class itself, and one contract every registry of the package keeps."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from seeinpairs.errors import RegistryError
from seeinpairs.registry import Registry, registries, resolve_reference

SRC = Path(__file__).resolve().parents[1] / "src" / "seeinpairs"
REGISTRIES = registries()


# ---------------------------------------------------------------------------
# the contract, over every registry


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.kind)
def test_every_registry_keeps_the_contract(registry: Registry):
    names = registry.list_names()
    assert names and names == sorted(set(names))
    for name in names:
        target = registry.get(name)  # a lazy entry imports here, and is type-checked
        assert target is registry.get(name)
        description = registry.describe(name)
        assert description.strip() and "\n" not in description and "``" not in description, (name, description)
    with pytest.raises(RegistryError, match="registered twice"):
        registry.register(names[0], registry.get(names[0]))
    with pytest.raises(RegistryError) as excinfo:
        registry.create("no-such-entry")
    message = str(excinfo.value)
    assert "\n" not in message and f"unknown {registry.kind} 'no-such-entry'" in message
    assert all(name in message for name in names)


def test_registries_lists_every_registry_of_the_package():
    """Every ``NAME ... = Registry(...)`` in the source is in :func:`registries`, so listings miss none."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(("seeinpairs", *path.relative_to(SRC).with_suffix("").parts))
        for name in re.findall(r"^([A-Z_]+)(?::[^=\n]*)? = Registry\(", path.read_text(), flags=re.M):
            found.append(f"{module}:{name}")
    assert len(found) >= 14
    listed = {id(registry) for registry in REGISTRIES}
    assert [ref for ref in found if id(resolve_reference(ref)) not in listed] == []
    kinds = [registry.kind for registry in REGISTRIES]
    assert kinds == sorted(set(kinds))


# ---------------------------------------------------------------------------
# the Registry class


class Base:
    """A base."""

    name = "base"


def test_decorator_registers_and_returns_the_target_with_its_first_sentence_as_description():
    registry: Registry[Base] = Registry("thing", expects=Base)

    @registry.register("a")
    class A(Base):
        """Does ``a`` things. More detail
        that is not shown."""

    assert registry.get("a") is A and isinstance(registry.create("a"), A)
    assert registry.describe("a") == "Does a things."
    assert "a" in registry and "b" not in registry
    registry.register("b", A, description="given")
    assert registry.describe("b") == "given"
    assert registry.list_names() == ["a", "b"] and registry.list_names("b*") == ["b"]


def test_create_passes_arguments_and_unknown_names_are_one_line_errors_listing_the_known_ones():
    registry: Registry[int] = Registry("adder")
    registry.register("plus", lambda a, b=0: a + b, description="adds")
    assert registry.create("plus", 1, b=2) == 3
    with pytest.raises(RegistryError, match=r"^unknown adder 'minus' \(known: plus\)$"):
        registry.create("minus")
    with pytest.raises(RegistryError, match=r"known: none"):
        Registry("empty").get("x")
    with pytest.raises(RegistryError, match="unknown adder 'minus'"):
        registry.describe("minus")


def test_duplicates_and_entries_of_the_wrong_kind_are_refused():
    registry: Registry[Base] = Registry("thing", expects=Base, name_attribute="name")

    class Named(Base):
        """Named."""

        name = "named"

    registry.register("named", Named)
    with pytest.raises(RegistryError, match="thing 'named' is registered twice"):
        registry.register("named", Named)
    with pytest.raises(RegistryError, match="thing 'other': .*Named has name 'named', not 'other'"):
        registry.register("other", Named)
    with pytest.raises(RegistryError, match="thing 'int': int is not a Base"):
        registry.register("int", int, description="not a Base")
    with pytest.raises(RegistryError, match="is not callable"):
        Registry("factory").register("three", 3, description="a number")
    with pytest.raises(RegistryError, match="no description"):
        Registry("factory").register("anonymous", lambda: None)
    assert registry.list_names() == ["named"]  # nothing refused was kept


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """A module on the path that no one has imported yet."""
    name = "registry_lazy_probe"
    (tmp_path / f"{name}.py").write_text("class Thing:\n    name = 'thing'\n\n\ndef make():\n    return 7\n\n\nNUMBER = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_lazy_entries_import_on_first_get_only(lazy_module):
    registry: Registry[int] = Registry("maker")
    registry.register("seven", f"{lazy_module}:make", description="makes seven")
    assert registry.list_names() == ["seven"] and registry.describe("seven") == "makes seven"
    assert lazy_module not in sys.modules  # listing and describing import nothing
    assert registry.create("seven") == 7
    assert lazy_module in sys.modules and registry.get("seven") is sys.modules[lazy_module].make


def test_lazy_entries_are_checked(lazy_module):
    registry: Registry[int] = Registry("maker")
    with pytest.raises(RegistryError, match="needs a description"):
        registry.register("x", f"{lazy_module}:make")
    for bad in ("no_colon", ":make", f"{lazy_module}:", f"{lazy_module}:not-a-name"):
        with pytest.raises(RegistryError, match="is not a 'module:attr' reference"):
            registry.register("x", bad, description="bad")
    registry.register("missing", f"{lazy_module}:absent", description="absent")
    with pytest.raises(RegistryError, match=f"module '{lazy_module}' has no 'absent'"):
        registry.get("missing")
    registry.register("number", f"{lazy_module}:NUMBER", description="not callable")
    with pytest.raises(RegistryError, match="maker 'number': int is not callable"):
        registry.get("number")
    typed: Registry[Base] = Registry("thing", expects=Base)
    typed.register("thing", f"{lazy_module}:Thing", description="not a Base")
    with pytest.raises(RegistryError, match="thing 'thing': Thing is not a Base"):
        typed.get("thing")


def test_an_object_entry_is_described_by_its_description_attribute():
    class Spec:
        description = "A spec. With more."

        def __call__(self) -> int:
            return 1

    registry: Registry[int] = Registry("spec", expects=Spec)
    registry.register("one", Spec())
    assert registry.describe("one") == "A spec." and registry.create("one") == 1
