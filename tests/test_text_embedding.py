import numpy as np
import pytest

from seeinpairs.embeddings.text import get_text_embedder
from seeinpairs.errors import ConfigError


def test_packaged_sentence_model_ranks_paraphrase_above_unrelated_text():
    embedder = get_text_embedder()
    vectors = embedder.encode(["a lesion in the left lung", "an opacity in the left lung", "the patient is a woman"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.1


def test_empty_input_and_missing_model():
    assert get_text_embedder().encode([]).shape == (0, 384)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        get_text_embedder("/nonexistent/model-folder")
