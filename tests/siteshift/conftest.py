"""Fixtures for the site-shift tests: generated images, and the shared real data sets (skipped when absent)."""

from __future__ import annotations

import pytest
from siteshift_data import SHARED_DATA, write_images

from seeinpairs.cases import CaseTable


@pytest.fixture
def small_table(tmp_path) -> CaseTable:
    return write_images(tmp_path / "source", n_patients=24)


@pytest.fixture(scope="session")
def ham_table():
    root = SHARED_DATA / "ham10000_subset"
    if not (root / "metadata.csv").is_file():
        pytest.skip("the shared HAM10000 subset is not available")
    from seeinpairs.datasets.registry import load_dataset

    return load_dataset("ham10000", root, task="nv_vs_other")


@pytest.fixture(scope="session")
def nih_table():
    root = SHARED_DATA / "nih_cxr14_nih1000"
    if not (root / "metadata.csv").is_file():
        pytest.skip("the shared NIH subset is not available")
    from seeinpairs.datasets.registry import load_dataset

    return load_dataset("nih", root)
