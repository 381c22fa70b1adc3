"""The FastAPI application: diagnosis with server-side reference selection, an OpenAI-compatible
chat endpoint for the hosted model, reference thumbnails and the web page.

Safety: optional bearer-token auth on every ``/v1`` endpoint, checked before the body is read;
request bodies are limited while they stream (:mod:`.guard`); uploads are limited in bytes and in
pixels (checked from the header before decoding) and at most ``max_concurrent_decodes`` are decoded
at once, in worker threads; DICOM is parsed defensively and only its pixels are used; nothing about
the patient (names, ids, DICOM headers) is logged; bad input gets a 4xx JSON error and anything
unexpected a generic 500 without traceback text; no answer shows a server path (the log has them).

Queueing: endpoints run in the worker-thread pool; decoding, validation, reference selection and
prompt-length checks run there concurrently, then each model call waits for the one model lock and
holds it for one scoring pass (diagnose) or one generation of at most ``max_tokens_limit`` tokens on
a prompt of at most ``max_prompt_tokens`` tokens (chat).
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
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator

import numpy as np
from fastapi import FastAPI, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.sse import EventSourceResponse
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as StarletteRequest

from ..backends import Backend, create_backend, option_probabilities
from ..cases import Case
from ..errors import ConfigError, ImageError, SeeInPairsError
from ..imaging import load_image
from ..prompts import PromptBuilder, Request
from ..references import ReferenceBank, create_selector
from ..settings import ModelConfig
from . import chat as chatting
from .errors import APIError
from .guard import RequestGuard, error_response
from .schemas import (TOKEN_ENV, ChatCompletion, ChatCompletionRequest, DiagnoseForm, DiagnoseResponse, ErrorResponse,
                      Health, ModelCard, ModelList, ServeConfig)

logger = logging.getLogger("seeinpairs.serve")

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_ERRORS = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
           415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
_OPENAI_ERRORS = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                  413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}}
#: paths that answer as OpenAI does: a request that fails validation is a 400 (elsewhere FastAPI's 422)
OPENAI_PATHS = ("/v1/chat/", "/v1/models")


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
        from ..evaluation.runner import prepare_data

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


def validation_param(error: dict[str, Any]) -> str | None:
    """The request parameter a validation error is about (``messages``, ``stop``), if any."""
    if error.get("type") == "json_invalid":
        return None
    location = [str(p) for p in error.get("loc", ())]
    return ".".join(location[1:] if location[:1] == ["body"] else location) or None


def stream_error(service: Service, exc: BaseException) -> dict[str, Any]:
    """The error event of a stream that failed after it began: one line, no server paths."""
    if isinstance(exc, APIError):
        return {"error": {"message": exc.message, "type": "invalid_request_error", "param": exc.param,
                          "code": exc.kind}}
    logger.error("chat stream failed (%s)", type(exc).__name__)
    message = service.public(exc) if isinstance(exc, SeeInPairsError) else "internal server error"
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def validation_problem(error: dict[str, Any]) -> str:
    """One request-validation problem as ``field: what is wrong`` (the field path without ``body``)."""
    location = [str(p) for p in error.get("loc", ())]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        return f"request body is not valid JSON ({message} at character {location[-1]})"
    where = ".".join(location[1:] if location[:1] == ["body"] else location) or "request body"
    return f"{where}: {message}"


# ----- the application -----------------------------------------------------------------------------
def create_app(config: ServeConfig,
               backend_factory: Callable[[ModelConfig], Backend] = create_backend) -> FastAPI:
    """The app for ``config``; ``backend_factory`` builds its model's backend (see :class:`Service`)."""
    service = Service(config, backend_factory)
    app = FastAPI(title="seeinpairs", version="1", summary="Reference-guided comparative diagnosis",
                  description="Diagnosis with healthy references selected server-side, and an OpenAI-compatible "
                              "chat endpoint for the hosted model.")
    app.state.service = service
    # auth and the body limit come before FastAPI reads a body; unexpected errors become a bare 500
    app.add_middleware(RequestGuard, token=service.token, max_body_bytes=config.max_request_bytes)

    from .viewer import viewer_router  # imported here: the viewer builds on this module's Service

    app.include_router(viewer_router(service))

    @app.exception_handler(APIError)
    async def _api_error(_, exc: APIError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.message, exc.kind, headers, exc.param)

    @app.exception_handler(ImageError)
    async def _image_error(_, exc: ImageError):
        return error_response(422, service.public(exc), "invalid_image")

    @app.exception_handler(SeeInPairsError)
    async def _domain_error(_, exc: SeeInPairsError):
        return error_response(400, service.public(exc), None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: StarletteRequest, exc: RequestValidationError):
        errors = exc.errors()
        message = "; ".join(validation_problem(error) for error in errors[:5])
        status = 400 if request.url.path.startswith(OPENAI_PATHS) else 422
        param = validation_param(errors[0]) if errors else None
        return error_response(status, message or "invalid request", "invalid_value", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), "http_error")

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_name, "bank_size": len(service.bank),
                "selector": service.selector_name, "k": service.k}

    @app.post("/v1/diagnose", response_model=DiagnoseResponse, responses=_ERRORS, tags=["diagnosis"])
    def diagnose(form: Annotated[DiagnoseForm, Form()]) -> dict[str, Any]:
        """Select healthy references for the uploaded query, ask the model, return the answer and probabilities."""
        if form.image is None:
            raise APIError(400, "no image: send the query as the multipart field 'image'", "missing_file")
        data = read_limited(form.image, service.config.max_upload_bytes)
        return service.diagnose(data, form.image.filename, form.age, form.sex, form.site)

    @app.get("/v1/references/{case_id}/image", responses={200: {"content": {"image/png": {}}}, **_ERRORS},
             tags=["diagnosis"])
    def reference_image(case_id: str) -> Response:
        """A PNG thumbnail of a bank reference (pixels only)."""
        return Response(service.reference_png(case_id), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["openai"],
              responses={200: {"content": {"text/event-stream": {"description": "with stream=true: "
                                                                 "chat.completion.chunk events, then [DONE]"}}},
                         **_OPENAI_ERRORS})
    def chat_completions(body: ChatCompletionRequest) -> Any:
        """OpenAI-compatible chat completions for the served model: greedy unless temperature > 0
        (a local model samples; seed repeats it), stop strings, image_url data URLs, ``logprobs`` /
        ``top_logprobs`` (local models), and ``stream`` as server-sent events. Parameters that cannot
        be honoured are refused by name."""
        answer = service.chat(body)
        if isinstance(answer, dict):
            return answer
        return EventSourceResponse(chatting.sse_events(answer, lambda exc: stream_error(service, exc)),
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/models", response_model=ModelList, responses=_OPENAI_ERRORS, tags=["openai"])
    def models() -> dict[str, Any]:
        """The served model (OpenAI's models.list)."""
        return {"object": "list", "data": [service.model_card()]}

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_OPENAI_ERRORS, tags=["openai"])
    def model(model_id: str) -> dict[str, Any]:
        """One model (OpenAI's models.retrieve): the served one, else 404."""
        service.check_model(model_id)
        return service.model_card()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("seeinpairs.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


def app_from_config(path: str | Path) -> FastAPI:
    return create_app(ServeConfig.from_yaml(path))
