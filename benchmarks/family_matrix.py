"""Run the family tests and write the family x feature compatibility matrix (markdown) from their outcomes.

    .venv/bin/python benchmarks/family_matrix.py [--out family_matrix.md] [--outcomes outcomes.json]
        [--from-outcomes outcomes.json] [-k EXPRESSION]

The tests named by :data:`seeinpairs.backends.compatibility.FEATURES` run in this process with a
small pytest plugin that records each family-parametrised test's outcome; the table is made from
those outcomes (:func:`seeinpairs.backends.compatibility.markdown`), never typed. ``--outcomes``
also saves them as JSON; ``--from-outcomes`` remakes the table from such a file without running.
Exits 1 when a cell failed, so the matrix cannot quietly record a broken family.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from seeinpairs.backends.compatibility import FAILED, Outcome, feature_of, feature_test_paths, markdown, matrix
from seeinpairs.backends.tiny import list_tiny_families
from seeinpairs.backends.tiny_families import UNSUPPORTED_FAMILIES

ROOT = Path(__file__).resolve().parent.parent


class OutcomeRecorder:
    """A pytest plugin keeping the outcome of every test parametrised with ``family``."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}

    def pytest_collection_modifyitems(self, config, items) -> None:
        """Run only the family-parametrised tests that some feature names."""
        keep = [item for item in items if _family(item) is not None and feature_of(_test_name(item))]
        dropped = [item for item in items if item not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_runtest_logreport(self, report) -> None:
        family = getattr(report, "family", None)
        if family is None:
            return
        known = self.outcomes.get(report.nodeid)
        if report.when != "call" and report.outcome == "passed":
            return  # setup and teardown that passed say nothing about the feature
        if known is not None and known.outcome == "failed":
            return
        reason = report.longrepr[2].removeprefix("Skipped: ") if report.skipped and isinstance(
            report.longrepr, tuple) else ""
        self.outcomes[report.nodeid] = Outcome(family, report.test_name, report.outcome, reason)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if _family(item) is not None:
            report.family, report.test_name = _family(item), _test_name(item)


def _family(item) -> str | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return str(params["family"]) if "family" in params else None


def _test_name(item) -> str:
    """``path::function`` with the path from the project root, as the feature patterns are written."""
    return f"{Path(str(item.path)).resolve().relative_to(ROOT).as_posix()}::{item.originalname}"


def run_tests(expression: str | None) -> list[Outcome]:
    recorder = OutcomeRecorder()
    paths = sorted({str(p.relative_to(ROOT)) for pattern in feature_test_paths() for p in ROOT.glob(pattern)})
    args = ["-q", "-p", "no:cacheprovider", "-W", "ignore", *(["-k", expression] if expression else []), *paths]
    code = pytest.main(args, plugins=[recorder])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
        raise SystemExit(f"the tests did not run to the end (pytest exit code {int(code)}); no matrix written")
    return list(recorder.outcomes.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default: print)")
    parser.add_argument("--outcomes", type=Path, default=None, help="also save the outcomes as JSON")
    parser.add_argument("--from-outcomes", type=Path, default=None, help="make the table from saved outcomes")
    parser.add_argument("-k", dest="expression", default=None, help="pytest -k expression to run a subset")
    args = parser.parse_args()
    if args.from_outcomes:
        outcomes = [Outcome(**o) for o in json.loads(args.from_outcomes.read_text())]
    else:
        outcomes = run_tests(args.expression)
    if args.outcomes:
        args.outcomes.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    families = list_tiny_families()
    text = markdown(outcomes, families, UNSUPPORTED_FAMILIES)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    failed = any(c == FAILED for row in matrix(outcomes, families).values() for c in row.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
