"""Proposers: candidate differences between two image sets, as short noun phrases.

Registered by name (``create_proposer``):

* ``concept_vocabulary`` -- a configurable list of findings and attributes (the
  offline default; the ranker decides which of them separate the sets);
* ``captions_lm`` -- caption sampled images with a VLM, then ask a language
  model (any backend that generates) for differences as JSON;
* ``image_grid`` -- one multi-image prompt with a 4x5 grid of sampled images per set;
* ``zoom`` -- the refinement iteration around another proposer: the model names
  boxes to zoom into, sees crop grids of those regions for both sets, and refines;
* ``reports_lm`` and ``report_contrast`` -- guided by clinical reports, with refinement
  rounds (:mod:`.report_proposers`).

Sampling is seeded per (seed, pair, round, set), so a rerun proposes the same
hypotheses. Replies are parsed tolerantly and unparseable ones are counted.
Near-duplicates are merged by sentence-embedding similarity, optionally
confirmed by a model's yes/no answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from ..backends.base import Backend
from ..cases import stable_digest
from ..configfile import read_yaml
from ..imaging import load_image
from ..prompts import Request
from ..registry import Registry
from .inputs import ImageSet, SetDiffError, SetPair
from .parsing import parse_boxes, parse_hypotheses
from .wording import opposed

DEFAULT_CONCEPTS = "setdiff_concepts.yaml"


@dataclass
class Proposal:
    """Hypotheses for one pair, with the raw replies and how many could not be parsed."""

    hypotheses: list[str]
    replies: list[str] = field(default_factory=list)
    parse_failures: int = 0
    calls: int = 0

    def merged(self, other: Proposal) -> Proposal:
        return Proposal(list(dict.fromkeys(self.hypotheses + other.hypotheses)), self.replies + other.replies,
                        self.parse_failures + other.parse_failures, self.calls + other.calls)


class Proposer(ABC):
    """Proposes candidate differences (what set 1 shows more than set 2)."""

    name: str = "base"

    @abstractmethod
    def propose(self, pair: SetPair, seed: int = 0) -> Proposal:
        """Hypotheses for ``pair``; identical for the same pair and seed."""


PROPOSERS: Registry[Proposer] = Registry("set-difference proposer", expects=Proposer, name_attribute="name")
# the report-guided proposers live in .report_proposers, which builds on this module
PROPOSERS.register("reports_lm", "seeinpairs.setdiff.report_proposers:ReportLMProposer",
                   description="sampled reports of both sets (and image grids) to a generating backend")
PROPOSERS.register("report_contrast", "seeinpairs.setdiff.report_proposers:ReportContrastProposer",
                   description="word n-grams more frequent in set A's reports than in set B's, no model")


def create_proposer(name: str, **kwargs: Any) -> Proposer:
    return PROPOSERS.create(name, **kwargs)


def list_proposers(pattern: str = "*") -> list[str]:
    return PROPOSERS.list_names(pattern)


# ----- shared helpers -----------------------------------------------------------------------------------
def sample_rounds(image_set: ImageSet, size: int, rounds: int, seed: int, salt: str) -> list[list[int]]:
    """``rounds`` seeded samples of ``size`` image indices (without replacement within a round)."""
    n = len(image_set)
    out = []
    for r in range(rounds):
        rng = np.random.default_rng([seed, stable_digest(salt), r])
        out.append(sorted(int(i) for i in rng.choice(n, size=min(size, n), replace=False)))
    return out


def image_grid(images: Sequence[Image.Image], rows: int = 4, cols: int = 5, cell: int = 96) -> Image.Image:
    """Images tiled row by row into a ``rows x cols`` grid of ``cell``-pixel squares (blank where missing)."""
    grid = Image.new("RGB", (cols * cell, rows * cell), (0, 0, 0))
    for i, image in enumerate(list(images)[: rows * cols]):
        tile = image.convert("RGB").resize((cell, cell), Image.BILINEAR)
        grid.paste(tile, ((i % cols) * cell, (i // cols) * cell))
    return grid


def crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The region of ``box`` (fractions x0, y0, x1, y1) of an image."""
    w, h = image.size
    x0, y0, x1, y1 = box
    return image.crop((int(x0 * w), int(y0 * h), max(int(x1 * w), int(x0 * w) + 1), max(int(y1 * h), int(y0 * h) + 1)))


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def one_turn_request(text_parts: Sequence[Any], images: Sequence[Image.Image] = ()) -> Request:
    """A one-turn request; ``text_parts`` holds strings and ``None`` for each image slot, in order."""
    content = [_text(p) if isinstance(p, str) else {"type": "image"} for p in text_parts]
    return Request(messages=[{"role": "user", "content": content}], images=list(images), options=[])


def _load_concepts(concepts: Sequence[str] | str | Path | None) -> list[str]:
    if concepts is None:
        raw = yaml.safe_load(resources.files("seeinpairs").joinpath(f"configs/{DEFAULT_CONCEPTS}").read_text())
        source = DEFAULT_CONCEPTS
    elif isinstance(concepts, (str, Path)):
        path = Path(concepts)
        if not path.is_file():
            raise SetDiffError(f"{path}: concept vocabulary file not found")
        raw = read_yaml(path, what="concept vocabulary")
        source = str(path)
    else:
        raw, source = list(concepts), "concepts"
    if isinstance(raw, dict):
        raw = [item for group in raw.values() for item in (group or [])]
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) and c.strip() for c in raw):
        raise SetDiffError(f"{source}: expected a non-empty list of concept phrases (or groups of them)")
    return list(dict.fromkeys(c.strip() for c in raw))


DIFFERENCE_INSTRUCTION = (
    "Name what set A shows more often than set B, as {low} to {high} short noun phrases a radiologist would "
    "use (findings, their location or size, patient or image attributes). Reply with a JSON list of strings only."
)


# ----- concept vocabulary -----------------------------------------------------------------------------------
@PROPOSERS.register("concept_vocabulary")
class ConceptVocabularyProposer(Proposer):
    """Every phrase of a vocabulary is a candidate; needs no model, so it is the offline default.

    ``concepts``: phrases, a YAML file (a list, or groups of lists), or ``None``
    for the packaged chest-radiograph vocabulary.
    """

    name = "concept_vocabulary"

    def __init__(self, concepts: Sequence[str] | str | Path | None = None) -> None:
        self.concepts = _load_concepts(concepts)

    def propose(self, pair: SetPair, seed: int = 0) -> Proposal:
        return Proposal(list(self.concepts))


# ----- captions, then a language model ------------------------------------------------------------------------
@PROPOSERS.register("captions_lm")
class CaptionLMProposer(Proposer):
    """Caption each sampled image with ``captioner``, then ask ``language_model`` (default: the same backend)."""

    name = "captions_lm"

    def __init__(self, captioner: Backend, language_model: Backend | None = None, sample_size: int = 20,
                 rounds: int = 3, n_differences: tuple[int, int] = (5, 10),
                 caption_prompt: str = "Describe the findings in this chest radiograph in one sentence.",
                 max_new_tokens: int = 160, image_loader: Callable[[str], Image.Image] = load_image) -> None:
        self.captioner = captioner
        self.language_model = language_model or captioner
        self.sample_size, self.rounds = sample_size, rounds
        self.n_differences = n_differences
        self.caption_prompt = caption_prompt
        self.max_new_tokens = max_new_tokens
        self.load = image_loader
        self._captions: dict[str, str] = {}

    def captions(self, paths: Sequence[str]) -> list[str]:
        """Captions of ``paths`` (each image captioned once per proposer)."""
        missing = [p for p in dict.fromkeys(paths) if p not in self._captions]
        if missing:
            replies = self.captioner.generate([one_turn_request([None, self.caption_prompt], [self.load(p)]) for p in missing],
                                              max_new_tokens=48)
            self._captions.update(zip(missing, replies))
        return [self._captions[p] for p in paths]

    def propose(self, pair: SetPair, seed: int = 0) -> Proposal:
        samples1 = sample_rounds(pair.set1, self.sample_size, self.rounds, seed, f"{pair.pair_id}:1")
        samples2 = sample_rounds(pair.set2, self.sample_size, self.rounds, seed, f"{pair.pair_id}:2")
        requests = []
        for idx1, idx2 in zip(samples1, samples2):
            cap1 = self.captions([pair.set1.images[i] for i in idx1])
            cap2 = self.captions([pair.set2.images[i] for i in idx2])
            text = ("Captions of images from set A:\n" + "\n".join(f"- {c}" for c in cap1)
                    + "\nCaptions of images from set B:\n" + "\n".join(f"- {c}" for c in cap2) + "\n"
                    + DIFFERENCE_INSTRUCTION.format(low=self.n_differences[0], high=self.n_differences[1]))
            requests.append(one_turn_request([text]))
        replies = self.language_model.generate(requests, max_new_tokens=self.max_new_tokens)
        return collect_proposal(replies, len(requests))


def collect_proposal(replies: Sequence[str], calls: int) -> Proposal:
    """The hypotheses parsed from a proposer's replies (first occurrence kept), with the unparsable count."""
    hypotheses: list[str] = []
    failures = 0
    for reply in replies:
        parsed = parse_hypotheses(reply)
        failures += not parsed.ok
        hypotheses.extend(parsed.value)
    return Proposal(list(dict.fromkeys(hypotheses)), list(replies), failures, calls)


# ----- image grids --------------------------------------------------------------------------------------------
@PROPOSERS.register("image_grid")
class ImageGridProposer(Proposer):
    """One multi-image prompt per round: a ``rows x cols`` grid of sampled images for each set."""

    name = "image_grid"

    def __init__(self, model: Backend, sample_size: int = 20, rounds: int = 3, rows: int = 4, cols: int = 5,
                 cell: int = 96, n_differences: tuple[int, int] = (5, 10), max_new_tokens: int = 160,
                 captions: CaptionLMProposer | None = None,
                 image_loader: Callable[[str], Image.Image] = load_image) -> None:
        self.model = model
        self.sample_size, self.rounds = sample_size, rounds
        self.rows, self.cols, self.cell = rows, cols, cell
        self.n_differences = n_differences
        self.max_new_tokens = max_new_tokens
        self.captions = captions
        self.load = image_loader

    def grids(self, pair: SetPair, seed: int) -> list[tuple[list[int], list[int], Image.Image, Image.Image]]:
        samples1 = sample_rounds(pair.set1, self.sample_size, self.rounds, seed, f"{pair.pair_id}:1")
        samples2 = sample_rounds(pair.set2, self.sample_size, self.rounds, seed, f"{pair.pair_id}:2")
        out = []
        for idx1, idx2 in zip(samples1, samples2):
            grid1 = image_grid([self.load(pair.set1.images[i]) for i in idx1], self.rows, self.cols, self.cell)
            grid2 = image_grid([self.load(pair.set2.images[i]) for i in idx2], self.rows, self.cols, self.cell)
            out.append((idx1, idx2, grid1, grid2))
        return out

    def propose(self, pair: SetPair, seed: int = 0) -> Proposal:
        requests = []
        for idx1, idx2, grid1, grid2 in self.grids(pair, seed):
            parts: list[Any] = ["Set A:", None, "Set B:", None]
            if self.captions is not None:
                cap1 = self.captions.captions([pair.set1.images[i] for i in idx1])
                cap2 = self.captions.captions([pair.set2.images[i] for i in idx2])
                parts.append("Captions of set A: " + " | ".join(cap1) + "\nCaptions of set B: " + " | ".join(cap2))
            parts.append(DIFFERENCE_INSTRUCTION.format(low=self.n_differences[0], high=self.n_differences[1]))
            requests.append(one_turn_request(parts, [grid1, grid2]))
        return collect_proposal(self.model.generate(requests, max_new_tokens=self.max_new_tokens), len(requests))


# ----- zoom-in refinement (iteration 2) ---------------------------------------------------------------------------
@PROPOSERS.register("zoom")
class ZoomRefinementProposer(Proposer):
    """Iteration 1 by ``base``; iteration 2: the model names ``n_boxes`` regions to zoom into, sees a
    crop grid of each region for both sets, and returns refined hypotheses (merged with iteration 1).

    When no box can be parsed from a reply the round is counted as a parse failure and only the
    first iteration's hypotheses remain for it.
    """

    name = "zoom"

    def __init__(self, model: Backend, base: Proposer | None = None, n_boxes: int = 5, sample_size: int = 20,
                 rounds: int = 3, rows: int = 4, cols: int = 5, cell: int = 96, max_new_tokens: int = 160,
                 image_loader: Callable[[str], Image.Image] = load_image) -> None:
        self.model = model
        self.grid = ImageGridProposer(model, sample_size, rounds, rows, cols, cell, max_new_tokens=max_new_tokens,
                                      image_loader=image_loader)
        self.base = base if base is not None else self.grid
        self.n_boxes = n_boxes
        self.max_new_tokens = max_new_tokens
        self.load = image_loader

    def propose(self, pair: SetPair, seed: int = 0) -> Proposal:
        first = self.base.propose(pair, seed)
        return first.merged(self.refine(pair, first.hypotheses, seed))

    def refine(self, pair: SetPair, hypotheses: Sequence[str], seed: int = 0) -> Proposal:
        rounds = self.grid.grids(pair, seed)
        listed = "; ".join(hypotheses) or "none yet"
        box_requests = [one_turn_request(["Set A:", None, "Set B:", None,
                              (f"Candidate differences so far: {listed}.\nName {self.n_boxes} regions worth a closer "
                               "look, as a JSON list of boxes [x0, y0, x1, y1] in fractions of the image (0 to 1).")],
                             [g1, g2]) for _, _, g1, g2 in rounds]
        box_replies = self.model.generate(box_requests, max_new_tokens=self.max_new_tokens)
        failures, refine_requests = 0, []
        for (idx1, idx2, _, _), reply in zip(rounds, box_replies):
            boxes = parse_boxes(reply)
            if not boxes.ok:
                failures += 1
                continue
            parts: list[Any] = []
            images: list[Image.Image] = []
            for number, box in enumerate(boxes.value[: self.n_boxes], start=1):
                for label, image_set, idx in (("A", pair.set1, idx1), ("B", pair.set2, idx2)):
                    crops = [crop(self.load(image_set.images[i]), box) for i in idx]
                    parts += [f"Region {number} [{', '.join(f'{v:.2f}' for v in box)}], set {label}:", None]
                    images.append(image_grid(crops, self.grid.rows, self.grid.cols, self.grid.cell))
            parts.append(f"Candidate differences so far: {listed}.\nUsing the zoomed regions, correct and refine "
                         "them: reply with a JSON list of strings naming what set A shows more often than set B.")
            refine_requests.append(one_turn_request(parts, images))
        replies = self.model.generate(refine_requests, max_new_tokens=self.max_new_tokens) if refine_requests else []
        refined = collect_proposal(replies, len(refine_requests))
        return Proposal(refined.hypotheses, list(box_replies) + list(replies), failures + refined.parse_failures,
                        len(box_requests) + refined.calls)


# ----- deduplication -----------------------------------------------------------------------------------------
def deduplicate(texts: Sequence[str], embedder: Any = None, threshold: float = 0.9,
                confirm: Backend | None = None, confirm_band: float = 0.75) -> list[str]:
    """Keep the first of each group of near-duplicate hypotheses, in order.

    Two texts are duplicates when their sentence-embedding cosine similarity is
    at least ``threshold``; with a ``confirm`` backend, pairs between
    ``confirm_band`` and ``threshold`` are duplicates when the model scores
    "yes" above "no" for "Do these describe the same difference?". Texts that
    differ by opposed words (left/right, larger/smaller; :mod:`.wording`) are never
    merged: sentence embeddings place such antonyms as close as paraphrases.
    """
    unique = [t for t in dict.fromkeys(t.strip() for t in texts) if t]
    if len(unique) < 2:
        return unique
    if embedder is None:
        from ..embeddings.text import get_text_embedder

        embedder = get_text_embedder()
    vectors = embedder.encode(unique)
    sims = vectors @ vectors.T
    kept: list[int] = []
    for i in range(len(unique)):
        duplicate = False
        for j in kept:
            if opposed(unique[i], unique[j]):
                continue
            if sims[i, j] >= threshold:
                duplicate = True
            elif confirm is not None and sims[i, j] >= confirm_band:
                question = (f"Do \"{unique[j]}\" and \"{unique[i]}\" describe the same difference? "
                            "Answer yes or no.")
                yes, no = confirm.score_options([Request([{"role": "user", "content": [_text(question)]}], [],
                                                         ["yes", "no"])])[0]
                duplicate = yes > no
            if duplicate:
                break
        if not duplicate:
            kept.append(i)
    return [unique[i] for i in kept]

