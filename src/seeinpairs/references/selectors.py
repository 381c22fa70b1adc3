"""Reference selectors: which k healthy cases are shown next to a query.

The selection strategy is the experimental variable of comparative diagnosis
(random controls vs. demographically matched vs. look-alike vs. other-centre),
so every selector shares one contract, enforced in the base class rather than
trusted to each implementation:

* never the query case itself, the query's patient, or the query's image file
  (any of these would leak the answer or make the comparison trivial);
* exactly ``k`` distinct references, or a one-line :class:`BankError` saying
  how many were eligible and why;
* the same references for the same ``rng`` seed;
* ``k=0`` returns an empty selection for every selector.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..cases import Case
from ..embeddings.images import Embedder, create_embedder
from ..errors import BankError, ConfigError
from ..registry import Registry
from .bank import ReferenceBank

__all__ = [
    "SELECTORS",
    "CrossCenterSelector",
    "DemographicSelector",
    "EmbeddingSelector",
    "NoneSelector",
    "RandomSelector",
    "SameCenterSelector",
    "Selection",
    "Selector",
    "create_selector",
    "list_selectors",
]

_CASE_FIELDS = {f.name for f in dataclasses.fields(Case)} - {"extra", "images"}


@dataclass
class Selection:
    """The chosen references, plus the fallback applied (if any), which predictions record."""

    references: list[Case] = field(default_factory=list)
    note: str | None = None

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.references]

    def __len__(self) -> int:
        return len(self.references)


def attribute(case: Case, name: str) -> Any:
    """A case attribute by name: a Case field, else a key of ``case.extra`` (e.g. ``view``)."""
    if name in _CASE_FIELDS:
        return getattr(case, name)
    return case.extra.get(name)


class Selector:
    """Base class. Subclasses narrow the eligible bank positions and pick k of them.

    ``_filter`` narrows the leakage-free candidates (and says how, for error
    messages); ``_pick`` chooses exactly k of them. ``select`` wraps both with
    argument checks and a final verification of the contract.
    """

    name: ClassVar[str] = "selector"
    #: parameter names accepted by ``__init__`` (others are rejected with a clear error)
    params: ClassVar[tuple[str, ...]] = ()
    #: False for a mode that deliberately shows the query's own patient (``prior_study``): evaluations
    #: label it as its own mode and give it a bank drawn from every split (a patient's history)
    leakage_free: ClassVar[bool] = True

    def __init__(self, bank: ReferenceBank | None, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            known = ", ".join(self.params) or "none"
            raise ConfigError(f"selector '{self.name}' got unknown parameter(s) {', '.join(unknown)} (known: {known})")
        self.bank = bank  # may be None when only k=0 will be asked (the zero-reference baseline)

    # -- public -------------------------------------------------------------

    def select(self, query: Case, k: int, rng: np.random.Generator) -> Selection:
        """Choose exactly ``k`` leakage-free references for ``query``."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ConfigError(f"selector '{self.name}': k must be a non-negative integer (got {k!r})")
        k = int(k)
        if k == 0:
            return Selection([])
        if self.bank is None:
            raise ConfigError(f"selector '{self.name}' needs a reference bank for k={k}")
        candidates, exclusions = self._leakage_free(query)
        candidates, condition = self._filter(query, candidates)
        if len(candidates) < k and not self._handles_shortage():
            self._shortage(query, k, len(candidates), exclusions, condition)
        selection = self._pick(query, k, candidates, rng, exclusions)
        self._verify(query, k, selection)
        return selection

    def eligible(self, query: Case) -> bool:
        """Whether ``select`` can serve this query at all (every query, except for ``prior_study``)."""
        return True

    # -- hooks ----------------------------------------------------------------

    def _filter(self, query: Case, candidates: list[int]) -> tuple[list[int], str | None]:
        """Selector-specific eligibility; returns the kept positions and a phrase for errors."""
        return candidates, None

    def _handles_shortage(self) -> bool:
        """True when ``_pick`` deals with ``len(candidates) < k`` itself (e.g. by relaxing)."""
        return False

    def _pick(self, query: Case, k: int, candidates: list[int], rng: np.random.Generator, exclusions: list[str]) -> Selection:
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------

    def _leakage_free(self, query: Case) -> tuple[list[int], list[str]]:
        """Bank positions that are not the query, its patient or its image file."""
        assert self.bank is not None
        query_images = set(query.images)
        kept: list[int] = []
        dropped = {"case": 0, "patient": 0, "image": 0}
        for position, case in enumerate(self.bank.cases):
            if case.case_id == query.case_id:
                dropped["case"] += 1
            elif case.patient == query.patient:
                dropped["patient"] += 1
            elif query_images.intersection(case.images):
                dropped["image"] += 1
            else:
                kept.append(position)
        exclusions = []
        if dropped["case"]:
            exclusions.append(f"the query case '{query.case_id}' itself")
        if dropped["patient"]:
            exclusions.append(f"{dropped['patient']} of the query's patient '{query.patient}'")
        if dropped["image"]:
            exclusions.append(f"{dropped['image']} sharing the query's image file")
        return kept, exclusions

    def _shortage(self, query: Case, k: int, eligible: int, exclusions: list[str], condition: str | None) -> None:
        assert self.bank is not None
        raise BankError(_shortage_message(self.name, query, k, eligible, len(self.bank), exclusions, condition))

    def _verify(self, query: Case, k: int, selection: Selection) -> None:
        """The contract, checked on every call: a violation here is a bug, not bad input."""
        ids = selection.case_ids
        if len(ids) != k or len(set(ids)) != k:
            raise RuntimeError(f"selector '{self.name}' returned {len(ids)} references ({len(set(ids))} distinct), expected {k}")
        for ref in selection.references:
            if ref.case_id == query.case_id or ref.patient == query.patient or set(ref.images) & set(query.images):
                raise RuntimeError(f"selector '{self.name}' leaked case '{ref.case_id}' for query '{query.case_id}'")

    def _cases(self, positions: list[int]) -> list[Case]:
        assert self.bank is not None
        return [self.bank.cases[i] for i in positions]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bank={len(self.bank) if self.bank is not None else None})"


def _shortage_message(
    name: str, query: Case, k: int, eligible: int, bank_size: int, exclusions: list[str], condition: str | None
) -> str:
    why = [f"bank of {bank_size}"]
    if condition:
        why.append(condition)
    if exclusions:
        why.append("excluding " + ", ".join(exclusions))
    return (
        f"selector '{name}': k={k} but only {eligible} eligible healthy references "
        f"for query '{query.case_id}' ({'; '.join(why)})"
    )


#: every selector class names itself (``name``, used in its messages) as it is registered
SELECTORS: Registry[Selector] = Registry("selector", expects=Selector, name_attribute="name")


# ---------------------------------------------------------------------------


@SELECTORS.register("none")
class NoneSelector(Selector):
    """The zero-reference baseline: the query alone. Only k=0 makes sense."""

    name = "none"

    def select(self, query: Case, k: int, rng: np.random.Generator) -> Selection:
        if k != 0:
            raise BankError(f"selector 'none' provides no references: k must be 0 (got k={k})")
        return Selection([])


@SELECTORS.register("random")
class RandomSelector(Selector):
    """k healthy controls drawn uniformly without replacement: the unbiased baseline."""

    name = "random"

    def _pick(self, query, k, candidates, rng, exclusions):
        chosen = rng.choice(len(candidates), size=k, replace=False)
        return Selection(self._cases([candidates[int(i)] for i in chosen]))


class _SiteSelector(RandomSelector):
    """Random among bank cases whose site relates to the query's; cases without a site are skipped
    because their centre, and hence the comparison, is unknown."""

    same: ClassVar[bool] = True

    def _filter(self, query, candidates):
        if query.site is None:
            raise BankError(f"selector '{self.name}' needs the query's site, but case '{query.case_id}' has none")
        assert self.bank is not None
        kept = [
            i for i in candidates
            if self.bank.cases[i].site is not None and (self.bank.cases[i].site == query.site) == self.same
        ]
        return kept, f"with site {'==' if self.same else '!='} '{query.site}'"


@SELECTORS.register("cross_center")
class CrossCenterSelector(_SiteSelector):
    """Random references from other centres: tests robustness to scanner/site shift."""

    name = "cross_center"
    same = False


@SELECTORS.register("same_center")
class SameCenterSelector(_SiteSelector):
    """Random references from the query's own centre: controls for acquisition differences."""

    name = "same_center"
    same = True


@SELECTORS.register("demographic")
class DemographicSelector(Selector):
    """Exact match on attributes (default sex), then nearest age; ties broken by ``rng``.

    With ``fallback=True`` a shortage relaxes the match attributes from the last
    one and the relaxation is recorded in ``Selection.note``; fully matching
    references are still preferred over partially matching ones.
    """

    name = "demographic"
    params = ("match", "fallback")

    def __init__(self, bank: ReferenceBank | None, match: list[str] | tuple[str, ...] | str = ("sex",), fallback: bool = False, **unknown: Any) -> None:
        super().__init__(bank, **unknown)
        self.match = [match] if isinstance(match, str) else list(match)
        if any(not isinstance(m, str) or not m for m in self.match):
            raise ConfigError(f"selector 'demographic': match must be a list of attribute names (got {match!r})")
        self.fallback = bool(fallback)

    def _handles_shortage(self) -> bool:
        return True

    def _describe(self, query: Case, attributes: list[str]) -> str:
        return ", ".join(f"{a}={attribute(query, a)!r}" for a in attributes)

    def _pick(self, query, k, candidates, rng, exclusions):
        assert self.bank is not None
        wanted = [attribute(query, a) for a in self.match]
        # level = length of the longest prefix of `match` that a candidate agrees on
        levels = []
        for i in candidates:
            case, level = self.bank.cases[i], 0
            for name, value in zip(self.match, wanted):
                if value is None or attribute(case, name) != value:
                    break
                level += 1
            levels.append(level)
        full = len(self.match)
        required = full
        while required > 0 and sum(level >= required for level in levels) < k:
            if not self.fallback:
                missing = [a for a, v in zip(self.match, wanted) if v is None]
                if missing:
                    raise BankError(
                        f"selector 'demographic': query '{query.case_id}' has no {', '.join(missing)} to match on "
                        f"(use fallback=True to relax)"
                    )
                eligible = sum(level >= full for level in levels)
                self._shortage(query, k, eligible, exclusions, f"matching {self._describe(query, self.match)}")
            required -= 1
        pool = [(i, level) for i, level in zip(candidates, levels) if level >= required]
        if len(pool) < k:
            self._shortage(query, k, len(pool), exclusions, None)
        ties = rng.permutation(len(pool))

        def rank(item: tuple[int, tuple[int, int]]) -> tuple:
            position, (index, level) = item
            age = self.bank.cases[index].age  # type: ignore[union-attr]
            distance = abs(age - query.age) if age is not None and query.age is not None else np.inf
            return (-level, age is None, distance, ties[position])

        ordered = sorted(enumerate(pool), key=rank)
        chosen = [index for _, (index, _) in ordered[:k]]
        note = None
        if required < full:
            relaxed = self.match[required:]
            matched = sum(level >= full for level in levels)
            note = (
                f"demographic fallback: relaxed match on {', '.join(relaxed)} "
                f"(only {matched} of k={k} references match {self._describe(query, self.match)})"
            )
        return Selection(self._cases(chosen), note)


@SELECTORS.register("embedding")
class EmbeddingSelector(Selector):
    """The k bank images nearest to the query in an embedding space (faiss: exact below 50,000 bank
    images, IVF above; see :mod:`seeinpairs.references.index`).

    Deterministic: ``rng`` is unused; ties are ordered by bank position.
    """

    name = "embedding"
    params = ("embedder",)

    def __init__(self, bank: ReferenceBank | None, embedder: str | Embedder = "pixel", **unknown: Any) -> None:
        super().__init__(bank, **unknown)
        self.embedder = create_embedder(embedder)

    def _pick(self, query, k, candidates, rng, exclusions):
        assert self.bank is not None
        allowed = set(candidates)
        vector = self.bank.embed_query(query, self.embedder)
        # Over-fetch by the number of excluded bank cases so k eligible ones are always among the hits.
        fetch = min(len(self.bank), k + len(self.bank) - len(candidates))
        hits = [i for i, _ in self.bank.nearest(vector, fetch, self.embedder) if i in allowed]
        return Selection(self._cases(hits[:k]))


@SELECTORS.register("prior_study")
class PriorStudySelector(Selector):
    """The radiologist's usual comparison: the k most recent *earlier* healthy studies of the query's
    own patient. Not leakage-free by design, so it is a separate mode: evaluations label it ``prior``,
    never pool it with the leakage-free selectors, and evaluate it only on queries that have a prior
    (:meth:`eligible`). Its bank should hold a patient's whole history (all splits).

    ``order_by``: the Case field or ``extra`` key that orders a patient's studies (NIH: ``follow_up``);
    a study is earlier when its value is smaller. Ties and missing values never count as earlier.
    """

    name = "prior_study"
    params = ("order_by",)
    leakage_free = False

    def __init__(self, bank: ReferenceBank | None, order_by: str = "follow_up", **unknown: Any) -> None:
        super().__init__(bank, **unknown)
        self.order_by = order_by

    def _order(self, case: Case) -> float | None:
        value = attribute(case, self.order_by)
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if number == number else None

    def _priors(self, query: Case) -> list[int]:
        """Bank positions of the patient's earlier studies, most recent first."""
        if self.bank is None or query.patient_id is None:
            return []
        now = self._order(query)
        if now is None:
            return []
        found = []
        for position, case in enumerate(self.bank.cases):
            when = self._order(case)
            if (case.patient_id == query.patient_id and case.case_id != query.case_id
                    and not set(case.images) & set(query.images) and when is not None and when < now):
                found.append((when, position))
        return [position for _, position in sorted(found, reverse=True)]

    def eligible(self, query: Case) -> bool:
        return bool(self._priors(query))

    def select(self, query: Case, k: int, rng: np.random.Generator) -> Selection:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ConfigError(f"selector '{self.name}': k must be a non-negative integer (got {k!r})")
        if k == 0:
            return Selection([])
        if self.bank is None:
            raise ConfigError(f"selector '{self.name}' needs a reference bank for k={k}")
        priors = self._priors(query)
        if len(priors) < k:
            raise BankError(f"selector 'prior_study': query '{query.case_id}' has {len(priors)} earlier healthy "
                            f"studies of patient '{query.patient_id}' (by '{self.order_by}'), k={k}")
        selection = Selection(self._cases(priors[:k]), note=f"prior studies of patient {query.patient_id}")
        for reference in selection.references:  # the contract of this mode: same patient, earlier, not the query
            if reference.patient_id != query.patient_id or reference.case_id == query.case_id:
                raise RuntimeError(f"selector 'prior_study' returned '{reference.case_id}' for '{query.case_id}'")
        return selection


# ---------------------------------------------------------------------------


def create_selector(name: str, bank: ReferenceBank | None, **params: Any) -> Selector:
    """Build a registered selector, e.g. ``create_selector("demographic", bank, match=["sex", "site"])``."""
    return SELECTORS.create(name, bank, **params)


def list_selectors() -> list[str]:
    return SELECTORS.list_names()
