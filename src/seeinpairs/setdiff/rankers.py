"""Rankers: how well does each hypothesis separate set 1 from set 2?

A ranker scores every (hypothesis, image) pair; a hypothesis is then ranked by
the AUROC of its scores with set 1 as the positive class (1.0: every set-1
image scores above every set-2 image; 0.5: no separation), with the mean score
difference, a standardised effect size and Welch's t-test beside it, and the
most and least typical images of each set as examples.

Registered by name (``create_ranker``):

* ``dual_encoder`` -- cosine similarity of text and image embeddings of a
  CLIP-style model (``hf:<hub id or folder>`` or ``open_clip:<name>[@pretrained]``);
* ``vlm`` -- "Does this image show {hypothesis}?" scored by a VLM backend's
  option log-likelihoods: log P(yes) - log P(no);
* ``attributes`` -- ground-truth per-image attributes mapped to hypotheses by
  text similarity: the ranking an ideal scorer would give (an upper bound);
* ``random`` -- seeded random scores: the chance baseline.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy.stats import ttest_ind
from sklearn.metrics import roc_auc_score

from ..backends.base import Backend
from ..cases import stable_digest
from ..errors import BackendError, ConfigError
from ..imaging import load_image
from ..prompts import Request
from ..registry import Registry
from .inputs import SetDiffError, SetPair
from .wording import opposed


@dataclass
class RankedHypothesis:
    """One hypothesis with its separation statistics; ``examples`` hold image indices within each set."""

    text: str
    auroc: float
    mean_difference: float
    effect_size: float
    t_statistic: float
    p_value: float
    examples: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "auroc": self.auroc, "mean_difference": self.mean_difference,
                "effect_size": self.effect_size, "t_statistic": self.t_statistic, "p_value": self.p_value,
                "examples": self.examples}


def _finite_or_nan(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def separation(text: str, scores1: np.ndarray, scores2: np.ndarray, n_examples: int = 3) -> RankedHypothesis:
    """AUROC (set 1 positive), mean difference, Cohen's d (pooled SD) and Welch's t-test of two score arrays."""
    s1, s2 = np.asarray(scores1, dtype=np.float64), np.asarray(scores2, dtype=np.float64)
    labels = np.r_[np.ones(len(s1)), np.zeros(len(s2))]
    auroc = float(roc_auc_score(labels, np.r_[s1, s2]))
    diff = float(s1.mean() - s2.mean())
    pooled = math.sqrt(((len(s1) - 1) * s1.var(ddof=1) + (len(s2) - 1) * s2.var(ddof=1)) / max(1, len(s1) + len(s2) - 2)) \
        if len(s1) > 1 and len(s2) > 1 else 0.0
    effect = diff / pooled if pooled > 0 else (math.copysign(math.inf, diff) if diff else 0.0)
    if len(s1) > 1 and len(s2) > 1 and (s1.var() > 0 or s2.var() > 0):
        with warnings.catch_warnings():  # nearly constant scores: scipy warns, the statistic is still reported
            warnings.simplefilter("ignore", RuntimeWarning)
            test = ttest_ind(s1, s2, equal_var=False)
        t, p = _finite_or_nan(test.statistic), _finite_or_nan(test.pvalue)
    else:
        t, p = float("nan"), float("nan")
    order1, order2 = np.argsort(-s1, kind="stable"), np.argsort(-s2, kind="stable")
    k = n_examples
    examples = {"set1_most": order1[:k].tolist(), "set1_least": order1[::-1][:k].tolist(),
                "set2_most": order2[:k].tolist(), "set2_least": order2[::-1][:k].tolist()}
    return RankedHypothesis(text, auroc, diff, effect, t, p, examples)


def order_ranked(ranked: Sequence[RankedHypothesis]) -> list[RankedHypothesis]:
    """By AUROC, then effect size, then the proposal order (stable): the top one separates best."""
    def key(r: RankedHypothesis) -> tuple[float, float]:
        effect = r.effect_size if not math.isnan(r.effect_size) else 0.0
        return (-r.auroc, -effect)

    return sorted(ranked, key=key)


class Ranker(ABC):
    """Scores hypotheses on images; :meth:`rank` turns the scores into ranked statistics."""

    name: str = "base"

    @abstractmethod
    def score(self, hypotheses: Sequence[str], images: Sequence[str], metadata: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """A ``(len(hypotheses), len(images))`` array: higher means the image fits the hypothesis better."""

    def rank(self, hypotheses: Sequence[str], pair: SetPair, n_examples: int = 3) -> list[RankedHypothesis]:
        if not hypotheses:
            return []
        images = list(pair.set1.images) + list(pair.set2.images)
        metadata = list(pair.set1.metadata) + list(pair.set2.metadata)
        scores = np.asarray(self.score(list(hypotheses), images, metadata), dtype=np.float64)
        if scores.shape != (len(hypotheses), len(images)):
            raise SetDiffError(f"ranker '{self.name}' returned scores of shape {scores.shape}, "
                               f"expected {(len(hypotheses), len(images))}")
        n1 = len(pair.set1)
        return order_ranked([separation(h, row[:n1], row[n1:], n_examples) for h, row in zip(hypotheses, scores)])


RANKERS: Registry[Ranker] = Registry("set-difference ranker", expects=Ranker, name_attribute="name")


def create_ranker(name: str, **kwargs: Any) -> Ranker:
    return RANKERS.create(name, **kwargs)


def list_rankers(pattern: str = "*") -> list[str]:
    return RANKERS.list_names(pattern)


# ----- random ----------------------------------------------------------------------------------------------
@RANKERS.register("random")
class RandomRanker(Ranker):
    """Seeded uniform scores per (hypothesis, image): a random ranking of the hypotheses."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, hypotheses, images, metadata) -> np.ndarray:
        salt = stable_digest("\n".join(images))
        return np.random.default_rng([self.seed, salt]).random((len(hypotheses), len(images)))


# ----- VLM as ranker ------------------------------------------------------------------------------------------
VLM_QUESTION = "Does this image show {hypothesis}? Answer yes or no."


def attribute_request(image: Image.Image, hypothesis: str, template: str = VLM_QUESTION,
                      options: Sequence[str] = ("yes", "no")) -> Request:
    """The yes/no question about one image; the same request is used to train and to rank."""
    content = [{"type": "image"}, {"type": "text", "text": template.format(hypothesis=hypothesis)}]
    return Request(messages=[{"role": "user", "content": content}], images=[image], options=list(options))


@RANKERS.register("vlm")
class VLMRanker(Ranker):
    """log P(yes) - log P(no) for "Does this image show {hypothesis}?" via ``backend.score_options``.

    Works with any backend that scores options, offline with local models; the
    log-odds (rather than P(yes)) keeps resolution where the model is confident.
    """

    name = "vlm"

    def __init__(self, backend: Backend, template: str = VLM_QUESTION, options: Sequence[str] = ("yes", "no"),
                 image_loader: Callable[[str], Image.Image] = load_image, chunk: int = 256) -> None:
        if "{hypothesis}" not in template:
            raise ConfigError("vlm ranker: the question template must contain '{hypothesis}'")
        if len(options) != 2:
            raise ConfigError("vlm ranker: options must be two answers (positive, negative)")
        self.backend = backend
        self.template = template
        self.options = list(options)
        self.load = image_loader
        self.chunk = chunk

    def score(self, hypotheses, images, metadata) -> np.ndarray:
        loaded = [self.load(p) for p in images]
        jobs = [(h, i) for h in range(len(hypotheses)) for i in range(len(images))]
        out = np.zeros((len(hypotheses), len(images)))
        for start in range(0, len(jobs), self.chunk):
            chunk = jobs[start:start + self.chunk]
            requests = [attribute_request(loaded[i], hypotheses[h], self.template, self.options) for h, i in chunk]
            for (h, i), (yes, no) in zip(chunk, self.backend.score_options(requests)):
                out[h, i] = yes - no
        return out


# ----- dual encoder -----------------------------------------------------------------------------------------
@RANKERS.register("dual_encoder")
class DualEncoderRanker(Ranker):
    """Cosine similarity between hypothesis and image embeddings of a CLIP-style dual encoder.

    ``model``: ``hf:<hub id or folder>`` (any transformers model with
    ``get_text_features``/``get_image_features`` and a saved tokenizer and image
    processor), ``open_clip:<name>[@pretrained]`` or a bare folder/hub id (read as ``hf:``).
    """

    name = "dual_encoder"

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 32,
                 image_loader: Callable[[str], Image.Image] = load_image) -> None:
        kind, _, argument = model.partition(":") if model.startswith(("hf:", "open_clip:")) else ("hf", "", model)
        self.model_name = model
        self.device = device
        self.batch_size = batch_size
        self.load = image_loader
        if kind == "open_clip":
            self._init_open_clip(argument)
        else:
            self._init_hf(argument)

    def _init_hf(self, model_id: str) -> None:
        import transformers
        from transformers import AutoModel, AutoTokenizer

        from ..embeddings.images import load_image_processor

        transformers.utils.logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(model_id).eval().to(self.device)
            self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        except (OSError, ValueError) as exc:
            raise BackendError(f"dual_encoder ranker: cannot load '{model_id}' ({str(exc).splitlines()[0]})") from None
        if not hasattr(self.model, "get_text_features") or not hasattr(self.model, "get_image_features"):
            raise BackendError(f"dual_encoder ranker: '{model_id}' is not a dual encoder "
                               "(no get_text_features/get_image_features)")
        self.processor = load_image_processor(model_id, None, False)
        self.kind = "hf"

    def _init_open_clip(self, spec: str) -> None:
        try:
            import open_clip
        except ImportError:
            raise ConfigError(f"dual_encoder ranker 'open_clip:{spec}' needs the open_clip_torch package "
                              "(pip install open_clip_torch)") from None
        name, _, pretrained = spec.partition("@")
        try:
            model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained or None)
        except Exception as exc:  # noqa: BLE001  (unknown names and download failures surface as varied types)
            raise BackendError(f"dual_encoder ranker: cannot create open_clip model '{spec}' "
                               f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        self.model = model.eval().to(self.device)
        self.transform = transform
        self.tokenizer = open_clip.get_tokenizer(name)
        self.kind = "open_clip"

    @staticmethod
    def _tensor(output: Any) -> Any:
        import torch

        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        rows = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start:start + self.batch_size])
                if self.kind == "open_clip":
                    features = self.model.encode_text(self.tokenizer(batch).to(self.device))
                else:
                    tokens = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(self.device)
                    features = self._tensor(self.model.get_text_features(
                        input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
                rows.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        return np.concatenate(rows)

    def encode_images(self, paths: Sequence[str]) -> np.ndarray:
        import torch

        rows = []
        with torch.no_grad():
            for start in range(0, len(paths), self.batch_size):
                images = [self.load(p) for p in paths[start:start + self.batch_size]]
                if self.kind == "open_clip":
                    features = self.model.encode_image(torch.stack([self.transform(i) for i in images]).to(self.device))
                else:
                    pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
                    features = self._tensor(self.model.get_image_features(pixel_values=pixels))
                rows.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        return np.concatenate(rows)

    def score(self, hypotheses, images, metadata) -> np.ndarray:
        return self.encode_texts(hypotheses) @ self.encode_images(images).T


# ----- ground-truth attributes (upper bound) -----------------------------------------------------------------------
@RANKERS.register("attributes")
class AttributeRanker(Ranker):
    """Scores images by their known attributes: ``concepts`` maps a phrase to a function of an image's
    metadata. A hypothesis takes the function of its most similar phrase (never one with opposed
    wording, e.g. left for right) when the sentence-embedding similarity is at least
    ``min_similarity``, else a constant (AUROC 0.5).
    """

    name = "attributes"

    def __init__(self, concepts: Mapping[str, Callable[[Mapping[str, Any]], float]], min_similarity: float = 0.8,
                 embedder: Any = None) -> None:
        if not concepts:
            raise ConfigError("attributes ranker: no concepts given")
        self.concepts = dict(concepts)
        self.min_similarity = min_similarity
        self._embedder = embedder

    def match(self, hypotheses: Sequence[str]) -> list[str | None]:
        """The concept each hypothesis is scored by (``None``: none close enough)."""
        names = list(self.concepts)
        exact = [h if h in self.concepts else None for h in hypotheses]
        if all(e is not None for e in exact):
            return exact
        if self._embedder is None:
            from ..embeddings.text import get_text_embedder

            self._embedder = get_text_embedder()
        sims = self._embedder.similarity(list(hypotheses), names)
        out: list[str | None] = []
        for h, e, row in zip(hypotheses, exact, sims):
            allowed = [(float(s), n) for s, n in zip(row, names) if not opposed(h, n)]
            best = max(allowed, default=(-1.0, None))
            out.append(e if e is not None else (best[1] if best[0] >= self.min_similarity else None))
        return out

    def score(self, hypotheses, images, metadata) -> np.ndarray:
        out = np.zeros((len(hypotheses), len(images)))
        for h, concept in enumerate(self.match(hypotheses)):
            if concept is not None:
                out[h] = [float(self.concepts[concept](m)) for m in metadata]
        return out
