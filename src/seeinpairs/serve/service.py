"""The state behind the service's endpoints: the hosted model, its bank and selector, and uploads
decoded within limits.

:class:`Service` holds what one served config needs (model, case table, reference bank, selector,
prompt builder, the model lock) and the calls the endpoints make; the image helpers refuse an
upload by its bytes, its type and its pixel count before it is decoded. The application
(:mod:`.app`) and the comparative viewer (:mod:`.viewer`) both build on it, so it sits below both.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from fastapi import UploadFile
from PIL import Image

from ..backends import Backend, create_backend, option_probabilities
from ..cases import Case
from ..errors import ConfigError, ImageError
from ..imaging import load_image
from ..prompts import PromptBuilder, Request
from ..references import ReferenceBank, create_selector
from ..settings import ModelConfig
from . import chat as chatting
from .errors import APIError
from .schemas import TOKEN_ENV, ChatCompletionRequest, ServeConfig

logger = logging.getLogger("seeinpairs.serve")

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


#: an absolute file path (POSIX or Windows) inside an error message
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[/\\][^\s'\"(),;:]+")


def public_message(message: str, names: dict[str, str] | None = None) -> str:
    """``message`` fit for a client: its first line, known server paths replaced by their ``names``
    (e.g. the model folder by the model's label), any other absolute path by ``<server file>``."""
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    for path, name in sorted((names or {}).items(), key=lambda item: -len(item[0])):
        line = line.replace(path, name)
    return _ABSOLUTE_PATH.sub("<server file>", line)


# ----- images: size/pixel limits before decoding, pixels only ---------------------------------------
def sniff_suffix(data: bytes, filename: str | None = None) -> str:
    """The file type from its bytes (PNG, JPEG, DICOM); a ``.dcm`` name is tried as DICOM without a preamble."""
    if data.startswith(_PNG):
        return ".png"
    if data.startswith(_JPEG):
        return ".jpg"
    if data[128:132] == b"DICM":
        return ".dcm"
    if filename and Path(filename).suffix.lower() in (".dcm", ".dicom"):
        return ".dcm"
    raise APIError(415, "unsupported image type: send PNG, JPEG or DICOM", "unsupported_media_type")


def check_pixels(path: Path, suffix: str, max_pixels: int) -> None:
    """Refuse an image with more than ``max_pixels`` pixels, reading only its header."""
    if suffix == ".dcm":
        import pydicom

        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=False)
            rows, columns = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
        except Exception:  # not DICOM or a malformed header: load_image reports it in one line
            return
    else:
        try:
            with Image.open(path) as handle:
                columns, rows = handle.size
        except Exception:
            raise APIError(422, "corrupt or unreadable image", "invalid_image") from None
    if rows * columns > max_pixels:
        raise APIError(413, f"image has {rows}x{columns} pixels, more than the limit of {max_pixels}", "too_many_pixels")


class ImageDecoder:
    """Decode uploaded bytes to an RGB image within the configured limits.

    At most ``max_concurrent`` images are decoded at once, whatever the number of requests: a decode may
    take ``max_pixels`` x 3 bytes, so this bounds the server's image memory. Callers run in worker
    threads (sync endpoints), so a request waiting for a slot never blocks the event loop.
    """

    def __init__(self, max_bytes: int, max_pixels: int, max_concurrent: int = 2) -> None:
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self._slots = threading.BoundedSemaphore(max_concurrent)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the decode slots."""
        with self._slots:
            yield

    def to_file(self, data: bytes, filename: str | None, folder: str) -> Path:
        if not data:
            raise APIError(400, "the image file is empty", "invalid_image")
        if len(data) > self.max_bytes:
            raise APIError(413, f"upload exceeds the limit of {self.max_bytes} bytes", "too_large")
        suffix = sniff_suffix(data, filename)
        path = Path(folder) / f"query{suffix}"
        path.write_bytes(data)
        check_pixels(path, suffix, self.max_pixels)
        return path

    def load(self, path: Path) -> Image.Image:
        try:
            with self.slot():
                image = load_image(path)
        except ImageError as exc:
            # the message names our temporary path; the client knows only its upload
            raise APIError(422, str(exc).replace(str(path), "uploaded image"), "invalid_image") from None
        return Image.frombytes("RGB", image.size, image.convert("RGB").tobytes())

    def decode(self, data: bytes, filename: str | None = None) -> Image.Image:
        with tempfile.TemporaryDirectory(prefix="seeinpairs-") as folder:
            return self.load(self.to_file(data, filename, folder))


def read_limited(upload: UploadFile, limit: int) -> bytes:
    """An upload's bytes, or a 413 as soon as it holds more than ``limit`` (one byte past it is read)."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, f"upload exceeds the limit of {limit} bytes", "too_large")
    return data


def decode_data_url(url: str, limit: int) -> bytes:
    if not url.startswith("data:"):
        raise APIError(400, "image_url must be a data URL (data:image/png;base64,...); remote URLs are not fetched")
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise APIError(400, "image_url data URLs must be base64 encoded")
    if len(payload) > limit * 4 // 3 + 8:
        raise APIError(413, f"image exceeds the limit of {limit} bytes", "too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "image_url holds invalid base64") from None


# ----- the service state --------------------------------------------------------------------------
class Service:
    """The hosted model, bank, selector and prompt builder; model calls hold ``lock``."""

    def __init__(self, config: ServeConfig, backend_factory: Callable[[ModelConfig], Backend] = create_backend) -> None:
        """``backend_factory`` builds the hosted model's backend from ``config.model`` (any backend: a
        checkpoint loaded here, or a model served elsewhere); a caller may hand in one already loaded."""
        from ..datasets.preparation import prepare_data

        self.config = config = prepare_data(config)  # an adapter's data written if needed, its task completed
        self.task = config.task
        self.table = config.data.load_table(classes=config.task.classes)
        self.bank = ReferenceBank.from_table(self.table, self.task, split=config.bank.split,
                                             cache_dir=config.bank.cache_dir)
        self.k = config.selector.k
        self.selector_name = config.selector.name if self.k > 0 else "none"
        self.selector = create_selector(self.selector_name, self.bank if self.k > 0 else None,
                                        **(config.selector.params if self.k > 0 else {}))
        if self.k > len(self.bank):
            raise ConfigError(f"selector k={self.k} is larger than the reference bank ({len(self.bank)} cases)")
        self.backend = backend = backend_factory(config.model)
        self.local = chatting.is_local(backend)
        self.model_name = config.model.label or config.model.name
        self.created = int(time.time())
        self.lock = threading.Lock()
        self.decoder = ImageDecoder(config.max_upload_bytes, config.max_pixels, config.max_concurrent_decodes)
        self.token = config.auth_token or os.environ.get(TOKEN_ENV) or None
        self._bank_ids = {c.case_id: c for c in self.bank}
        # prompt lengths are measured with a copy of the tokenizer under its own lock, so a long prompt is
        # refused without waiting for (or holding) the model lock, and never races the model's tokenizer
        self._counter = copy.deepcopy(getattr(backend, "tokenizer", None))
        self._counter_lock = threading.Lock()
        #: server paths that error messages may name, and what a client is told instead
        self.path_names = {str(config.model.name): self.model_name}

    def public(self, exc: BaseException) -> str:
        """The message of ``exc`` for a client (no server paths); the full message goes to the log."""
        logger.warning("request refused: %s", exc)
        return public_message(str(exc), self.path_names) or type(exc).__name__

    def load_reference(self, path: str) -> Image.Image:
        """A bank image for a prompt or a thumbnail; a broken one is the server's fault: a 500 naming no path."""
        try:
            with self.decoder.slot():
                return load_image(path)
        except ImageError as exc:
            logger.error("reference image unreadable: %s", exc)
            raise APIError(500, "a reference image cannot be read (the server log names it)", "server_error") from None

    def check_prompt_length(self, n_tokens: int) -> None:
        if n_tokens > self.config.max_prompt_tokens:
            raise APIError(400, f"prompt has {n_tokens} tokens, more than max_prompt_tokens="
                                f"{self.config.max_prompt_tokens}", "prompt_too_long")

    def count_text_tokens(self, prompt: str) -> int:
        """The prompt's text tokens (each image slot counts as its placeholder): a cheap first check."""
        if self._counter is None:  # a backend without a tokenizer: only the exact check after encoding
            return 0
        with self._counter_lock:
            return len(self._counter(prompt, add_special_tokens=False)["input_ids"])

    # diagnosis
    def diagnose(self, data: bytes, filename: str | None, age: float | None, sex: str | None,
                 site: str | None) -> dict[str, Any]:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="seeinpairs-") as folder:
            path = self.decoder.to_file(data, filename, folder)
            image = self.decoder.load(path)  # validates the upload (and refuses bad pixels) before selection
            fresh = uuid.uuid4().hex
            query = Case(case_id=f"query-{fresh}", images=(str(path),), patient_id=f"query-patient-{fresh}",
                         age=age, sex=sex, site=site, split="query")
            seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
            selection = self.selector.select(query, self.k, np.random.default_rng([self.config.selector.seed, seed]))

            def loader(name: str) -> Image.Image:  # the query is decoded already; references through the slots
                return image if name == str(path) else self.load_reference(name)

            request = PromptBuilder(self.task, image_loader=loader).build(query, selection.references)
            with self.lock:
                scores = self.backend.score_options([request])[0]
        probs = option_probabilities(scores)
        options = request.options
        logger.info("diagnose: %d references, %.0f ms", len(selection), 1000 * (time.perf_counter() - start))
        return {"answer": options[int(np.argmax(probs))],
                "probabilities": {o: float(p) for o, p in zip(options, probs)},
                "log_likelihoods": {o: float(s) for o, s in zip(options, scores)},
                "references": selection.case_ids, "selector": self.selector_name, "k": self.k,
                "selection_note": selection.note, "model": self.model_name,
                "seconds": round(time.perf_counter() - start, 4)}

    def reference_png(self, case_id: str) -> bytes:
        case = self._bank_ids.get(case_id)
        if case is None:
            raise APIError(404, "no reference case with this id in the bank", "not_found")
        image = self.load_reference(case.image)
        image.thumbnail((self.config.thumbnail_size, self.config.thumbnail_size))
        buffer = io.BytesIO()
        Image.frombytes("RGB", image.size, image.convert("RGB").tobytes()).save(buffer, format="PNG")
        return buffer.getvalue()

    # chat completions
    def chat_request(self, body: ChatCompletionRequest) -> Request:
        messages, images = [], []
        for number, message in enumerate(body.messages):
            role = message.get("role")
            if role not in ("system", "developer", "user", "assistant"):
                raise APIError(400, f"messages[{number}].role must be system, developer, user or assistant",
                               "invalid_value", f"messages[{number}].role")
            role = "system" if role == "developer" else role  # OpenAI's newer name for the system message
            content = message.get("content")
            if isinstance(content, str):
                messages.append({"role": role, "content": [{"type": "text", "text": content}]})
                continue
            if not isinstance(content, list):
                raise APIError(400, f"messages[{number}].content must be a string or a list of parts")
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if not isinstance(url, str):
                        raise APIError(400, f"messages[{number}]: image_url needs a url")
                    images.append(self.decoder.decode(decode_data_url(url, self.config.max_upload_bytes)))
                    parts.append({"type": "image"})
                else:
                    raise APIError(400, f"messages[{number}]: unsupported content part (use text or image_url)")
            messages.append({"role": role, "content": parts})
        return Request(messages=messages, images=images, options=[])

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "seeinpairs"}

    def check_model(self, name: str | None) -> None:
        """A request for another model is refused (404), not answered by the served one."""
        if name is not None and name != self.model_name:
            raise APIError(404, f"The model '{name}' does not exist (served: {self.model_name})", "model_not_found",
                           "model")

    def chat(self, body: ChatCompletionRequest) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """A ``chat.completion``, or with ``stream`` the chunks of one. Everything a request can get wrong is
        checked before the first chunk, so a stream that starts is a 200 with the model's answer."""
        self.check_model(body.model)
        settings = chatting.chat_settings(body, self.config.max_tokens_limit, self.config.max_top_logprobs)
        if not self.local:
            chatting.check_backend_can(settings, getattr(self.backend, "kind", type(self.backend).__name__))
        request = self.chat_request(body)
        completion = chatting.Completion(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.model_name)
        if self.local:
            encoded, n_prompt = self.encode_chat(request)
            steps = iter(chatting.LocalGeneration(self.backend, self.lock, encoded, settings))
        else:
            steps, n_prompt = self.remote_steps(request, settings), None
        if settings.stream:
            return chatting.stream_chunks(completion, steps, settings, n_prompt)
        text, entries, outcome = chatting.collect(steps)
        return completion.body(text, outcome.finish_reason, entries if settings.logprobs else None,
                               chatting.usage(n_prompt, outcome.completion_tokens))

    def encode_chat(self, request: Request) -> tuple[dict[str, Any], int]:
        """The local model's inputs for ``request`` and their length, refused if longer than allowed."""
        import torch

        from ..backends.encoding import chat_prompt, encode_prompts

        backend = self.backend
        prompt = chat_prompt(backend.processor, request)
        self.check_prompt_length(self.count_text_tokens(prompt))
        with self.lock:  # the processor's tokenizer is the model's
            # a text-only request has no image list at all (processors cannot take an empty one)
            encoded = encode_prompts(backend.processor, [prompt], [request.images], "right", backend.name_or_path)
        n_prompt = int(encoded["input_ids"].shape[1])
        self.check_prompt_length(n_prompt)  # now with the image tokens, before the model runs
        return {k: v.to(backend.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}, n_prompt

    def remote_steps(self, request: Request, settings: chatting.ChatSettings) -> Iterator[Any]:
        """A backend without token access: its greedy text in one step, cut at a stop string."""
        with self.lock:
            text = self.backend.generate([request], max_new_tokens=settings.max_tokens)[0]
        text, stopped = chatting.cut_at_stop(text, settings.stop)
        # the backend does not say why it ended: "stop" (it ended or met a stop string) is the honest default
        yield chatting.Step(text)
        yield chatting.Outcome("stop", None)
