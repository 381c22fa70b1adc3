"""The ASGI guard in front of the application: auth before the body, a byte limit while it streams,
and a generic 500 for anything unexpected.

Why a pure ASGI middleware: FastAPI parses a request body (spooling multipart files to disk, reading
JSON into memory) before any dependency runs, so a token check in a dependency, or a size check on
``Content-Length`` alone, comes after a chunked body has been read in full. Here the token is checked
before the first body byte is pulled, and the body is counted as it streams: past the limit the client
gets a 413 at once and the application sees the client as gone, so nothing more is read or written.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import JSONResponse

from .errors import error_type

logger = logging.getLogger("seeinpairs.serve")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

#: on a refusal the connection is closed, so a client streaming a body cannot keep the server draining it
_CLOSE = {"Connection": "close"}

#: paths anyone may read: the page, health and the API description (everything else needs the token)
PUBLIC_PATHS = frozenset({"/", "/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def error_response(status: int, message: str, code: str | None, headers: dict[str, str] | None = None,
                   param: str | None = None) -> JSONResponse:
    """The API's error shape, ``{"error": {"message", "type", "param", "code"}}``, as OpenAI clients expect it
    (``type`` is the broad class of the status, ``code`` the specific reason)."""
    body = {"message": message, "type": error_type(status), "param": param, "code": code}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` (compared in constant time)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class _Exchange:
    """One request/response as the guard sees it: body bytes so far, whether a response has begun."""

    def __init__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send, limit: int) -> None:
        self.scope, self._receive, self._send, self.limit = scope, receive, send, limit
        self.received = 0
        self.started = False  # a response has begun (the application's or ours)
        self.refused = False  # the guard answered 413; the application is told the client left

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                await self.refuse()
                return {"type": "http.disconnect"}
        return message

    async def refuse(self) -> None:
        self.refused = True
        if not self.started:
            await self.answer(error_response(413, f"request body exceeds the limit of {self.limit} bytes",
                                             "too_large", _CLOSE))

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the 413 has been sent; what the application answers after it is dropped
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def answer(self, response: JSONResponse) -> None:
        self.started = True
        await response(self.scope, self._receive, self._send)


class RequestGuard:
    """Bearer-token auth before the body is read, a streamed body limit, and a JSON 500 without details.

    ``token``: required on every path but :data:`PUBLIC_PATHS` (None: no auth);
    ``max_body_bytes``: the most body bytes read from one request (declared or streamed).
    """

    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int) -> None:
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send, self.max_body_bytes)
        refusal = self.refusal(scope)
        if refusal is not None:
            await exchange.answer(refusal)
            return
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception as exc:  # never a traceback to the client, never request data in the log
            if exchange.refused:
                return  # the application failed on the disconnect it was told of after the 413
            logger.error("internal error on %s %s (%s)", scope.get("method"), scope.get("path"), type(exc).__name__)
            if not exchange.started:
                await exchange.answer(error_response(500, "internal server error", "server_error"))

    def refusal(self, scope: MutableMapping[str, Any]) -> JSONResponse | None:
        """The answer to a request refused from its headers alone (no token, a declared body too large)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None and scope.get("path") not in PUBLIC_PATHS:
            if not bearer_matches(headers.get("authorization", ""), self.token):
                return error_response(401, "missing or wrong bearer token", "invalid_api_key",
                                      {"WWW-Authenticate": "Bearer", **_CLOSE})
        length = headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > self.max_body_bytes:
            return error_response(413, f"request body exceeds the limit of {self.max_body_bytes} bytes",
                                  "too_large", _CLOSE)
        return None
