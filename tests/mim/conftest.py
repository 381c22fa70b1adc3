"""Fixtures for the multi-image QA tests (layouts in ``mim_layouts``)."""

from __future__ import annotations

import pytest
from mim_layouts import build_mim_files


@pytest.fixture()
def mim_files(tmp_path):
    """(files by subset, image roots by data set) in the exact Med-MIM layout."""
    return build_mim_files(tmp_path)
