import pytest

from seeinpairs.setdiff.parsing import parse_boxes, parse_hypotheses, parse_judge_score


@pytest.mark.parametrize("reply, expected, how", [
    ('["more opacity", "larger heart"]', ["more opacity", "larger heart"], "strict"),
    ('Sure! Here they are:\n```json\n["more opacity", "larger heart",]\n```', ["more opacity", "larger heart"], "repaired"),
    ("['more opacity', 'larger heart']", ["more opacity", "larger heart"], "repaired"),
    ('{"differences": [{"difference": "more opacity"}, {"text": "larger heart"}]}', ["more opacity", "larger heart"],
     "strict"),
    ('The differences are ["more opacity", "larger heart"', ["more opacity", "larger heart"], "repaired"),
    ("1. more opacity\n2) larger heart\n- pleural effusion.", ["more opacity", "larger heart", "pleural effusion"],
     "lines"),
    ('["more opacity", "more opacity"]', ["more opacity"], "strict"),
])
def test_hypotheses_are_parsed_tolerantly(reply, expected, how):
    parsed = parse_hypotheses(reply)
    assert parsed.value == expected and parsed.how == how and parsed.ok


@pytest.mark.parametrize("reply", ["", "I cannot tell the difference.", "{not json at all", "[1, 2, 3]"])
def test_unparseable_hypotheses_fail(reply):
    parsed = parse_hypotheses(reply)
    assert not parsed.ok and parsed.value == []


def test_boxes():
    assert parse_boxes("[[0.1, 0.2, 0.5, 0.6], [0, 0, 0.01, 0.01]]").value == [(0.1, 0.2, 0.5, 0.6)]
    assert parse_boxes('{"boxes": [{"box": [10, 20, 50, 60]}]}').value == [(0.1, 0.2, 0.5, 0.6)]
    assert parse_boxes("[0.6, 0.2, 0.1, 0.9]").value == [(0.1, 0.2, 0.6, 0.9)]
    assert not parse_boxes("look at the left lung").ok


@pytest.mark.parametrize("reply, score, ok", [
    ("2", 2, True), ('{"score": 1}', 1, True), ("Score: 0 because it is unrelated", 0, True),
    ("I would say 3", 0, False), ("matches well", 0, False), ("1.5", 0, False),
])
def test_judge_scores(reply, score, ok):
    parsed = parse_judge_score(reply)
    assert (parsed.value, parsed.ok) == (score, ok)
