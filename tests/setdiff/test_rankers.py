import math

import numpy as np
import pytest
from scipy.stats import ttest_ind
from setdiff_helpers import ScriptedBackend, request_text
from sklearn.metrics import roc_auc_score

from seeinpairs.errors import ConfigError
from seeinpairs.setdiff import create_ranker, list_rankers, separation
from seeinpairs.setdiff.benchmark import CONCEPT_TRUTH

pytest_plugins = ["setdiff_fixtures"]  # small_pairs, tiny_clip, raddiff_files

HYPOTHESES = ["a focal lung opacity", "a lesion in the left lung", "a female patient"]


def test_separation_matches_scikit_learn_and_scipy():
    rng = np.random.default_rng(0)
    s1 = np.r_[rng.normal(1.0, 1.0, 30), [0.5, 0.5]]  # ties across the sets count half
    s2 = np.r_[rng.normal(0.0, 1.5, 25), [0.5]]
    ranked = separation("h", s1, s2)
    labels = np.r_[np.ones(len(s1)), np.zeros(len(s2))]
    assert ranked.auroc == pytest.approx(roc_auc_score(labels, np.r_[s1, s2]), abs=1e-12)
    test = ttest_ind(s1, s2, equal_var=False)
    assert ranked.t_statistic == pytest.approx(test.statistic) and ranked.p_value == pytest.approx(test.pvalue)
    assert ranked.mean_difference == pytest.approx(s1.mean() - s2.mean())
    assert ranked.examples["set1_most"][0] == int(np.argmax(s1)) and ranked.examples["set2_least"][0] == int(np.argmin(s2))
    reverse = separation("h", s2, s1)
    assert reverse.auroc == pytest.approx(1 - ranked.auroc)
    constant = separation("c", np.zeros(4), np.zeros(5))
    assert constant.auroc == 0.5 and math.isnan(constant.p_value) and constant.effect_size == 0.0


def _factories(tiny_clip):
    def vlm():
        # "yes" is likelier the brighter the image, so "a focal lung opacity" (the only rule) separates by brightness
        def score(request):
            brightness = float(np.asarray(request.images[0]).mean()) / 255
            bonus = brightness if "opacity" in request_text(request) else 0.0
            return [bonus, 0.0]
        return create_ranker("vlm", backend=ScriptedBackend(score=score))

    return {
        "random": lambda: create_ranker("random", seed=3),
        "vlm": vlm,
        "dual_encoder": lambda: create_ranker("dual_encoder", model=f"hf:{tiny_clip}"),
        "attributes": lambda: create_ranker("attributes", concepts=CONCEPT_TRUTH),
    }


@pytest.mark.parametrize("name", list_rankers())
def test_every_ranker_scores_and_ranks_by_auroc(name, tiny_clip, small_pairs):
    factories = _factories(tiny_clip)
    assert set(factories) == set(list_rankers())
    ranker = factories[name]()
    pair = small_pairs[0]
    images = pair.set1.images + pair.set2.images
    scores = ranker.score(HYPOTHESES, images, pair.set1.metadata + pair.set2.metadata)
    assert scores.shape == (len(HYPOTHESES), len(images)) and np.isfinite(scores).all()
    ranked = ranker.rank(HYPOTHESES, pair)
    assert sorted(r.text for r in ranked) == sorted(HYPOTHESES)
    assert [r.auroc for r in ranked] == sorted((r.auroc for r in ranked), reverse=True)
    again = factories[name]().rank(HYPOTHESES, pair)
    assert [(r.text, r.auroc) for r in again] == [(r.text, r.auroc) for r in ranked]  # deterministic


def test_attribute_ranker_puts_the_true_difference_first(small_pairs):
    presence = small_pairs[0]
    ranked = create_ranker("attributes", concepts=CONCEPT_TRUTH).rank(list(CONCEPT_TRUTH), presence)
    assert ranked[0].text == "a focal lung opacity" and ranked[0].auroc == 1.0
    assert next(r for r in ranked if r.text == "clear lung fields").auroc == 0.0
    # a paraphrase is matched to its concept by text similarity; an unrelated text is not
    ranker = create_ranker("attributes", concepts=CONCEPT_TRUTH)
    assert ranker.match(["a focal opacity in the lung", "the weather is nice"]) == ["a focal lung opacity", None]


def test_vlm_ranker_uses_yes_minus_no_log_likelihood(small_pairs):
    backend = ScriptedBackend(score=lambda r: [-0.5, -2.0] if "left" in request_text(r) else [-2.0, -0.5])
    ranker = create_ranker("vlm", backend=backend)
    pair = small_pairs[1]
    scores = ranker.score(["a lesion in the left lung", "a lesion in the right lung"], pair.set1.images[:2], [{}, {}])
    assert np.allclose(scores, [[1.5, 1.5], [-1.5, -1.5]])
    request = backend.scored[0]
    assert request.options == ["yes", "no"] and len(request.images) == 1
    assert request_text(request) == "Does this image show a lesion in the left lung? Answer yes or no."
    with pytest.raises(ConfigError, match="hypothesis"):
        create_ranker("vlm", backend=backend, template="Is it there?")


def test_dual_encoder_scores_are_cosines_and_open_clip_fails_clearly(tiny_clip, small_pairs):
    ranker = create_ranker("dual_encoder", model=str(tiny_clip))
    text, image = ranker.encode_texts(["a lesion"]), ranker.encode_images(small_pairs[0].set1.images[:2])
    assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert np.allclose(ranker.score(["a lesion"], small_pairs[0].set1.images[:2], [{}, {}]), text @ image.T)
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"needs the open_clip_torch package") as info:
            create_ranker("dual_encoder", model="open_clip:ViT-B-32@laion2b_s34b_b79k")
        assert "\n" not in str(info.value)
