from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
import pytest

from seeinpairs.cases import CaseTable
from seeinpairs.errors import BankError, ConfigError
from seeinpairs.references.selectors import create_selector, list_selectors
from seeinpairs.siteshift import (
    SITE_REFERENCE_SPLIT,
    leave_one_site_out,
    site_reference_banks,
    sites_of,
)
from seeinpairs.tasks import Task

HAM_SITES = ["rosendahl", "vidir_modern", "vidir_molemax", "vienna_dias"]


@pytest.mark.parametrize("held_out", HAM_SITES)
def test_loso_on_real_ham10000_never_trains_on_the_held_out_source(ham_table, held_out):
    table, _ = ham_table
    split = leave_one_site_out(table, held_out, val_fraction=0.1, seed=0)
    by_split = defaultdict(Counter)
    for case in split:
        by_split[case.split][case.site] += 1
    assert set(by_split["test"]) == {held_out}
    assert held_out not in by_split["train"] and held_out not in by_split["val"]
    assert by_split["test"][held_out] == sites_of(table)[held_out]  # the whole source is test
    # train and val cover the other sources, split by lesion (HAM10000's patient id)
    assert set(by_split["train"]) == set(HAM_SITES) - {held_out}
    patients = defaultdict(set)
    for case in split:
        patients[case.patient].add(case.split)
    assert all(len(s) == 1 for s in patients.values())
    n_val = len({c.patient for c in split if c.split == "val"})
    n_seen = len({c.patient for c in split if c.split in ("train", "val")})
    assert n_val == round(0.1 * n_seen)


def test_loso_is_deterministic_per_seed(ham_table):
    table, _ = ham_table
    a = leave_one_site_out(table, "rosendahl", 0.2, seed=1)
    b = leave_one_site_out(list(reversed(table)), "rosendahl", 0.2, seed=1)
    assert {c.case_id: c.split for c in a} == {c.case_id: c.split for c in b}
    c = leave_one_site_out(table, "rosendahl", 0.2, seed=2)
    assert {x.case_id: x.split for x in a} != {x.case_id: x.split for x in c}


def test_reserved_new_site_references_and_the_two_banks(ham_table):
    table, task = ham_table
    split = leave_one_site_out(table, "vienna_dias", 0.1, seed=0, site_references=8, healthy_label=task.healthy_class)
    reserved = [c for c in split if c.split == SITE_REFERENCE_SPLIT]
    assert len(reserved) >= 8 and all(c.site == "vienna_dias" and c.label == task.healthy_class for c in reserved)
    test_patients = {c.patient for c in split if c.split == "test"}
    assert not test_patients & {c.patient for c in reserved}  # references are never queries
    banks = site_reference_banks(split, task, "vienna_dias")
    assert {c.case_id for c in banks.new_site} == {c.case_id for c in reserved}
    assert all(c.site != "vienna_dias" and c.split == "train" and c.label == task.healthy_class
               for c in banks.training_sites)
    rng = np.random.default_rng(0)
    query = next(c for c in split if c.split == "test")
    assert all(r.site == "vienna_dias" for r in create_selector("random", banks.new_site).select(query, 4, rng).references)


def test_test_split_bank_never_returns_the_query_or_its_patient(tmp_path):
    from siteshift_data import write_images

    base = write_images(tmp_path, n_patients=12, per_patient=3)
    table = CaseTable([replace(c, site="new" if int(c.patient[1:]) < 6 else "old") for c in base])
    split = leave_one_site_out(table, "new", 0.0, seed=0)
    task = Task(name="t", question="?", classes=["normal", "abnormal"], healthy_class="normal")
    banks = site_reference_banks(split, task, "new", new_site_split="test")
    healthy_patients = {c.patient for c in banks.new_site}
    assert len(healthy_patients) >= 2
    for query in (c for c in split if c.split == "test"):
        for name in ("random", "same_center"):
            selector = create_selector(name, banks.new_site)
            eligible = [c for c in banks.new_site if c.patient != query.patient]
            for seed in range(5):
                refs = selector.select(query, min(2, len(eligible)), np.random.default_rng(seed)).references
                assert all(r.patient != query.patient and r.case_id != query.case_id for r in refs)
    assert "same_center" in list_selectors()


def test_a_patient_seen_at_two_sites_is_kept_out_of_training(tmp_path):
    from siteshift_data import write_images

    base = write_images(tmp_path, n_patients=6, per_patient=2)
    # patient P000 has one image at each site
    cases = [replace(c, site="new" if (c.patient in ("P000", "P001") and c.case_id.endswith("_0")) or
                     c.patient == "P001" else "old") for c in base]
    split = leave_one_site_out(CaseTable(cases), "new", 0.0, seed=0)
    assert "P000_1" not in {c.case_id for c in split}
    assert all(c.site == "new" for c in split if c.patient == "P000")


@pytest.mark.parametrize("site, kwargs, word", [
    ("nowhere", {}, "unknown site 'nowhere'"),
    ("", {}, "empty"),
    ("rosendahl", {"val_fraction": 1.0}, "val_fraction"),
    ("rosendahl", {"site_references": 3}, "healthy_label"),
    ("rosendahl", {"missing_site": "keep"}, "missing_site"),
    ("vienna_dias", {"site_references": 10_000, "healthy_label": "nv"}, "site_references"),
])
def test_loso_errors_are_one_line(ham_table, site, kwargs, word):
    table, _ = ham_table
    with pytest.raises(ConfigError, match=word) as info:
        leave_one_site_out(table, site, **kwargs)
    assert "\n" not in str(info.value)


def test_cases_without_site_are_refused_or_dropped(ham_table):
    table, _ = ham_table
    cases = list(table)[:50]
    cases[3] = replace(cases[3], site=None)
    with pytest.raises(ConfigError, match="no site"):
        leave_one_site_out(cases, cases[0].site)
    split = leave_one_site_out(cases, cases[0].site, missing_site="drop")
    assert cases[3].case_id not in {c.case_id for c in split}


def test_bank_errors_are_one_line(ham_table):
    table, task = ham_table
    split = leave_one_site_out(table, "vienna_dias", 0.1, seed=0)
    with pytest.raises(ConfigError, match="site_references") as info:
        site_reference_banks(split, task, "vienna_dias")  # nothing reserved
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown site"):
        site_reference_banks(split, task, "elsewhere")
    banks = site_reference_banks(split, task, "vienna_dias", new_site_split="test")
    with pytest.raises(BankError):
        create_selector("random", banks.new_site).select(next(iter(banks.new_site)), 10_000, np.random.default_rng(0))
