import json

import numpy as np
import pytest
from PIL import Image
from setdiff_helpers import ScriptedBackend, request_text

from seeinpairs.setdiff import (
    SetDiffError,
    create_proposer,
    deduplicate,
    list_proposers,
)
from seeinpairs.setdiff.proposers import crop, image_grid, sample_rounds

pytest_plugins = ["setdiff_fixtures"]  # small_pairs, tiny_clip, raddiff_files

MALFORMED = "Here you go:\n```json\n['larger opacity', \"left lung lesion\",]\n```"


def _reply(request) -> str:
    text = request_text(request)
    if "one sentence" in text:
        return "a chest radiograph"
    if "regions worth a closer look" in text:
        return "boxes: [[0.1, 0.2, 0.5, 0.8], [0.5, 0.2, 0.9, 0.8]]"
    if "zoomed regions" in text:
        return '["left lung lesion", "brighter left lower zone"'  # truncated JSON
    return MALFORMED


def _factories():
    return {
        "concept_vocabulary": lambda: create_proposer("concept_vocabulary"),
        "captions_lm": lambda: create_proposer("captions_lm", captioner=ScriptedBackend(reply=_reply), sample_size=5,
                                               rounds=2),
        "image_grid": lambda: create_proposer("image_grid", model=ScriptedBackend(reply=_reply), sample_size=5,
                                              rounds=2, cell=16),
        "zoom": lambda: create_proposer("zoom", model=ScriptedBackend(reply=_reply), sample_size=5, rounds=2, cell=16),
        "reports_lm": lambda: create_proposer("reports_lm", model=ScriptedBackend(reply=_reply), sample_size=5,
                                              rounds=2),
        "report_contrast": lambda: create_proposer("report_contrast"),  # the generated pairs carry reports
    }


@pytest.mark.parametrize("name", list_proposers())
def test_every_proposer_returns_parsed_hypotheses_deterministically(name, small_pairs):
    assert set(_factories()) == set(list_proposers())
    pair = small_pairs[1]
    proposal = _factories()[name]().propose(pair, seed=4)
    assert proposal.hypotheses and all(isinstance(h, str) and h.strip() == h for h in proposal.hypotheses)
    assert proposal.parse_failures == 0
    assert _factories()[name]().propose(pair, seed=4).hypotheses == proposal.hypotheses
    if name not in ("concept_vocabulary", "report_contrast"):
        assert "larger opacity" in proposal.hypotheses and "left lung lesion" in proposal.hypotheses
    if name == "zoom":
        assert "brighter left lower zone" in proposal.hypotheses


def test_unparseable_replies_are_counted(small_pairs):
    proposer = create_proposer("image_grid", model=ScriptedBackend(reply=lambda r: "they look the same"),
                               sample_size=4, rounds=3, cell=8)
    proposal = proposer.propose(small_pairs[0])
    assert proposal.hypotheses == [] and proposal.parse_failures == 3 and proposal.calls == 3
    zoom = create_proposer("zoom", model=ScriptedBackend(reply=lambda r: "no boxes"), base=create_proposer(
        "concept_vocabulary", concepts=["a lesion"]), sample_size=4, rounds=2, cell=8)
    refined = zoom.propose(small_pairs[0])
    assert refined.hypotheses == ["a lesion"] and refined.parse_failures == 2


def test_grid_prompt_holds_one_grid_per_set(small_pairs):
    backend = ScriptedBackend(reply=lambda r: "[]")
    create_proposer("image_grid", model=backend, sample_size=20, rounds=1, cell=10).propose(small_pairs[0])
    request = backend.generated[0]
    assert len(request.images) == 2 and request.images[0].size == (50, 40)
    assert sum(p.get("type") == "image" for p in request.messages[0]["content"]) == 2


def test_seeded_sampling_and_image_helpers(small_pairs):
    image_set = small_pairs[0].set1
    a = sample_rounds(image_set, 5, 3, seed=0, salt="x")
    assert a == sample_rounds(image_set, 5, 3, seed=0, salt="x") and a != sample_rounds(image_set, 5, 3, seed=1, salt="x")
    assert all(len(set(r)) == 5 for r in a) and len(sample_rounds(image_set, 50, 1, 0, "x")[0]) == len(image_set)
    image = Image.fromarray(np.arange(100 * 80 * 3, dtype=np.uint32).reshape(80, 100, 3).astype(np.uint8))
    assert crop(image, (0.5, 0.25, 1.0, 0.75)).size == (50, 40)
    assert image_grid([image] * 3, rows=2, cols=2, cell=8).size == (16, 16)


def test_concept_vocabulary_sources(tmp_path):
    default = create_proposer("concept_vocabulary").concepts
    assert "a focal lung opacity" in default and len(default) == len(set(default))
    path = tmp_path / "concepts.yaml"
    path.write_text(json.dumps({"findings": ["a nodule"], "devices": ["a pacemaker", "a nodule"]}))
    assert create_proposer("concept_vocabulary", concepts=path).concepts == ["a nodule", "a pacemaker"]
    path.write_text("just text")
    with pytest.raises(SetDiffError, match="expected a non-empty list"):
        create_proposer("concept_vocabulary", concepts=path)


def test_deduplicate_by_embedding_and_optional_model_confirmation():
    texts = ["a lesion in the left lung", "A lesion in the left lung.", "a lesion in the left lung ",
             "a lesion in the right lung", "an older patient"]
    kept = deduplicate(texts)
    assert kept == ["a lesion in the left lung", "a lesion in the right lung", "an older patient"]
    # the embedding alone would merge the antonyms: they are as close as a paraphrase
    assert deduplicate(["a lesion in the left lung", "left lung lesion", "a lesion in the right lung",
                        "a large lesion", "a small lesion"]) == ["a lesion in the left lung",
                                                                 "a lesion in the right lung", "a large lesion",
                                                                 "a small lesion"]
    says_same = ScriptedBackend(score=lambda r: [0.0, -1.0])
    assert deduplicate(["an older patient", "an elderly patient"], threshold=0.99, confirm=says_same,
                       confirm_band=0.5) == ["an older patient"]
    says_different = ScriptedBackend(score=lambda r: [-1.0, 0.0])
    assert len(deduplicate(["an older patient", "an elderly patient"], threshold=0.99, confirm=says_different,
                           confirm_band=0.5)) == 2
