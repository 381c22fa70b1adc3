"""The compatibility matrix is made from test outcomes: a fixed set of outcomes gives a known table."""

from seeinpairs.backends.compatibility import FEATURES, Outcome, feature_of, markdown

FEATURES_HERE = {"load": ("tests/a.py::test_load*",), "prefix cache": ("tests/p.py::*",),
                 "check-model": ("tests/c.py::*",)}


def test_a_fixed_set_of_outcomes_gives_the_expected_table():
    outcomes = [
        Outcome("alpha", "tests/a.py::test_load_it", "passed"),
        Outcome("alpha", "tests/p.py::test_equal", "passed"),
        Outcome("alpha", "tests/p.py::test_other", "skipped", "irrelevant next to a pass"),
        Outcome("beta", "tests/a.py::test_load_it", "failed"),
        Outcome("beta", "tests/p.py::test_equal", "skipped", "token types | read by position"),
        Outcome("beta", "tests/p.py::test_reuse", "skipped", "token types | read by position"),
        Outcome("gamma", "tests/p.py::test_equal", "passed"),
        Outcome("gamma", "tests/p.py::test_reuse", "failed"),
        Outcome("beta", "tests/unrelated.py::test_x", "failed"),  # no feature names it
    ]
    text = markdown(outcomes, ["alpha", "beta", "gamma"], {"delta": "needs torchvision"}, FEATURES_HERE)
    assert text == (
        "| family | load | prefix cache | check-model |\n"
        "|---|---|---|---|\n"
        "| alpha | working | working | no test |\n"
        "| beta | failed | not registered: token types \\| read by position | no test |\n"
        "| gamma | no test | failed | no test |\n"
        "\n"
        "Not registered (no tiny model, so untested here):\n"
        "\n"
        "- delta: needs torchvision\n")


def test_the_declared_features_cover_the_issue_list_and_find_the_family_tests():
    assert list(FEATURES) == ["load", "one-token scoring", "multi-token scoring", "shared-prompt = per-option",
                              "generation", "label order", "prefix cache", "vision cache", "attribution",
                              "LoRA targets", "check-model"]
    assert feature_of("tests/backends/test_families.py::test_each_label_precedes_its_own_image_with_no_other_image"
                      "_between") == ["label order"]
    assert feature_of("tests/backends/test_vision_cache.py::test_cached_scores_equal_uncached") == ["vision cache"]
    assert feature_of("tests/backends/test_families.py::test_the_prompt_starts_with_at_most_one_bos") == []


def test_every_pattern_on_the_family_tests_names_an_existing_test():
    """A mistyped pattern would leave its column at 'no test' for good."""
    import ast
    from fnmatch import fnmatch
    from pathlib import Path

    path = "tests/backends/test_families.py"
    tree = ast.parse((Path(__file__).resolve().parents[2] / path).read_text())
    names = [f"{path}::{node.name}" for node in tree.body if isinstance(node, ast.FunctionDef)]
    patterns = [p for ps in FEATURES.values() for p in ps if p.startswith(path)]
    assert len(patterns) == 6
    assert all(any(fnmatch(name, pattern) for name in names) for pattern in patterns)
