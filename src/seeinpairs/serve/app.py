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

import logging
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable

from fastapi import FastAPI, Form
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as StarletteRequest

from ..backends import Backend, create_backend
from ..errors import ImageError, SeeInPairsError
from ..settings import ModelConfig
from . import chat as chatting
from .errors import APIError
from .guard import RequestGuard, error_response
from .schemas import (ChatCompletion, ChatCompletionRequest, DiagnoseForm, DiagnoseResponse, ErrorResponse,
                      Health, ModelCard, ModelList, ServeConfig)
from .service import Service, read_limited
from .viewer import viewer_router

logger = logging.getLogger("seeinpairs.serve")

_ERRORS = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
           415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
_OPENAI_ERRORS = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                  413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}}
#: paths that answer as OpenAI does: a request that fails validation is a 400 (elsewhere FastAPI's 422)
OPENAI_PATHS = ("/v1/chat/", "/v1/models")


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
