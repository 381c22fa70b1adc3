import pytest
from setdiff_helpers import ScriptedBackend, request_text

from seeinpairs.setdiff import (
    ImageSet,
    SetDiffError,
    SetPair,
    acc_at,
    create_judge,
    list_judges,
)

PAIR = SetPair("p", ImageSet("a", ["a.png"]), ImageSet("b", ["b.png"]), set1_condition="left lung lesion ",
               set2_condition="right lung lesion ", difficulty="medium")
HYPOTHESES = ["a lesion in the left lung", "a lesion in the right lung", "a female patient"]


def _factories():
    replies = {"a lesion in the left lung": "2", "a lesion in the right lung": '{"score": 0}',
               "a female patient": "0"}
    return {"lm": lambda: create_judge("lm", backend=ScriptedBackend(
                reply=lambda r: next(v for k, v in replies.items() if f'"{k}"' in request_text(r)))),
            "embedding": lambda: create_judge("embedding")}


@pytest.mark.parametrize("name", list_judges())
def test_every_judge_scores_the_true_side_2_and_the_other_side_0(name):
    assert set(_factories()) == set(list_judges())
    judgements = _factories()[name]().judge(HYPOTHESES, PAIR)
    assert [j.score for j in judgements] == [2, 0, 0]
    assert all(j.parsed for j in judgements)


def test_lm_judge_counts_parse_failures_as_zero():
    backend = ScriptedBackend(reply=["1", "no idea", "Score: 7", "2"])
    judge = create_judge("lm", backend=backend)
    judgements = judge.judge(["a", "b", "c", "d"], PAIR)
    assert [j.score for j in judgements] == [1, 0, 0, 2]
    assert [j.parsed for j in judgements] == [True, False, False, True]
    assert "left lung lesion" in request_text(backend.generated[0]) and "right lung lesion" in request_text(backend.generated[0])


def test_embedding_judge_partial_credit_and_stated_thresholds():
    judge = create_judge("embedding", match=0.8, partial=0.7, margin=0.02)
    pair = SetPair("q", PAIR.set1, PAIR.set2, set1_condition="old patient ", set2_condition="young patient ")
    assert [j.score for j in judge.judge(["an older patient", "a younger patient", "cardiomegaly"], pair)] == [2, 0, 0]
    loose = create_judge("embedding", match=0.99, partial=0.7)
    assert loose.judge(["an older patient"], pair)[0].score == 1
    assert "0.8" in judge.describe() and "0.7" in judge.describe() and "0.02" in judge.describe()
    with pytest.raises(SetDiffError):
        create_judge("embedding", match=0.5, partial=0.7)
    with pytest.raises(SetDiffError, match="no ground truth"):
        judge.judge(["x"], SetPair("r", PAIR.set1, PAIR.set2))


def test_acc_at_k():
    assert acc_at([0, 1, 2, 0], 1) == 0.0
    assert acc_at([0, 1, 2, 0], 2) == 0.5
    assert acc_at([0, 1, 2, 0], 5) == 1.0
    assert acc_at([2], None) == 1.0 and acc_at([], 1) == 0.0


def test_lm_judge_through_a_local_vlm_counts_unreadable_replies(tmp_path):
    """Text-only requests run through HFBackend; an untrained model's reply is unreadable: 0, counted."""
    from seeinpairs.backends.hf import HFBackend
    from seeinpairs.backends.tiny import build_tiny_vlm

    backend = HFBackend(build_tiny_vlm("qwen2_vl", tmp_path / "tiny", texts=["0 1 2 score"]), device="cpu")
    judgements = create_judge("lm", backend=backend, max_new_tokens=4).judge(HYPOTHESES[:2], PAIR)
    assert len(judgements) == 2
    for j in judgements:
        assert j.score in (0, 1, 2) and (j.parsed or j.score == 0)


def test_expected_random_acc_is_exact():
    import itertools

    import numpy as np

    from seeinpairs.setdiff.judges import expected_random_acc

    scores = [0, 2, 0, 1, 0]
    for k in (1, 2, 5):
        brute = np.mean([acc_at([scores[i] for i in order], k) for order in itertools.permutations(range(5))])
        assert expected_random_acc(scores, k) == pytest.approx(brute)
    assert expected_random_acc([0, 0, 2, 0], 1) == pytest.approx(0.25) and expected_random_acc([], 1) == 0.0
