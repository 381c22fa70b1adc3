"""``seeinpairs check-model``: one row that says what works for a checkpoint, before GPU hours are spent on it.

The checkpoint (hub id or folder) is loaded through the ``hf`` backend and run on
a few comparative requests with generated images (no data set needed): one-token
and multi-token option scoring, the shared-prompt fast path against the
per-option reference path, generation, the prefix and vision caches against the
uncached scores, the attribution layout, and the default LoRA targets. Each check
is timed. A fast path that is not registered for the family is reported with the
reason, not as a failure: the backend then runs the slower reference path and
gives the same scores. A check fails when something raises, a score is not
finite, or a fast path that runs differs from its reference by the tolerance the prefix
cache itself uses (:func:`~seeinpairs.backends.prefix_cache.tolerance`: 1e-4 in float32, 5e-2 in half
precision, whose rounding differs between a one-pass and a two-pass computation) or more.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..backends.prefix_cache import tolerance
from ..errors import BackendError
from ..prompts import Request

#: option pairs tried for one-token scoring, the first whose options are one token each is used
ONE_TOKEN_OPTIONS = (("A", "B"), ("yes", "no"), ("normal", "abnormal"))
MULTI_TOKEN_OPTIONS = ("normal", "abnormal with a pleural effusion")
QUESTION = "Is the query image normal or abnormal? Answer with one option."


@dataclass
class Check:
    """One cell of the row: ``status`` is ok, failed, not registered or fallback (a registered fast
    path that served none of the requests, so the reference path ran)."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def cell(self) -> str:
        return f"{self.name} {self.status} {self.seconds:.2f}s"


@dataclass
class ModelCheck:
    """The row of one checkpoint."""

    model: str
    model_type: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.checks)

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if c.failed), None)

    def row(self) -> str:
        return f"{self.model} ({self.model_type}): " + " | ".join(c.cell() for c in self.checks)

    def notes(self) -> list[str]:
        """One line per check that is not plainly ok, with its reason."""
        return [f"  {c.name}: {c.status}: {c.detail}" for c in self.checks if c.status != "ok" and c.detail]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "model_type": self.model_type, "passed": self.passed,
                "checks": [asdict(c) for c in self.checks]}


class CheckFailed(BackendError):
    """A check of ``seeinpairs check-model`` failed (the row has been printed)."""


# ----- the checkpoint -------------------------------------------------------------------------------
def vlm_model_type(name_or_path: str, **hub: Any) -> str:
    """The model type of a vision-language checkpoint; a one-line :class:`BackendError` for anything else
    (a missing folder, a folder without ``config.json``, a text-only model)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    from ..backends.hf import peft_adapter_base

    path = Path(name_or_path).expanduser()
    source = name_or_path
    if not path.exists() and _looks_like_a_path(name_or_path):
        raise BackendError(f"{name_or_path}: no such folder")
    if path.exists():
        if not path.is_dir():
            raise BackendError(f"{name_or_path}: not a checkpoint folder")
        base = peft_adapter_base(path)
        if base is None and not (path / "config.json").is_file():
            raise BackendError(f"{name_or_path}: not a vision-language model checkpoint (no config.json)")
        source = base or name_or_path
    try:
        model_type = AutoConfig.from_pretrained(source, **hub).model_type
    except (OSError, ValueError) as exc:
        raise BackendError(f"{name_or_path}: cannot read the model config ({str(exc).splitlines()[0]})") from None
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise BackendError(f"{name_or_path}: not a vision-language model checkpoint (model type '{model_type}' "
                           f"has no image-text-to-text class in transformers)")
    return model_type


def _looks_like_a_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything absolute, relative-dotted or deeper is a path."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def generated_images(n: int, seed: int = 0, size: int = 64) -> list[Image.Image]:
    """Smooth random images (a blurred noise field), so every family's processor accepts them."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        coarse = rng.random((8, 8, 3)) * 255
        images.append(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR))
    return images


def comparative_request(reference: Image.Image, query: Image.Image, options) -> Request:
    def text(t: str) -> dict:
        return {"type": "text", "text": t}

    content = [text("Reference 1:"), {"type": "image"}, text("Query:"), {"type": "image"}, text(QUESTION)]
    return Request([{"role": "user", "content": content}], [reference, query], list(options))


# ----- the checks -----------------------------------------------------------------------------------
class _Checker:
    """Runs the checks on one loaded backend; each returns (status, detail)."""

    def __init__(self, backend) -> None:
        from ..backends.encoding import answer_token_ids

        self.backend = backend
        self.model_type = str(getattr(backend.model.config, "model_type", ""))
        self.tolerance = tolerance(backend.model)  # what counts as equal to the reference path
        reference, *queries = generated_images(3)
        prompt = backend.prompt_text(comparative_request(reference, queries[0], ()))
        one_token = next((pair for pair in ONE_TOKEN_OPTIONS
                          if all(len(answer_token_ids(backend.tokenizer, prompt, o)) == 1 for o in pair)), None)
        self.one_token_options = one_token
        self.one_token = [comparative_request(reference, q, one_token or ()) for q in queries]
        self.multi_token = comparative_request(reference, queries[0], MULTI_TOKEN_OPTIONS)
        self.reference_scores: list[list[float]] | None = None

    def one_token_scoring(self) -> tuple[str, str]:
        if self.one_token_options is None:
            return "failed", f"none of the option pairs {ONE_TOKEN_OPTIONS} is one token each"
        self.reference_scores = _finite(self._score(self.one_token, prefix_cache=False))
        return "ok", f"options {'/'.join(self.one_token_options)}, {len(self.one_token)} requests"

    def multi_token_scoring(self) -> tuple[str, str]:
        _finite(self._score([self.multi_token], shared_prompt=False))
        return "ok", f"options {' / '.join(MULTI_TOKEN_OPTIONS)} (per-option reference path)"

    def shared_prompt(self) -> tuple[str, str]:
        """The shared-prompt path run directly (the backend would fall back silently-equal on a mismatch)."""
        from ..backends.encoding import answer_token_ids, encode_prompts
        from ..backends.shared_prompt import score_prompt_options

        b, request = self.backend, self.multi_token
        prompt = b.prompt_text(request)
        ids = [answer_token_ids(b.tokenizer, prompt, o) for o in request.options]
        encoded = encode_prompts(b.processor, [prompt], [request.images], "right", b.name_or_path)
        encoded = {k: v.to(b.device) if hasattr(v, "to") else v for k, v in encoded.items()}
        pad_id = b.tokenizer.pad_token_id if b.tokenizer.pad_token_id is not None else 0
        with torch.inference_mode():
            shared = _finite(score_prompt_options(b.model, encoded, [ids], pad_id, rows_per_pass=b.batch_size))
        reference = self._score([request], shared_prompt=False)
        return _compare(shared, reference, "shared prompt vs per-option", self.tolerance)

    def generation(self) -> tuple[str, str]:
        answers = self.backend.generate(self.one_token[:1], max_new_tokens=4)
        if len(answers) != 1 or not isinstance(answers[0], str):
            return "failed", f"expected one answer, got {answers!r}"
        return "ok", f"{len(answers[0])} characters in 4 new tokens"

    def prefix_cache(self) -> tuple[str, str]:
        from ..backends.prefix_cache import (
            prefix_cache_reason,
            score_with_prefix_cache,
            supports_prefix_cache,
        )

        if not supports_prefix_cache(self.backend.model):
            return "not registered", prefix_cache_reason(self.backend.model)
        notes: list[str | None] = [None] * len(self.one_token)
        cached = score_with_prefix_cache(self.backend, self.one_token, notes=notes)
        served = [(c, r) for c, r in zip(cached or [], self._reference()) if c is not None]
        if not served:
            why = next((note for note in notes if note), "no request was served")
            return "fallback", f"{why}; the uncached path ran"
        status, detail = _compare([c for c, _ in served], [r for _, r in served], "prefix cache vs uncached",
                                  self.tolerance)
        return status, f"{detail}, {len(served)} of {len(self.one_token)} requests served"

    def vision_cache(self) -> tuple[str, str]:
        from ..backends.vision_cache import (
            install_vision_cache,
            uninstall_vision_cache,
            vision_cache_reason,
        )

        model = self.backend.model
        cache = install_vision_cache(model, 64 * 2**20, identity="check-model")
        if cache is None:
            return "not registered", vision_cache_reason(model)
        try:
            filled = self._score(self.one_token, prefix_cache=False)
            reused = self._score(self.one_token, prefix_cache=False)
        finally:
            uninstall_vision_cache(model)
        if cache.hits == 0:
            return "fallback", "the cache was installed but never hit"
        status, detail = _compare(filled + reused, self._reference() * 2, "vision cache vs uncached", self.tolerance)
        return status, f"{detail}, {cache.hits} hits"

    def attribution(self) -> tuple[str, str]:
        from ..backends.encoding import encode_prompts
        from ..explain.layouts import ExplainError, layout_for

        b = self.backend
        try:
            layout = layout_for(b.model, b.processor)
        except ExplainError as exc:
            return "not registered", str(exc)
        request = self.one_token[0]
        inputs = encode_prompts(b.processor, [b.prompt_text(request)], [request.images], "right", b.name_or_path)
        try:
            slots = layout.slots(dict(inputs), [(image.height, image.width) for image in request.images])
        except ExplainError as exc:
            return "failed", str(exc)
        if len(slots) != len(request.images):
            return "failed", f"{len(slots)} image slots for {len(request.images)} images"
        return "ok", f"{len(slots)} image slots, token grids {[s.token_grid for s in slots]}"

    def lora_targets(self) -> tuple[str, str]:
        from peft import LoraConfig
        from peft.tuners.tuners_utils import check_target_module_exists

        from ..backends.lora_targets import language_model_name, language_model_targets

        model = self.backend.model
        targets = language_model_targets(model)
        if targets is None:
            return "failed", "no language model with attention projections found; set lora.target_modules"
        config = LoraConfig(target_modules=targets)
        matched = [n for n, _ in model.named_modules() if check_target_module_exists(config, n)]
        language_model = language_model_name(model) or ""
        outside = [n for n in matched if not n.startswith(language_model + ".")]
        if not matched or not language_model:
            return "failed", f"the default targets {targets!r} match no module of the language model"
        if outside:
            return "failed", f"targets reach outside the language model: {outside[:3]}"
        return "ok", f"{len(matched)} attention projections in {language_model}"

    # helpers
    def _score(self, requests, prefix_cache: bool = False, shared_prompt: bool = True) -> list[list[float]]:
        b = self.backend
        saved = b.prefix_cache, b.shared_prompt
        b.prefix_cache, b.shared_prompt = prefix_cache, shared_prompt
        try:
            return b.score_options(requests)
        finally:
            b.prefix_cache, b.shared_prompt = saved

    def _reference(self) -> list[list[float]]:
        if self.reference_scores is None:
            raise BackendError("one-token scoring failed, so there is no reference to compare with")
        return self.reference_scores


def _finite(scores: list[list[float]]) -> list[list[float]]:
    if not all(math.isfinite(v) for row in scores for v in row):
        raise BackendError(f"non-finite log-likelihoods {scores}")
    return scores


def _compare(fast: list[list[float]], reference: list[list[float]], what: str, bound: float) -> tuple[str, str]:
    difference = max(abs(a - b) for f, r in zip(fast, reference) for a, b in zip(f, r))
    status = "ok" if difference < bound else "failed"
    return status, f"{what}: max abs difference {difference:.1e} (tolerance {bound:.0e})"


#: the row's columns in order, by the method of :class:`_Checker` that computes each
CHECKS: tuple[tuple[str, str], ...] = (
    ("one-token", "one_token_scoring"), ("multi-token", "multi_token_scoring"), ("shared prompt", "shared_prompt"),
    ("generation", "generation"), ("prefix cache", "prefix_cache"), ("vision cache", "vision_cache"),
    ("attribution", "attribution"), ("lora targets", "lora_targets"),
)


def _timed(name: str, run: Callable[[], tuple[str, str]]) -> Check:
    start = time.perf_counter()
    try:
        status, detail = run()
    except Exception as exc:  # a check's failure is a row cell, not a crash of the command
        status, detail = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return Check(name, status, detail, time.perf_counter() - start)


#: the ``hf`` backend options that reading the config takes too
_CONFIG_KWARGS = ("revision", "cache_dir", "local_files_only", "trust_remote_code")


def check_model(name_or_path: str | Path, device: str = "auto", dtype: str = "float32", **hub: Any) -> ModelCheck:
    """Load ``name_or_path`` and run every check; a :class:`BackendError` when it cannot be loaded.

    ``hub``: the ``hf`` backend's options (``revision``, ``local_files_only``, ``trust_remote_code`` ...).
    """
    from ..backends import create_backend

    name = str(name_or_path)
    start = time.perf_counter()
    hub_files = {k: v for k, v in hub.items() if k in _CONFIG_KWARGS and v}
    model_type = vlm_model_type(name, **hub_files)
    backend = create_backend({"name": name, "device": device, "dtype": dtype, "options": hub})
    result = ModelCheck(name, model_type, [Check("load", "ok", f"{type(backend.model).__name__} on "
                                                                f"{backend.device}", time.perf_counter() - start)])
    try:
        checker = _Checker(backend)
    except (BackendError, ValueError, TypeError, KeyError) as exc:  # the chat template or tokenizer rejects a request
        raise BackendError(f"{name}: cannot build test requests ({str(exc).splitlines()[0]})") from None
    result.checks += [_timed(label, getattr(checker, method)) for label, method in CHECKS]
    return result


def raise_on_failure(result: ModelCheck) -> None:
    """The first failed check as a one-line :class:`CheckFailed`."""
    failure = result.first_failure()
    if failure is not None:
        raise CheckFailed(f"{result.model}: check '{failure.name}' failed: {failure.detail}")
