"""Multi-image questions generated from any case table, written in the Med-MIM layout.

One generator per ability is registered in :data:`QA_GENERATORS`; each draws
*drafts* (images, question, the right option, distractors, a one-sentence
open-ended answer) from the cases of one split, and :func:`generate_qa` turns
drafts into items: the right option's letter cycles through a seeded
permutation of the positions (so letters are balanced), distractors are
shuffled into the other places, and a seeded fraction of items is open-ended.

Ground truth comes from table columns (names in :class:`QAGenConfig`):
``label`` (abnormal or not), ``patient_id``, and in ``extra`` a study order
(``study``), a view (``view``), a finding size (``lesion_size``, 0 = none) and a
grade (``grade``). A generator skips what the table cannot support (e.g. no
temporal items without several studies per patient) and the summary says so.

Items of one split use only that split's cases, so no patient is shared
between training and test items. Everything is deterministic per seed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..cases import Case, stable_digest
from ..errors import ConfigError
from ..registry import Registry
from .format import (
    ABILITIES,
    FileKind,
    MimItem,
    answer_text,
    compose_user_text,
    relocated,
    write_mim_file,
)

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh")
CHANGES = ("new", "progressed", "stable", "improved", "resolved")
CHANGE_SENTENCES = {"new": "The {finding} is new.", "progressed": "The {finding} has progressed.",
                    "stable": "The {finding} is stable.", "improved": "The {finding} has improved.",
                    "resolved": "The {finding} has resolved."}


@dataclass
class QAGenConfig:
    """What to generate and which table columns hold the ground truth."""

    #: items per ability and split, e.g. ``{"train": 400, "val": 40, "test": 120}``
    n_items: dict[str, int] = field(default_factory=lambda: {"train": 400, "val": 40, "test": 120})
    abilities: tuple[str, ...] = ABILITIES
    finding: str = "opacity"
    healthy_class: str = "normal"
    study_column: str = "study"
    view_column: str = "view"
    size_column: str = "lesion_size"
    grade_column: str = "grade"
    #: grades in order; the reasoning options
    grades: tuple[str, ...] = ("none", "small", "medium", "large")
    #: the view used for single-view questions (None: any)
    primary_view: str | None = "frontal"
    #: name of the generated data set: the ``source`` prefix and the image-root key
    dataset: str = "SYNTH_SERIES"
    #: file name prefix (``<prefix>_benchmark_Held_in_Temporal.json``)
    prefix: str = "seeinpairs"
    #: when set, test items of all abilities go to one held-out file ``<prefix>_benchmark_Held_out_<NAME>.json``
    #: (as Med-MIM's ODIR and RAD sets), e.g. for a table from another site or data set
    held_out: str | None = None
    #: share of items asked open-ended (no options; answered by a sentence)
    open_fraction: float = 0.1
    #: a larger/smaller comparison needs sizes differing by at least this factor
    min_size_ratio: float = 1.3
    #: relative size change below which two findings count as stable
    stable_tolerance: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [a for a in self.abilities if a not in QA_GENERATORS]
        if unknown:
            raise ConfigError(f"field 'abilities': unknown {unknown} (known: {', '.join(QA_GENERATORS.list_names())})")
        if not 0 <= self.open_fraction <= 1:
            raise ConfigError("field 'open_fraction': must be within 0..1")


@dataclass
class Draft:
    """A question before its options are lettered: ``right`` is the correct option text."""

    images: list[Case]
    question: str
    right: str
    wrong: list[str]
    sentence: str
    kind: str


class CaseIndex:
    """The cases of one split, grouped the ways the generators need."""

    def __init__(self, cases: Iterable[Case], config: QAGenConfig) -> None:
        self.config = config
        self.cases = sorted(cases, key=lambda c: c.case_id)
        view = config.primary_view
        self.single = [c for c in self.cases if view is None or str(c.extra.get(config.view_column, view)) == view]
        self.by_patient: dict[str, list[Case]] = defaultdict(list)
        for case in self.single:
            self.by_patient[case.patient].append(case)
        for series in self.by_patient.values():
            series.sort(key=lambda c: (self.study(c), c.case_id))
        self.patients = sorted(self.by_patient)
        self.abnormal = [c for c in self.single if self.is_abnormal(c)]
        self.normal = [c for c in self.single if not self.is_abnormal(c)]
        self.studies: dict[tuple[str, float], dict[str, Case]] = defaultdict(dict)
        for case in self.cases:
            if config.view_column in case.extra:
                self.studies[(case.patient, self.study(case))][str(case.extra[config.view_column])] = case

    def study(self, case: Case) -> float:
        return float(case.extra.get(self.config.study_column, 0) or 0)

    def size(self, case: Case) -> float:
        value = case.extra.get(self.config.size_column)
        if value in (None, ""):
            return float("nan")
        return float(value)

    def is_abnormal(self, case: Case) -> bool:
        return case.label is not None and str(case.label) != self.config.healthy_class


def _pick(rng: np.random.Generator, pool: Sequence[Case], n: int, exclude_patients: set[str]) -> list[Case] | None:
    """``n`` cases of distinct patients not in ``exclude_patients`` (None when impossible)."""
    chosen: list[Case] = []
    used = set(exclude_patients)
    for i in rng.permutation(len(pool)):
        case = pool[int(i)]
        if case.patient not in used:
            chosen.append(case)
            used.add(case.patient)
            if len(chosen) == n:
                return chosen
    return None


def _position_options(n: int) -> list[str]:
    return [f"the {ORDINALS[i]} image" for i in range(n)]


Generator = Callable[[CaseIndex, np.random.Generator], Draft | None]
QA_GENERATORS: Registry[list[Generator]] = Registry("multi-image QA ability")


# ----- co-reference: which image shows X ---------------------------------------------------------------
def _which_abnormal(index: CaseIndex, rng: np.random.Generator) -> Draft | None:
    n = int(rng.integers(2, 4))
    odd = _pick(rng, index.abnormal, 1, set())
    rest = odd and _pick(rng, index.normal, n - 1, {odd[0].patient})
    if not odd or not rest:
        return None
    position = int(rng.integers(n))
    images = rest[:position] + odd + rest[position:]
    options = _position_options(n)
    finding = index.config.finding
    return Draft(images, f"Which image shows an abnormal {finding}?", options[position],
                 [o for o in options if o != options[position]],
                 f"The {ORDINALS[position]} image shows an abnormal {finding}.", "which_abnormal")


def _same_patient(index: CaseIndex, rng: np.random.Generator) -> Draft | None:
    multi = [p for p in index.patients if len(index.by_patient[p]) >= 2]
    if not multi:
        return None
    patient = multi[int(rng.integers(len(multi)))]
    first, match = (index.by_patient[patient][int(i)] for i in rng.choice(len(index.by_patient[patient]), 2, replace=False))
    others = _pick(rng, index.single, 1, {patient})
    if not others:
        return None
    position = int(rng.integers(2))  # among the second and third images
    images = [first] + ([match, others[0]] if position == 0 else [others[0], match])
    options = ["the second image", "the third image"]
    return Draft(images, "Which of the other images is from the same patient as the first image?",
                 options[position], [options[1 - position]],
                 f"The {ORDINALS[position + 1]} image is from the same patient as the first image.", "same_patient")


@QA_GENERATORS.register("coreference")
def _coreference() -> list[Generator]:
    """Which image shows an abnormal finding; which image is from the same patient."""
    return [_which_abnormal, _same_patient]


# ----- comparison: which is normal; larger or smaller -------------------------------------------------
def _which_normal(index: CaseIndex, rng: np.random.Generator) -> Draft | None:
    n = int(rng.integers(2, 4))
    odd = _pick(rng, index.normal, 1, set())
    rest = odd and _pick(rng, index.abnormal, n - 1, {odd[0].patient})
    if not odd or not rest:
        return None
    position = int(rng.integers(n))
    images = rest[:position] + odd + rest[position:]
    options = _position_options(n)
    return Draft(images, "Which image is normal?", options[position], [o for o in options if o != options[position]],
                 f"The {ORDINALS[position]} image is normal.", "which_normal")


def _larger(index: CaseIndex, rng: np.random.Generator) -> Draft | None:
    sized = [c for c in index.abnormal if index.size(c) > 0]
    for _ in range(20):
        pair = _pick(rng, sized, 2, set())
        if not pair:
            return None
        a, b = (index.size(c) for c in pair)
        if max(a, b) >= index.config.min_size_ratio * min(a, b):
            break
    else:
        return None
    larger = 0 if a > b else 1
    word = "larger" if rng.random() < 0.5 else "smaller"
    right = larger if word == "larger" else 1 - larger
    options = _position_options(2)
    finding = index.config.finding
    return Draft(pair, f"In which image is the {finding} {word}?", options[right], [options[1 - right]],
                 f"The {finding} is {word} in the {ORDINALS[right]} image.", f"{word}")


@QA_GENERATORS.register("comparison")
def _comparison() -> list[Generator]:
    """Which image is normal; which finding is larger or smaller."""
    return [_which_normal, _larger]


# ----- temporal: earlier and later studies of one patient ---------------------------------------------
def change_between(before: float, after: float, tolerance: float) -> str | None:
    """new / progressed / stable / improved / resolved from two finding sizes (None: absent in both)."""
    if before <= 0 and after <= 0:
        return None
    if before <= 0:
        return "new"
    if after <= 0:
        return "resolved"
    if abs(after - before) <= tolerance * before:
        return "stable"
    return "progressed" if after > before else "improved"


def _change(index: CaseIndex, rng: np.random.Generator) -> Draft | None:
    tolerance = index.config.stable_tolerance
    candidates = []
    for patient in index.patients:
        series = index.by_patient[patient]
        for i in range(len(series)):
            for j in range(i + 1, len(series)):
                change = change_between(index.size(series[i]), index.size(series[j]), tolerance)
                if change is not None and index.study(series[i]) < index.study(series[j]):
                    candidates.append((series[i], series[j], change))
    if not candidates:
        return None
    # draw the change category first, so the five answers are about equally frequent
    by_change = defaultdict(list)
    for before, after, change in candidates:
        by_change[change].append((before, after))
    present = sorted(by_change)
    change = present[int(rng.integers(len(present)))]
    before, after = by_change[change][int(rng.integers(len(by_change[change])))]
    finding = index.config.finding
    question = (f"The two images are studies of the same patient, the first earlier and the second later. "
                f"How has the {finding} changed?")
    return Draft([before, after], question, change, [c for c in CHANGES if c != change],
                 CHANGE_SENTENCES[change].format(finding=finding), "change")


@QA_GENERATORS.register("temporal")
def _temporal() -> list[Generator]:
    """How a finding changed between a patient's earlier and later studies."""
    return [_change]


# ----- reasoning: two views and the patient's details to a graded answer ------------------------------
def _grade(index: CaseIndex, rng: np.random.Generator) -> Draft | None:
    config = index.config
    pairs = [(views, key) for key, views in sorted(index.studies.items()) if len(views) >= 2]
    if not pairs:
        return None
    by_grade = defaultdict(list)
    for views, key in pairs:
        first = min(views)
        grade = str(views[first].extra.get(config.grade_column, ""))
        if grade in config.grades:
            by_grade[grade].append(views)
    if not by_grade:
        return None
    present = sorted(by_grade)
    grade = present[int(rng.integers(len(present)))]
    views = by_grade[grade][int(rng.integers(len(by_grade[grade])))]
    names = sorted(views)[:2]
    cases = [views[name] for name in names]
    case = cases[0]
    who = f"A {int(case.age)}-year-old {'woman' if case.sex == 'F' else 'man'}" if case.age is not None else "A patient"
    question = (f"{who}: the first image is the {names[0]} view and the second the {names[1]} view of one study. "
                f"Using both views, how large is the {config.finding}?")
    sentence = (f"There is no {config.finding}." if grade == config.grades[0]
                else f"The {config.finding} is {grade}.")
    return Draft(cases, question, grade, [g for g in config.grades if g != grade], sentence, "grade")


@QA_GENERATORS.register("reasoning")
def _reasoning() -> list[Generator]:
    """Two views and the patient's details to a graded answer."""
    return [_grade]


# ----- assembly -----------------------------------------------------------------------------------------
#: which file each split goes to: test items form the held-in benchmark, train and val items training files
_SPLIT_KIND = {"train": "train", "val": "train", "test": "held_in"}


@dataclass
class GeneratedQA:
    """What :func:`generate_qa` wrote: files by split, item counts, skipped abilities, patients per split."""

    files: dict[str, list[Path]]
    counts: dict[str, dict[str, int]]
    skipped: dict[str, dict[str, str]]
    patients: dict[str, list[str]]


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        raise ConfigError(f"image {path} is not under the image root {root}") from None


def make_items(drafts: Sequence[Draft], config: QAGenConfig, kind: FileKind, file: str, image_root: Path,
               rng: np.random.Generator, source_tag: str) -> list[MimItem]:
    """Letter the drafts' options (balanced, shuffled) and turn them into items."""
    counters: dict[int, int] = defaultdict(int)
    cycles: dict[int, np.ndarray] = {}
    items = []
    for i, draft in enumerate(drafts):
        n_images = len(draft.images)
        opened = rng.random() < config.open_fraction
        if opened:
            options: list[str] = []
            answer = draft.sentence
            gold = None
        else:
            n = 1 + len(draft.wrong)
            if n not in cycles or counters[n] % n == 0:
                cycles[n] = rng.permutation(n)
            gold = int(cycles[n][counters[n] % n])
            counters[n] += 1
            wrong = [draft.wrong[int(j)] for j in rng.permutation(len(draft.wrong))]
            options = wrong[:gold] + [draft.right] + wrong[gold:]
            answer = answer_text(options, gold)
        items.append(MimItem(
            file=file, index=i, id=f"{config.dataset}_{source_tag}{i:05d}",
            images=tuple(_relative(c.image, image_root) for c in draft.images),
            user_text=compose_user_text(draft.question, n_images, options), answer=answer,
            source=f"{config.dataset}_{source_tag}{i:05d}", dataset=config.dataset, split=kind.split,
            subset=kind.subset, options=tuple(options), gold=gold,
            meta={"patients": sorted({c.patient for c in draft.images}), "kind": draft.kind}))
    return items


def draw_items(cases: Sequence[Case], ability: str, split: str, n: int, config: QAGenConfig,
               image_root: Path, out_name: str | None = None) -> tuple[list[MimItem], str | None]:
    """``n`` items of one ability from one split's cases; (items, why none could be made)."""
    index = CaseIndex(cases, config)
    generators = QA_GENERATORS.create(ability)
    rng = np.random.default_rng([config.seed, stable_digest(f"{split}:{ability}")])
    drafts: list[Draft] = []
    failures = 0
    while len(drafts) < n and failures < 50 * max(1, n):
        generator = generators[len(drafts) % len(generators)]
        draft = generator(index, rng)
        if draft is None:
            failures += 1
            if failures >= 50 and not drafts:
                break
            continue
        drafts.append(draft)
    if not drafts:
        return [], f"the {split} split has no cases that support {ability} questions"
    kind = FileKind(_SPLIT_KIND[split], ability)  # type: ignore[arg-type]
    file = out_name or kind.file_name(config.prefix)
    return make_items(drafts, config, kind, file, image_root, rng, f"{split}_{ability[:4]}_"), None


def generate_qa(cases: Iterable[Case], out_dir: str | Path, image_root: str | Path,
                config: QAGenConfig | None = None) -> GeneratedQA:
    """Write Med-MIM-format files per ability: ``test`` cases -> held-in benchmark files in ``out_dir``,
    ``train`` cases -> ``*_train_inherent_*`` files in ``out_dir``, ``val`` cases -> the same names
    in ``out_dir/val``. Image paths are written relative to ``image_root``."""
    config = config or QAGenConfig()
    out = Path(out_dir)
    root = Path(image_root)
    by_split: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_split[str(case.split)].append(case)
    files: dict[str, list[Path]] = defaultdict(list)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    skipped: dict[str, dict[str, str]] = defaultdict(dict)
    patients: dict[str, set[str]] = defaultdict(set)
    for split, n in config.n_items.items():
        if split not in _SPLIT_KIND:
            raise ConfigError(f"field 'n_items': unknown split '{split}' (use train, val, test)")
        pooled: list[MimItem] = []
        for ability in config.abilities:
            items, why = draw_items(by_split.get(split, []), ability, split, n, config, root)
            if why:
                skipped[split][ability] = why
                continue
            counts[split][ability] = len(items)
            for item in items:
                patients[split].update(item.meta["patients"])
            if split == "test" and config.held_out:
                pooled.extend(items)
                continue
            folder = out / "val" if split == "val" else out
            files[split].append(write_mim_file(items, folder / items[0].file))
        if pooled:
            name = FileKind("held_out", config.held_out.lower()).file_name(config.prefix)  # type: ignore[arg-type]
            pooled = [relocated(item, file=name, index=i, split="held_out", subset=config.held_out.lower())
                      for i, item in enumerate(pooled)]
            files[split].append(write_mim_file(pooled, out / name))
    result = GeneratedQA(dict(files), dict(counts), dict(skipped), {k: sorted(v) for k, v in patients.items()})
    summary = {"config": asdict(config), "counts": result.counts, "skipped": result.skipped,
               "files": {k: [str(p.relative_to(out)) for p in v] for k, v in result.files.items()},
               "patients": result.patients}
    out.mkdir(parents=True, exist_ok=True)
    stem = f"qa_generation_{config.held_out.lower()}" if config.held_out else "qa_generation"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    return result
