"""The family x feature compatibility matrix, made from test outcomes rather than typed by hand.

Each feature is declared with the test names that exercise it (``path::function``
glob patterns). A test counts for a family when it is parametrised with
``family=<name>``; its outcome fills that (family, feature) cell:

* ``working``: the feature's tests for the family passed (skips alongside passes do not matter);
* ``failed``: one of them failed;
* ``not registered: <reason>``: all of them were skipped, with the reason given to ``pytest.skip``
  (the convention for a feature that is deliberately not offered to a family: parametrise over
  every family and skip with the reason where it is not registered);
* ``no test``: no test of the feature ran for the family (yet).

Families that have no tiny builder are listed below the table with their reason.
``benchmarks/family_matrix.py`` runs the tests and writes the markdown.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

#: feature -> the tests that exercise it, as ``path::function`` glob patterns (path from the project root)
FEATURES: dict[str, tuple[str, ...]] = {
    "load": ("tests/backends/test_families.py::test_family_loads*",),
    "one-token scoring": ("tests/backends/test_families.py::test_family_scores_one_token*",),
    "multi-token scoring": ("tests/backends/test_families.py::test_family_scores_multi_token*",),
    "shared-prompt = per-option": ("tests/backends/test_families.py::test_shared_prompt_scores_equal*",),
    "generation": ("tests/backends/test_families.py::test_family_generates*",),
    "label order": ("tests/backends/test_families.py::test_each_label_precedes*",),
    "prefix cache": ("tests/backends/test_prefix_cache.py::*",),
    "vision cache": ("tests/backends/test_vision_cache.py::*",),
    "attribution": ("tests/explain/test_layouts.py::*", "tests/explain/test_attribution.py::*"),
    "LoRA targets": ("tests/training/test_*.py::*lora_target*",),
    "check-model": ("tests/**/test_check_model*.py::*", "tests/test_check_model*.py::*", "tests/test_cli.py::*check_model*"),
}

WORKING, FAILED, NO_TEST, NOT_REGISTERED = "working", "failed", "no test", "not registered"


@dataclass(frozen=True)
class Outcome:
    """One test run for one family: ``test`` is ``path::function``; ``outcome`` passed, failed or skipped."""

    family: str
    test: str
    outcome: str
    reason: str = ""


def feature_test_paths(features: Mapping[str, Sequence[str]] = FEATURES) -> list[str]:
    """The test paths (globs) the features name, to hand to pytest."""
    return sorted({pattern.split("::", 1)[0] for patterns in features.values() for pattern in patterns})


def cell(outcomes: Iterable[Outcome]) -> str:
    """The cell of one (family, feature) from the outcomes of its tests."""
    outcomes = list(outcomes)
    if not outcomes:
        return NO_TEST
    if any(o.outcome == "failed" for o in outcomes):
        return FAILED
    if any(o.outcome == "passed" for o in outcomes):
        return WORKING
    reasons = list(dict.fromkeys(o.reason for o in outcomes if o.reason))
    return f"{NOT_REGISTERED}: {'; '.join(reasons)}" if reasons else NOT_REGISTERED


def matrix(outcomes: Iterable[Outcome], families: Sequence[str],
           features: Mapping[str, Sequence[str]] = FEATURES) -> dict[str, dict[str, str]]:
    """family -> feature -> cell, for the given families (in order) and features."""
    outcomes = list(outcomes)
    return {family: {feature: cell(o for o in outcomes if o.family == family and feature in feature_of(o.test, features))
                     for feature in features}
            for family in families}


def feature_of(test: str, features: Mapping[str, Sequence[str]] = FEATURES) -> list[str]:
    """The features a test (``path::function``) counts for."""
    return [feature for feature, patterns in features.items() if any(fnmatch.fnmatch(test, p) for p in patterns)]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(outcomes: Iterable[Outcome], families: Sequence[str], unsupported: Mapping[str, str],
             features: Mapping[str, Sequence[str]] = FEATURES) -> str:
    """The matrix as a markdown table, then the families that are not registered, with their reasons."""
    table = matrix(outcomes, families, features)
    lines = ["| family | " + " | ".join(features) + " |", "|---" * (len(features) + 1) + "|"]
    for family, cells in table.items():
        lines.append(f"| {family} | " + " | ".join(_escape(cells[f]) for f in features) + " |")
    if unsupported:
        lines += ["", "Not registered (no tiny model, so untested here):", ""]
        lines += [f"- {family}: {_escape(reason)}" for family, reason in sorted(unsupported.items())]
    return "\n".join(lines) + "\n"
