"""Read, validate and write multi-image medical QA files in the Med-MIM layout.

A file is a JSON list of items ``{"id", "images", "conversation", "source"}``.
``conversation`` is ``[{"role": "user", "content": ...}, {"role": "assistant",
"content": ...}]``; the LLaVA style ``conversations: [{"from", "value"}]`` is
read too. The user text holds one ``<image>`` per image (image i is path i,
usually all at the start); a multiple-choice item ends with option lines
``\\nA: text`` and its answer is ``"C: option text"``. Without option lines an
item is open-ended.

Ids are not unique in the published files, so an item is keyed by
``(file name, index)``. What an item tests comes from the file name
(``*_benchmark_Held_in_Temporal.json``, ``*_benchmark_Held_out_ODIR.json``,
``*_train_inherent_Comparison.json``) and which data set its images come from
from the ``source`` prefix (``MS_CXR_T_``, ``EMBED_``, ...); image roots are
configured per data set because the images themselves come from separately
licensed collections.

Every problem is one :class:`MimFormatError` line naming the file, the item
index and id, the field and what is wrong. Images are opened only when a
prompt is built (:meth:`MimDataset.images`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from ..atomic import atomic_write_text
from ..errors import ImageError, SeeInPairsError
from ..imaging import load_image

IMAGE_TOKEN = "<image>"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: held-in and training files name one of these abilities
ABILITIES = ("temporal", "reasoning", "comparison", "coreference")
#: source-id prefixes of the data sets Med-MIM draws from (longest match wins; roots are keyed by these)
KNOWN_DATASETS = ("MS_CXR_T", "EMBED", "LUMIERE", "VQA_ODIR", "VQA_RAD")
#: the key of ``image_roots`` used for data sets without their own root
DEFAULT_ROOT = "*"

_KIND = re.compile(r"^(?P<prefix>.+?)_(?P<split>benchmark_Held_in|benchmark_Held_out|train_inherent)_"
                   r"(?P<subset>[A-Za-z0-9]+)\.json$")
_SPLITS = {"benchmark_Held_in": "held_in", "benchmark_Held_out": "held_out", "train_inherent": "train"}
_OPTION = re.compile(r"^([A-Z]):\s?(.*?)\s*$")
_ANSWER = re.compile(r"^\s*([A-Z])\s*[:.)]\s*(.*?)\s*$", re.DOTALL)

Split = Literal["held_in", "held_out", "train"]


class MimFormatError(SeeInPairsError):
    """A multi-image QA file, item or image is invalid (one line: file, item, field, problem)."""


def _where(file: str, index: int | None = None, item_id: Any = None, field_name: str | None = None) -> str:
    text = file
    if index is not None:
        text += f": item {index}" + (f" (id {item_id})" if item_id not in (None, "") else "")
    if field_name:
        text += f": field '{field_name}'"
    return text


@dataclass(frozen=True)
class FileKind:
    """What a file holds: its split (held-in benchmark, held-out benchmark, training) and subset
    (an ability for held-in and training files, the held-out set's name otherwise)."""

    split: Split
    subset: str

    @property
    def ability(self) -> str:
        """The ability tested (held-out sets are reported under their own name)."""
        return self.subset

    def file_name(self, prefix: str = "Med_MIM") -> str:
        """The conventional file name of this kind, e.g. ``Med_MIM_benchmark_Held_in_Temporal.json``."""
        split = {v: k for k, v in _SPLITS.items()}[self.split]
        subset = self.subset.capitalize() if self.subset in ABILITIES else self.subset.upper()
        return f"{prefix}_{split}_{subset}.json"


def file_kind(path: str | Path) -> FileKind:
    """The kind of a Med-MIM-style file from its name; an unknown name is a :class:`MimFormatError`."""
    name = Path(path).name
    match = _KIND.match(name)
    if not match:
        raise MimFormatError(f"{name}: unknown file kind (expected <prefix>_benchmark_Held_in_<Ability>.json, "
                             f"<prefix>_benchmark_Held_out_<Set>.json or <prefix>_train_inherent_<Ability>.json)")
    split = _SPLITS[match["split"]]
    subset = match["subset"].lower()
    if split != "held_out" and subset not in ABILITIES:
        raise MimFormatError(f"{name}: unknown ability '{match['subset']}' "
                             f"(known: {', '.join(a.capitalize() for a in ABILITIES)})")
    return FileKind(split, subset)  # type: ignore[arg-type]


def source_dataset(source: str, extra: Iterable[str] = ()) -> str:
    """The data set an item's images come from: the longest known prefix of ``source``
    (``MS_CXR_T_0012`` -> ``MS_CXR_T``), else ``source`` without its last ``_`` part."""
    for prefix in sorted({*KNOWN_DATASETS, *(e for e in extra if e != DEFAULT_ROOT)}, key=len, reverse=True):
        if source == prefix or source.startswith(prefix + "_"):
            return prefix
    return source.rsplit("_", 1)[0] if "_" in source else source


def split_options(text: str) -> tuple[str, list[str]]:
    """``(stem, option texts)``: trailing ``A: ...`` lines of a user text, letters A, B, C... in order.

    Trailing spaces and a missing final newline are tolerated. Lines that look like options but
    skip or repeat a letter raise ``ValueError`` (the caller names the item).
    """
    lines = text.rstrip().split("\n")
    found: list[tuple[str, str]] = []
    while lines and (match := _OPTION.match(lines[-1].strip())):
        found.append((match[1], match[2]))
        lines.pop()
    found.reverse()
    if not found:
        return text.rstrip(), []
    letters = "".join(letter for letter, _ in found)
    if letters != LETTERS[:len(found)]:
        raise ValueError(f"option letters {', '.join(letters)} are not A, B, C... in order")
    if len(found) < 2:
        raise ValueError("a multiple-choice item needs at least 2 options")
    return "\n".join(lines).rstrip(), [option for _, option in found]


def compose_user_text(question: str, n_images: int, options: Sequence[str] = ()) -> str:
    """The user text of a new item: the image placeholders, the question, then ``\\nA: ...`` lines."""
    return IMAGE_TOKEN * n_images + question.strip() + "".join(f"\n{LETTERS[i]}: {o}" for i, o in enumerate(options))


def answer_text(options: Sequence[str], gold: int) -> str:
    """A multiple-choice answer as Med-MIM writes it: ``"C: option text"``."""
    return f"{LETTERS[gold]}: {options[gold]}"


@dataclass(frozen=True)
class MimItem:
    """One question over several images. ``key`` = (file, index) identifies it; ``id`` need not.

    ``options`` are the option texts (A, B, ... by position) and ``gold`` the index of the right
    one; an open-ended item has no options and ``gold`` None. ``images`` are paths relative to
    the image root of the item's ``dataset``.
    """

    file: str
    index: int
    id: str
    images: tuple[str, ...]
    user_text: str
    answer: str
    source: str
    dataset: str
    split: str
    subset: str
    options: tuple[str, ...] = ()
    gold: int | None = None
    style: Literal["conversation", "conversations"] = "conversation"
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return (self.file, self.index)

    @property
    def uid(self) -> str:
        """A unique string key: ``file#index``."""
        return f"{self.file}#{self.index}"

    @property
    def multiple_choice(self) -> bool:
        return bool(self.options)

    @property
    def option_answers(self) -> list[str]:
        """The options written as answers (``"A: text"``): what option scoring compares."""
        return [answer_text(self.options, i) for i in range(len(self.options))]

    @property
    def gold_answer(self) -> str:
        """The gold answer in canonical form (``"C: text"`` for multiple choice, else as given)."""
        return answer_text(self.options, self.gold) if self.gold is not None else self.answer

    @property
    def chance(self) -> float | None:
        return 1.0 / len(self.options) if self.options else None

    def to_json(self) -> dict[str, Any]:
        """The item in the file layout (the style it was read in)."""
        if self.style == "conversations":
            turns = [{"from": "human", "value": self.user_text}, {"from": "gpt", "value": self.answer}]
        else:
            turns = [{"role": "user", "content": self.user_text}, {"role": "assistant", "content": self.answer}]
        return {"id": self.id, "images": list(self.images), self.style: turns, "source": self.source}


_USER_ROLES = {"user", "human"}
_ASSISTANT_ROLES = {"assistant", "gpt"}


def _turns(raw: dict, where: Any) -> tuple[str, str, str]:
    """(user text, assistant text, style) of an item in either conversation style."""
    if "conversation" in raw:
        style, turns, role_key, text_key = "conversation", raw["conversation"], "role", "content"
    elif "conversations" in raw:
        style, turns, role_key, text_key = "conversations", raw["conversations"], "from", "value"
    else:
        raise MimFormatError(f"{where('conversation')}: missing (neither 'conversation' nor 'conversations')")
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns):
        raise MimFormatError(f"{where(style)}: expected a list of a user turn and an assistant turn")
    user, assistant = turns[0], turns[1]
    if str(user.get(role_key, "")).lower() not in _USER_ROLES:
        raise MimFormatError(f"{where(style)}: the first turn's '{role_key}' must be user, got {user.get(role_key)!r}")
    if str(assistant.get(role_key, "")).lower() not in _ASSISTANT_ROLES:
        raise MimFormatError(f"{where(style)}: the second turn's '{role_key}' must be assistant, "
                             f"got {assistant.get(role_key)!r}")
    if not isinstance(user.get(text_key), str) or not isinstance(assistant.get(text_key), str):
        raise MimFormatError(f"{where(style)}: each turn needs a text '{text_key}'")
    return user[text_key], assistant[text_key], style


def parse_item(raw: Any, file: str, index: int, kind: FileKind, roots: Iterable[str] = ()) -> MimItem:
    """One validated item; every problem is a :class:`MimFormatError` naming file, item and field."""
    item_id = raw.get("id") if isinstance(raw, dict) else None

    def where(field_name: str | None = None) -> str:
        return _where(file, index, item_id, field_name)

    if not isinstance(raw, dict):
        raise MimFormatError(f"{where()}: expected an object, got {type(raw).__name__}")
    if "id" not in raw:
        raise MimFormatError(f"{where('id')}: missing")
    images = raw.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        raise MimFormatError(f"{where('images')}: expected a non-empty list of relative paths")
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        raise MimFormatError(f"{where('source')}: expected a non-empty string")
    user, answer, style = _turns(raw, where)
    placeholders = user.count(IMAGE_TOKEN)
    if placeholders != len(images):
        raise MimFormatError(f"{where(style)}: {placeholders} {IMAGE_TOKEN} placeholder(s) but {len(images)} image(s)")
    try:
        _, options = split_options(user)
    except ValueError as exc:
        raise MimFormatError(f"{where(style)}: malformed options: {exc}") from None
    gold = None
    if options:
        match = _ANSWER.match(answer)
        if not match:
            raise MimFormatError(f"{where(style)}: malformed options: the answer {answer[:40]!r} does not start "
                                 f"with an option letter (expected e.g. 'A: {options[0][:20]}')")
        gold = LETTERS.index(match[1])
        if gold >= len(options):
            raise MimFormatError(f"{where(style)}: malformed options: the answer letter {match[1]} is not among "
                                 f"the options A-{LETTERS[len(options) - 1]}")
    return MimItem(file=file, index=index, id=str(item_id), images=tuple(images), user_text=user, answer=answer,
                   source=source, dataset=source_dataset(source, roots), split=kind.split, subset=kind.subset,
                   options=tuple(options), gold=gold, style=style)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SkippedItem:
    """An item left out of a file because it is malformed (its one-line problem is ``reason``)."""

    file: str
    index: int
    id: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "index": self.index, "id": self.id, "reason": self.reason}


def read_mim_file(path: str | Path, kind: FileKind | None = None,
                  roots: Iterable[str] = ()) -> tuple[list[MimItem], list[SkippedItem]]:
    """The valid items of one file and the malformed ones, each with its reason.

    Published files carry a few noisy items (an empty option line, a missing answer letter);
    one of them should not make the other hundreds unusable. A file that cannot be read at all
    (not JSON, not a list, unknown kind) is still an error.
    """
    path = Path(path)
    kind = kind or file_kind(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MimFormatError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MimFormatError(f"{path}: cannot read ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise MimFormatError(f"{path.name}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, list):
        raise MimFormatError(f"{path.name}: expected a JSON list of items, got {type(data).__name__}")
    roots = list(roots)
    items: list[MimItem] = []
    skipped: list[SkippedItem] = []
    for index, raw in enumerate(data):
        try:
            items.append(parse_item(raw, path.name, index, kind, roots))
        except MimFormatError as exc:
            item_id = raw.get("id") if isinstance(raw, dict) else None
            skipped.append(SkippedItem(path.name, index, "" if item_id is None else str(item_id), str(exc)))
    return items, skipped


def load_mim_file(path: str | Path, kind: FileKind | None = None, roots: Iterable[str] = ()) -> list[MimItem]:
    """All items of one file, validated (structure, placeholders, options); images are not opened.

    Strict: the first malformed item is a :class:`MimFormatError` (:func:`read_mim_file` skips
    them instead). ``kind`` overrides what the file name says; ``roots`` are extra data-set names
    (the keys of the image roots) recognised as source prefixes.
    """
    items, skipped = read_mim_file(path, kind, roots)
    if skipped:
        raise MimFormatError(skipped[0].reason)
    return items


def check_root_names(roots: Iterable[str], items: Iterable[MimItem]) -> None:
    """Every image root named by the user is a Med-MIM data set or the data set of some item.

    A misspelt name would otherwise be ignored silently and the images looked for elsewhere.
    Give all the items read with the same roots (e.g. training and validation files together).
    """
    present = sorted({item.dataset for item in items})
    for name in roots:
        if name != DEFAULT_ROOT and name not in present and name not in KNOWN_DATASETS:
            raise MimFormatError(f"image root '{name}': no item's source is in that data set (data sets in "
                                 f"these files: {', '.join(present) or 'none'}; the Med-MIM release uses "
                                 f"{', '.join(KNOWN_DATASETS)}; '{DEFAULT_ROOT}' is the root for any data set)")


def write_mim_file(items: Sequence[MimItem], path: str | Path) -> Path:
    """Write items in the file layout (each in the conversation style it carries)."""
    return atomic_write_text(path, json.dumps([item.to_json() for item in items], indent=1, ensure_ascii=False) + "\n")


class MimDataset:
    """Items of one or several files with their image roots; images are read when asked for.

    ``image_roots`` maps data-set names (``MS_CXR_T``, ``VQA_ODIR``, ... or a generated set's name)
    to folders; ``"*"`` is the root for any other data set. Without a matching root, an item's
    images are looked up beside its JSON file.
    """

    def __init__(self, items: Sequence[MimItem], image_roots: Mapping[str, str | Path] | None = None,
                 file_dirs: Mapping[str, Path] | None = None, cache_size: int = 4096,
                 skipped: Sequence[SkippedItem] = ()) -> None:
        self.items = list(items)
        #: malformed items left out when the files were read (reported with the results)
        self.skipped = list(skipped)
        self._load = lru_cache(maxsize=cache_size)(load_image) if cache_size else load_image
        self.image_roots = {k: Path(v) for k, v in (image_roots or {}).items()}
        self.file_dirs = dict(file_dirs or {})
        keys = [item.key for item in self.items]
        if len(set(keys)) != len(keys):
            raise MimFormatError("the same (file, index) occurs twice: a file was given twice")

    @classmethod
    def load(cls, paths: Sequence[str | Path] | str | Path, image_roots: Mapping[str, str | Path] | None = None,
             kind: FileKind | None = None, check_images: Literal["none", "exists", "open"] = "exists",
             strict: bool = True) -> MimDataset:
        """Load and validate files; ``check_images`` checks every image exists (default) or opens it.

        ``strict``: the first malformed item is an error; otherwise malformed items are left out
        and listed in :attr:`skipped`.
        """
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        items: list[MimItem] = []
        skipped: list[SkippedItem] = []
        dirs: dict[str, Path] = {}
        for path in paths:
            path = Path(path)
            file_items, file_skipped = read_mim_file(path, kind, roots=(image_roots or {}).keys())
            if strict and file_skipped:
                raise MimFormatError(file_skipped[0].reason)
            items.extend(file_items)
            skipped.extend(file_skipped)
            dirs[path.name] = path.resolve().parent
        dataset = cls(items, image_roots, dirs, skipped=skipped)
        if check_images != "none":
            dataset.check_images(opened=check_images == "open")
        return dataset

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[MimItem]:
        return iter(self.items)

    def root(self, item: MimItem) -> Path:
        if item.dataset in self.image_roots:
            return self.image_roots[item.dataset]
        if DEFAULT_ROOT in self.image_roots:
            return self.image_roots[DEFAULT_ROOT]
        return self.file_dirs.get(item.file, Path("."))

    def image_paths(self, item: MimItem) -> list[Path]:
        root = self.root(item)
        return [root / relative for relative in item.images]

    def check_images(self, opened: bool = False) -> None:
        """Every image exists (and, with ``opened``, decodes); the first problem is one error line."""
        for problem in self.image_problems(opened):
            raise MimFormatError(problem)

    def image_problems(self, opened: bool = False) -> Iterator[str]:
        """One line per missing (or, with ``opened``, undecodable) image, naming item and field."""
        for item in self.items:
            for position, path in enumerate(self.image_paths(item)):
                where = _where(item.file, item.index, item.id, f"images[{position}]")
                if not path.is_file():
                    yield f"{where}: image not found: {path}"
                elif opened:
                    try:
                        with Image.open(path) as handle:
                            handle.verify()
                    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                        yield f"{where}: corrupt image {path} ({type(exc).__name__})"

    def images(self, item: MimItem) -> list[Image.Image]:
        """The item's images as RGB, in order (read now, not at load time; the last ``cache_size``
        decoded images are kept, since training and evaluation revisit the same files)."""
        out = []
        for position, path in enumerate(self.image_paths(item)):
            try:
                out.append(self._load(str(path)))
            except ImageError as exc:
                raise MimFormatError(f"{_where(item.file, item.index, item.id, f'images[{position}]')}: {exc}") from None
        return out

    def subset(self, predicate) -> MimDataset:
        """The items for which ``predicate(item)`` holds, with the same roots."""
        return MimDataset([i for i in self.items if predicate(i)], self.image_roots, self.file_dirs,
                          skipped=self.skipped)

    def with_items(self, items: Sequence[MimItem]) -> MimDataset:
        return MimDataset(items, self.image_roots, self.file_dirs, skipped=self.skipped)


def relocated(item: MimItem, **changes: Any) -> MimItem:
    """A copy of ``item`` with fields changed (e.g. a new file name and index when merging files)."""
    return replace(item, **changes)
