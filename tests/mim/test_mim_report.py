import pandas as pd

from seeinpairs.mim.report import ability_table, findings, mim_section


def _summary(acc: dict[str, tuple[float, float, float]], chance: float = 0.5) -> pd.DataFrame:
    rows = [{"level": "subset", "group": g, "n": 40, "accuracy": a, "accuracy_lo": lo, "accuracy_hi": hi,
             "chance": chance, "n_open": 0} for g, (a, lo, hi) in acc.items()]
    rows.append({"level": "split", "group": "held_in", "n": 80, "accuracy": 0.6, "accuracy_lo": 0.5,
                 "accuracy_hi": 0.7, "chance": chance, "n_open": 0})
    return pd.DataFrame(rows)


def test_findings_follow_the_intervals():
    before = _summary({"temporal": (0.5, 0.35, 0.65), "comparison": (0.45, 0.3, 0.6)})
    after = _summary({"temporal": (0.8, 0.68, 0.9), "comparison": (0.55, 0.4, 0.7)})
    single = _summary({"temporal": (0.6, 0.45, 0.75), "comparison": (0.58, 0.42, 0.72)})
    text = " ".join(findings({"b": before, "a": after, "s": single}, "b", "a", "s"))
    assert "above chance (95% interval excludes it) for: temporal." in text
    assert "not distinguishable from chance (or below) for: comparison." in text
    assert "temporal +0.200" in text and "comparison -0.030" in text
    table = ability_table({"b": before, "a": after})
    assert table["columns"] == ["group", "n", "chance", "b", "a"] and table["rows"][0][0] == "comparison"


def test_section_is_escaped_and_has_a_figure():
    after = _summary({"<temporal>": (0.8, 0.68, 0.9)})
    section = mim_section({"before SFT": after, "after SFT": after}, notes=["<b>note</b>"])
    assert section.anchor == "multi-image-qa" and "data:image/png;base64," in section.html
    assert "&lt;temporal&gt;" in section.html and "<b>note</b>" not in section.html
    empty = mim_section({})
    assert "Not run" in empty.html


def test_paired_gaps_in_findings():
    after = _summary({"temporal": (0.8, 0.68, 0.9), "comparison": (0.55, 0.4, 0.7)})
    gaps = pd.DataFrame([{"level": "subset", "group": "temporal", "n": 40, "delta": 0.3, "delta_lo": 0.1, "delta_hi": 0.5},
                         {"level": "subset", "group": "comparison", "n": 40, "delta": 0.05, "delta_lo": -0.1,
                          "delta_hi": 0.2}])
    text = " ".join(findings({"a": after}, "b", "a", None, gaps))
    assert "temporal +0.30 [0.10, 0.50]" in text and "The interval excludes 0 for: temporal." in text
