"""The FastAPI application: diagnosis with server-side reference selection, an OpenAI-compatible
chat endpoint for the hosted model, reference thumbnails and the web page.

Safety: optional bearer-token auth on every ``/v1`` endpoint; uploads are limited in bytes
and in pixels (checked from the header before decoding); DICOM is parsed defensively and only
its pixels are used; nothing about the patient (names, ids, DICOM headers) is logged; bad
input gets a 4xx JSON error and anything unexpected a generic 500 without traceback text.
Model calls are serialised with a lock (one model).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import logging
import os
import tempfile
import threading
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request as HTTPRequest, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.base import option_probabilities
from ..cases import Case, CaseTable, normalise_sex
from ..errors import ConfigError, ImageError, SeeInPairsError
from ..imaging import load_image
from ..prompts import PromptBuilder, Request
from ..references import ReferenceBank, create_selector
from .schemas import TOKEN_ENV, ChatCompletionRequest, DiagnoseResponse, ErrorResponse, Health, ServeConfig

logger = logging.getLogger("seeinpairs.serve")

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_ERRORS = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
           415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


class APIError(Exception):
    """A client error with its status code and a one-line message."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


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
    """Decode uploaded bytes to an RGB image within the configured limits."""

    def __init__(self, max_bytes: int, max_pixels: int) -> None:
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

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
            image = load_image(path)
        except ImageError as exc:
            # the message names our temporary path; the client knows only its upload
            raise APIError(422, str(exc).replace(str(path), "uploaded image"), "invalid_image") from None
        return Image.frombytes("RGB", image.size, image.convert("RGB").tobytes())

    def decode(self, data: bytes, filename: str | None = None) -> Image.Image:
        with tempfile.TemporaryDirectory(prefix="seeinpairs-") as folder:
            return self.load(self.to_file(data, filename, folder))


def _read_limited(upload: UploadFile, limit: int) -> bytes:
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

    def __init__(self, config: ServeConfig, backend=None) -> None:
        self.config = config
        self.task = config.task
        self.table = CaseTable.load(config.data.manifest, image_root=config.data.image_root,
                                    classes=config.task.classes)
        self.bank = ReferenceBank.from_table(self.table, self.task, split=config.bank.split,
                                             cache_dir=config.bank.cache_dir)
        self.k = config.selector.k
        self.selector_name = config.selector.name if self.k > 0 else "none"
        self.selector = create_selector(self.selector_name, self.bank if self.k > 0 else None,
                                        **(config.selector.params if self.k > 0 else {}))
        if self.k > len(self.bank):
            raise ConfigError(f"selector k={self.k} is larger than the reference bank ({len(self.bank)} cases)")
        self.builder = PromptBuilder(self.task)
        if backend is None:
            from ..backends.hf import HFBackend

            m = config.model
            backend = HFBackend(m.name, dtype=m.dtype, device=m.device, batch_size=m.batch_size)
        self.backend = backend
        self.model_name = config.model.label or config.model.name
        self.lock = threading.Lock()
        self.decoder = ImageDecoder(config.max_upload_bytes, config.max_pixels)
        self.token = config.auth_token or os.environ.get(TOKEN_ENV) or None
        self._bank_ids = {c.case_id: c for c in self.bank}

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
            request = self.builder.build(query, selection.references)
            request.images[-1] = image
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
        image = load_image(case.image)
        image.thumbnail((self.config.thumbnail_size, self.config.thumbnail_size))
        buffer = io.BytesIO()
        Image.frombytes("RGB", image.size, image.convert("RGB").tobytes()).save(buffer, format="PNG")
        return buffer.getvalue()

    # chat completions
    def chat_request(self, body: ChatCompletionRequest) -> Request:
        messages, images = [], []
        for number, message in enumerate(body.messages):
            role = message.get("role")
            if role not in ("system", "user", "assistant"):
                raise APIError(400, f"messages[{number}].role must be system, user or assistant")
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

    def chat(self, body: ChatCompletionRequest) -> dict[str, Any]:
        import torch

        from ..backends.hf import chat_prompt, encode_prompts

        if body.stream:
            raise APIError(400, "stream=true is not supported")
        max_tokens = body.max_completion_tokens or body.max_tokens or 16
        if max_tokens > self.config.max_tokens_limit:
            raise APIError(400, f"max_tokens must be at most {self.config.max_tokens_limit}")
        n_top = body.top_logprobs or 0
        if n_top > self.config.max_top_logprobs:
            raise APIError(400, f"top_logprobs must be at most {self.config.max_top_logprobs}")
        request = self.chat_request(body)
        backend = self.backend
        tokenizer = backend.tokenizer
        with self.lock, torch.inference_mode():
            prompt = chat_prompt(backend.processor, request)
            encoded = encode_prompts(backend.processor, [prompt], [request.images] if request.images else None,
                                     "right", backend.name_or_path)
            encoded = {k: v.to(backend.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}
            n_prompt = int(encoded["input_ids"].shape[1])
            if max_tokens == 1:  # one forward pass at the answer position
                logits = backend.model(**encoded, use_cache=False).logits[0, -1].float()
                steps = [torch.log_softmax(logits, -1)]
                tokens = [int(torch.argmax(steps[0]))]
            else:
                output = backend.model.generate(**encoded, max_new_tokens=max_tokens, do_sample=False,
                                                pad_token_id=tokenizer.pad_token_id, output_scores=True,
                                                return_dict_in_generate=True)
                tokens = output.sequences[0, n_prompt:].tolist()
                steps = [torch.log_softmax(s[0].float(), -1) for s in output.scores][:len(tokens)]
        eos = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        finish = "length"
        if tokens and tokens[-1] in eos:
            finish = "stop"
        text = tokenizer.decode([t for t in tokens if t not in eos], skip_special_tokens=True)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish, "logprobs": None}
        if body.logprobs:
            content = []
            for token, step in zip(tokens, steps):
                entry = _token_entry(tokenizer, token, float(step[token]))
                values, ids = torch.topk(step, min(n_top, step.shape[0])) if n_top else ([], [])
                entry["top_logprobs"] = [_token_entry(tokenizer, int(i), float(v)) for v, i in zip(values, ids)]
                content.append(entry)
            choice["logprobs"] = {"content": content}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_name, "choices": [choice],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(tokens),
                          "total_tokens": n_prompt + len(tokens)}}


def _token_entry(tokenizer, token_id: int, logprob: float) -> dict[str, Any]:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


# ----- the application -----------------------------------------------------------------------------
def create_app(config: ServeConfig, backend=None) -> FastAPI:
    """The app for ``config``; ``backend`` replaces loading ``config.model`` (an already loaded HFBackend)."""
    service = Service(config, backend)
    app = FastAPI(title="seeinpairs", version="1", summary="Reference-guided comparative diagnosis",
                  description="Diagnosis with healthy references selected server-side, and an OpenAI-compatible "
                              "chat endpoint for the hosted model.")
    app.state.service = service

    def authorised(request: HTTPRequest) -> None:
        if service.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), service.token.encode()):
            raise APIError(401, "missing or wrong bearer token", "unauthorized")

    @app.exception_handler(APIError)
    async def _api_error(_, exc: APIError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.message, exc.kind, headers)

    @app.exception_handler(ImageError)
    async def _image_error(_, exc: ImageError):
        return _error(422, str(exc).splitlines()[0] if str(exc) else "invalid image", "invalid_image")

    @app.exception_handler(SeeInPairsError)
    async def _domain_error(_, exc: SeeInPairsError):
        return _error(400, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def _validation(_, exc: RequestValidationError):
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return _error(422, "; ".join(problems) or "invalid request", "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "http_error")

    @app.middleware("http")
    async def _guard(request: HTTPRequest, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > service.config.max_upload_bytes * 4 // 3 + 65536:
            return _error(413, f"request exceeds the upload limit of {service.config.max_upload_bytes} bytes",
                          "too_large")
        try:
            return await call_next(request)
        except Exception as exc:  # never a traceback to the client, never request data in the log
            logger.error("internal error on %s %s (%s)", request.method, request.url.path, type(exc).__name__)
            return _error(500, "internal server error", "server_error")

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_name, "bank_size": len(service.bank),
                "selector": service.selector_name, "k": service.k}

    @app.post("/v1/diagnose", response_model=DiagnoseResponse, responses=_ERRORS, tags=["diagnosis"],
              dependencies=[Depends(authorised)])
    def diagnose(image: UploadFile | None = File(None, description="PNG, JPEG or DICOM"),
                 age: float | None = Form(None, ge=0, le=150), sex: str | None = Form(None),
                 site: str | None = Form(None)) -> dict[str, Any]:
        """Select healthy references for the uploaded query, ask the model, return the answer and probabilities."""
        if image is None:
            raise APIError(400, "no image: send the query as the multipart field 'image'", "missing_file")
        data = _read_limited(image, service.config.max_upload_bytes)
        sex_value = normalise_sex(sex) if sex else None
        if sex and sex_value is None:
            raise APIError(422, "sex must be M, F or O", "invalid_request_error")
        return service.diagnose(data, image.filename, age, sex_value, site or None)

    @app.get("/v1/references/{case_id}/image", responses={200: {"content": {"image/png": {}}}, **_ERRORS},
             tags=["diagnosis"], dependencies=[Depends(authorised)])
    def reference_image(case_id: str) -> Response:
        """A PNG thumbnail of a bank reference (pixels only)."""
        return Response(service.reference_png(case_id), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/v1/chat/completions", responses=_ERRORS, tags=["openai"], dependencies=[Depends(authorised)])
    def chat_completions(body: ChatCompletionRequest) -> dict[str, Any]:
        """OpenAI-compatible chat completions for the hosted model (greedy; image_url data URLs;
        ``logprobs``/``top_logprobs`` of the next tokens)."""
        return service.chat(body)

    @app.get("/v1/models", tags=["openai"], dependencies=[Depends(authorised)])
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.model_name, "object": "model", "owned_by": "seeinpairs"}]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("seeinpairs.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


def app_from_config(path: str | Path) -> FastAPI:
    return create_app(ServeConfig.from_yaml(path))
