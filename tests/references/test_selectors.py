"""Selector contract (property tests over the whole registry) and per-selector behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from seeinpairs.cases import Case
from seeinpairs.errors import BankError, ConfigError, RegistryError
from seeinpairs.references import ReferenceBank, Selection, create_selector, list_selectors
from seeinpairs.references.selectors import SELECTORS, attribute

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: parameter variants exercised by the property tests; every registered selector gets at least {}
VARIANTS: dict[str, list[dict]] = {
    "demographic": [{}, {"match": ["sex", "site"], "fallback": True}],
}
#: the leakage-free selectors; ``prior_study`` shows the query's own patient by design (tested below)
LEAKAGE_FREE = [name for name in list_selectors() if SELECTORS.get(name).leakage_free]
SELECTOR_CASES = [
    pytest.param(name, params, id=f"{name}{'-' + '-'.join(map(str, params)) if params else ''}")
    for name in LEAKAGE_FREE
    for params in VARIANTS.get(name, [{}])
]


def _write_png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> list[str]:
    """Ten small, distinct random images shared by all generated banks."""
    folder = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    return [_write_png(folder / f"img{i}.png", rng.integers(0, 256, (16, 16))) for i in range(10)]


def _case_strategy(pool: list[str], case_id: str):
    return st.builds(
        Case,
        case_id=st.just(case_id),
        images=st.sampled_from(pool).map(lambda p: (p,)),
        label=st.just("normal"),
        patient_id=st.one_of(st.none(), st.sampled_from([f"p{i}" for i in range(5)])),
        age=st.one_of(st.none(), st.integers(0, 90).map(float)),
        sex=st.sampled_from(["M", "F", None]),
        site=st.sampled_from(["A", "B", "C", None]),
        split=st.just("train"),
    )


def _draw_problem(data, pool):
    n = data.draw(st.integers(0, 12), label="bank size")
    cases = [data.draw(_case_strategy(pool, f"c{i}")) for i in range(n)]
    if cases and data.draw(st.booleans(), label="query from bank"):
        query = cases[data.draw(st.integers(0, n - 1))]
    else:
        query = data.draw(_case_strategy(pool, "q"))
    k = data.draw(st.integers(0, n + 1), label="k")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    return ReferenceBank(cases), query, k, seed


def _leak_free(bank: ReferenceBank, query: Case) -> list[Case]:
    return [
        c for c in bank
        if c.case_id != query.case_id and c.patient != query.patient and not set(c.images) & set(query.images)
    ]


def _expected_eligible(name: str, params: dict, bank: ReferenceBank, query: Case) -> int | None:
    """How many references the selector can choose from, where the test can tell independently."""
    free = _leak_free(bank, query)
    if name in ("random", "embedding") or (name == "demographic" and params.get("fallback")):
        return len(free)
    if name in ("cross_center", "same_center"):
        if query.site is None:
            return -1  # always an error for k > 0
        same = name == "same_center"
        return sum(c.site is not None and (c.site == query.site) == same for c in free)
    if name == "demographic" and params.get("match", ["sex"]) == ["sex"]:
        return -1 if query.sex is None else sum(c.sex == query.sex for c in free)
    return None


def _run(name, params, bank, query, k, seed):
    try:
        return create_selector(name, bank, **params).select(query, k, np.random.default_rng(seed))
    except BankError as exc:
        return exc


def test_every_selector_is_covered():
    assert {"none", "random", "demographic", "embedding", "cross_center", "same_center"} <= set(LEAKAGE_FREE)
    assert set(list_selectors()) - set(LEAKAGE_FREE) == {"prior_study"}


def test_prior_study_returns_the_most_recent_earlier_studies_of_the_same_patient(pool):
    def case(case_id, patient, follow_up, image):
        return Case(case_id, (pool[image],), "normal", patient_id=patient, extra={"follow_up": follow_up})

    bank = ReferenceBank([case("a0", "A", 0, 1), case("a1", "A", 1, 2), case("a3", "A", 3, 3), case("b0", "B", 0, 4),
                          case("a2-copy", "A", 2, 5)])
    selector = create_selector("prior_study", bank)
    query = case("a2", "A", 2, 6)
    assert selector.eligible(query)
    assert selector.select(query, 2, np.random.default_rng(0)).case_ids == ["a1", "a0"]  # earlier only, newest first
    with pytest.raises(BankError, match="query 'a2' has 2 earlier healthy studies of patient 'A'"):
        selector.select(query, 3, np.random.default_rng(0))
    first = case("a0-q", "A", 0, 7)
    assert not selector.eligible(first)  # nothing earlier
    assert not selector.eligible(Case("x", (pool[8],), "normal", extra={"follow_up": 5}))  # no patient id
    assert not create_selector("prior_study", bank).leakage_free


@pytest.mark.parametrize(("name", "params"), SELECTOR_CASES)
@SETTINGS
@given(data=st.data())
def test_no_leakage_and_exactly_k(name, params, data, pool):
    bank, query, k, seed = _draw_problem(data, pool)
    result = _run(name, params, bank, query, k, seed)
    expected = _expected_eligible(name, params, bank, query)
    if isinstance(result, BankError):
        message = str(result)
        assert k > 0 and "\n" not in message
        if name != "none" and expected is not None and expected >= 0:
            assert expected < k, f"feasible request refused: {message}"
            assert f"k={k}" in message and f"only {expected} eligible" in message
        return
    assert isinstance(result, Selection)
    ids = result.case_ids
    assert len(ids) == k and len(set(ids)) == k
    for ref in result.references:
        assert ref.case_id != query.case_id
        assert ref.patient != query.patient
        assert not set(ref.images) & set(query.images)
        if name == "cross_center":
            assert ref.site is not None and ref.site != query.site
        if name == "same_center":
            assert ref.site == query.site
    if expected is not None and k > 0:
        assert expected >= k


@pytest.mark.parametrize(("name", "params"), SELECTOR_CASES)
@SETTINGS
@given(data=st.data())
def test_deterministic_per_seed(name, params, data, pool):
    bank, query, k, seed = _draw_problem(data, pool)
    first = _run(name, params, bank, query, k, seed)
    second = _run(name, params, ReferenceBank(list(bank)), query, k, seed)
    if isinstance(first, BankError):
        assert isinstance(second, BankError) and str(first) == str(second)
    else:
        assert isinstance(second, Selection)
        assert first.case_ids == second.case_ids and first.note == second.note


@pytest.mark.parametrize("name", list_selectors())
def test_k_zero_is_empty_for_every_selector(name, pool):
    query = Case("q", (pool[0],), "normal")  # no site, no sex: k=0 must not care
    for bank in (None, ReferenceBank([]), ReferenceBank([Case("c0", (pool[1],), "normal")])):
        selection = create_selector(name, bank).select(query, 0, np.random.default_rng(0))
        assert selection.references == [] and selection.note is None


# -- errors -------------------------------------------------------------------


def _bank(pool, specs):
    """Cases from (case_id, patient, sex, age, site[, extra]) tuples, one image each."""
    cases = []
    for i, spec in enumerate(specs):
        cid, patient, sex, age, site, *extra = spec
        cases.append(Case(cid, (pool[i % len(pool)],), "normal", patient, age, sex, site, "train", extra[0] if extra else {}))
    return ReferenceBank(cases)


def test_k_larger_than_bank_names_k_eligible_and_patient(pool):
    bank = _bank(pool, [("a", "p7", "F", 50, "A"), ("b", "p1", "F", 50, "A"), ("c", "p2", "M", 40, "B"), ("d", "p3", "M", 30, "B")])
    query = Case("q", (pool[9],), "abnormal", "p7", 45, "F", "A")
    with pytest.raises(BankError) as info:
        create_selector("random", bank).select(query, 5, np.random.default_rng(0))
    message = str(info.value)
    assert "k=5" in message and "only 3 eligible" in message and "'p7'" in message and "\n" not in message


def test_empty_bank_raises(pool):
    query = Case("q", (pool[0],), site="A", sex="F")
    for name in ("random", "embedding", "cross_center", "same_center", "demographic"):
        with pytest.raises(BankError, match="k=1 but only 0 eligible"):
            create_selector(name, ReferenceBank([])).select(query, 1, np.random.default_rng(0))


def test_cross_center_needs_query_site(pool):
    bank = _bank(pool, [("a", "p1", "F", 50, "A"), ("b", "p2", "F", 50, "B")])
    query = Case("q", (pool[9],), site=None)
    for name in ("cross_center", "same_center"):
        with pytest.raises(BankError, match=f"selector '{name}' needs the query's site, but case 'q' has none"):
            create_selector(name, bank).select(query, 1, np.random.default_rng(0))


def test_cross_center_shortage_names_site(pool):
    bank = _bank(pool, [("a", "p1", "F", 50, "A"), ("b", "p2", "F", 50, "B")])
    query = Case("q", (pool[9],), site="A")
    with pytest.raises(BankError, match="k=2 but only 1 eligible.*site != 'A'"):
        create_selector("cross_center", bank).select(query, 2, np.random.default_rng(0))
    chosen = create_selector("cross_center", bank).select(query, 1, np.random.default_rng(0))
    assert chosen.case_ids == ["b"]
    assert create_selector("same_center", bank).select(query, 1, np.random.default_rng(0)).case_ids == ["a"]


def test_none_selector_requires_k_zero(pool):
    with pytest.raises(BankError, match="k must be 0"):
        create_selector("none", None).select(Case("q", (pool[0],)), 2, np.random.default_rng(0))


def test_bad_names_params_and_k(pool):
    bank = _bank(pool, [("a", "p1", "F", 50, "A")])
    with pytest.raises(RegistryError, match="unknown selector 'nearest'"):
        create_selector("nearest", bank)
    with pytest.raises(ConfigError, match="unknown parameter"):
        create_selector("demographic", bank, mtach=["sex"])
    with pytest.raises(ConfigError, match="unknown parameter"):
        create_selector("random", bank, seed=3)
    assert create_selector("random", None).select(Case("q", (pool[5],)), 0, np.random.default_rng(0)).references == []
    with pytest.raises(ConfigError, match="needs a reference bank for k=1"):
        create_selector("random", None).select(Case("q", (pool[5],)), 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="non-negative integer"):
        create_selector("random", bank).select(Case("q", (pool[5],)), -1, np.random.default_rng(0))


def test_same_image_file_is_excluded(pool):
    bank = ReferenceBank([Case("a", (pool[0],), patient_id="p1"), Case("b", (pool[1],), patient_id="p2")])
    query = Case("q", (pool[0],), patient_id="p9")
    for name in ("random", "embedding"):
        assert create_selector(name, bank).select(query, 1, np.random.default_rng(0)).case_ids == ["b"]
        with pytest.raises(BankError, match="sharing the query's image file"):
            create_selector(name, bank).select(query, 2, np.random.default_rng(0))


# -- demographic ----------------------------------------------------------------


def test_demographic_prefers_same_sex_then_nearest_age(pool):
    bank = _bank(pool, [
        ("f30", "p1", "F", 30, "A"), ("f50", "p2", "F", 50, "A"), ("f70", "p3", "F", 70, "A"),
        ("m41", "p4", "M", 41, "A"), ("m44", "p5", "M", 44, "A"), ("fna", "p6", "F", None, "A"),
    ])
    query = Case("q", (pool[9],), "abnormal", "pq", 45, "F", "A")
    selector = create_selector("demographic", bank)
    for seed in range(5):
        assert selector.select(query, 2, np.random.default_rng(seed)).case_ids == ["f50", "f30"]
    # a case without age ranks after every case with one
    assert selector.select(query, 4, np.random.default_rng(0)).case_ids == ["f50", "f30", "f70", "fna"]
    with pytest.raises(BankError, match=r"k=5 but only 4 eligible.*sex='F'"):
        selector.select(query, 5, np.random.default_rng(0))


def test_demographic_age_ties_are_broken_by_rng(pool):
    bank = _bank(pool, [("a", "p1", "F", 40, "A"), ("b", "p2", "F", 50, "A")])
    query = Case("q", (pool[9],), age=45, sex="F")
    selector = create_selector("demographic", bank)
    firsts = {selector.select(query, 1, np.random.default_rng(seed)).case_ids[0] for seed in range(20)}
    assert firsts == {"a", "b"}


def test_demographic_fallback_relaxes_last_attribute_and_records_it(pool):
    bank = _bank(pool, [
        ("fa", "p1", "F", 80, "A"), ("fb1", "p2", "F", 44, "B"), ("fb2", "p3", "F", 20, "B"), ("ma", "p4", "M", 45, "A"),
    ])
    query = Case("q", (pool[9],), age=45, sex="F", site="A")
    strict = create_selector("demographic", bank, match=["sex", "site"])
    with pytest.raises(BankError, match=r"k=2 but only 1 eligible.*sex='F', site='A'"):
        strict.select(query, 2, np.random.default_rng(0))
    relaxed = create_selector("demographic", bank, match=["sex", "site"], fallback=True)
    selection = relaxed.select(query, 2, np.random.default_rng(0))
    assert selection.case_ids == ["fa", "fb1"]  # the full match first, then nearest age among same sex
    assert selection.note is not None and "relaxed match on site" in selection.note
    assert relaxed.select(query, 1, np.random.default_rng(0)).note is None
    everything = relaxed.select(query, 4, np.random.default_rng(0))
    assert everything.case_ids[:3] == ["fa", "fb1", "fb2"] and "sex, site" in everything.note


def test_demographic_matches_extra_fields_and_missing_query_value(pool):
    bank = _bank(pool, [
        ("pa", "p1", "F", 40, "A", {"view": "PA"}), ("ap", "p2", "F", 45, "A", {"view": "AP"}),
    ])
    query = Case("q", (pool[9],), age=45, sex="F", extra={"view": "PA"})
    assert attribute(query, "view") == "PA" and attribute(query, "sex") == "F"
    chosen = create_selector("demographic", bank, match=["view"]).select(query, 1, np.random.default_rng(0))
    assert chosen.case_ids == ["pa"]
    no_sex = Case("q2", (pool[9],), age=45)
    with pytest.raises(BankError, match="query 'q2' has no sex to match on"):
        create_selector("demographic", bank).select(no_sex, 1, np.random.default_rng(0))
    fallback = create_selector("demographic", bank, fallback=True).select(no_sex, 1, np.random.default_rng(0))
    assert fallback.case_ids == ["ap"] and "relaxed match on sex" in fallback.note


# -- embedding ------------------------------------------------------------------------


def _patterns(size: int = 32) -> list[np.ndarray]:
    """Visually distinct grayscale patterns: gradients, stripes, blobs, checkerboards."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    return [
        x * 255, y * 255, (1 - x) * 255, (x + y) / 2 * 255,
        ((np.floor(x * 4) + np.floor(y * 4)) % 2) * 255,
        (np.hypot(x - 0.5, y - 0.5) < 0.3) * 255,
        (np.sin(x * 12) > 0) * 255, np.full((size, size), 40.0),
    ]


@pytest.fixture(scope="module")
def pattern_bank(tmp_path_factory):
    folder = tmp_path_factory.mktemp("patterns")
    paths = [_write_png(folder / f"pat{i}.png", p) for i, p in enumerate(_patterns())]
    cases = [Case(f"r{i}", (p,), "normal", f"p{i}") for i, p in enumerate(paths)]
    return ReferenceBank(cases), folder


def test_embedding_selector_returns_true_nearest_neighbours(pattern_bank):
    bank, folder = pattern_bank
    rng = np.random.default_rng(1)
    selector = create_selector("embedding", bank)
    for i, pattern in enumerate(_patterns()):
        noisy = _write_png(folder / f"query{i}.png", pattern + rng.normal(0, 6, pattern.shape))
        query = Case(f"q{i}", (noisy,), "abnormal", f"qp{i}")
        selection = selector.select(query, 3, np.random.default_rng(0))
        assert selection.case_ids[0] == f"r{i}"
        # agrees with brute-force cosine similarity over the bank
        scores = bank.embeddings("pixel") @ bank.embed_query(query, "pixel")
        assert selection.case_ids == [f"r{j}" for j in np.argsort(-scores, kind="stable")[:3]]


def test_embedding_selector_skips_the_query_patient(pattern_bank):
    bank, folder = pattern_bank
    pattern = _patterns()[4]
    noisy = _write_png(folder / "same_patient.png", pattern + 3)
    query = Case("q", (noisy,), "abnormal", patient_id="p4")  # r4, the true nearest, is the same patient
    scores = bank.embeddings("pixel") @ bank.embed_query(query, "pixel")
    order = [f"r{j}" for j in np.argsort(-scores, kind="stable") if j != 4]
    selection = create_selector("embedding", bank).select(query, len(bank) - 1, np.random.default_rng(0))
    assert selection.case_ids == order
