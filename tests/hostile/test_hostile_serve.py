"""Hostile HTTP requests against the served API: each gets its specific 4xx with a one-line JSON error
that holds no traceback and no server path, and the server keeps answering normal requests.

A new bad request is one line in ``BAD_REQUESTS``. Bodies that must be streamed (chunked uploads, where
what matters is how much of the body the server reads) are driven straight through the ASGI interface,
since the test client reads a streamed body in full before handing it to the app.
"""

from __future__ import annotations

import base64
import io
import tempfile

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from shared_helpers import SERVE_TOKEN, serve_config

AUTH = {"Authorization": f"Bearer {SERVE_TOKEN}"}
JSON_AUTH = {**AUTH, "content-type": "application/json"}
LIMIT = 60_000  # max_upload_bytes of the hostile app
PROMPT_LIMIT = 256  # max_prompt_tokens of the hostile app
CHUNK = 16_384


def _png(size=(40, 40), mode="L") -> bytes:
    buffer = io.BytesIO()
    pixels = (np.random.default_rng(0).random((size[1], size[0])) * 255).astype(np.uint8)
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    """Few bytes, many pixels (more than the hostile app's max_pixels)."""
    buffer = io.BytesIO()
    Image.new("L", (400, 400)).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(name: str, data: bytes, mime: str = "image/png") -> dict:
    return {"files": {"image": (name, data, mime)}, "headers": AUTH}


def _form(**fields) -> dict:
    return {**_image("q.png", _png()), "data": fields}


def _chat(*messages, **extra) -> dict:
    return {"json": {"messages": list(messages), **extra}, "headers": AUTH}


def _user(*parts) -> dict:
    return {"role": "user", "content": list(parts)}


def _image_part(url) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _chunks(total: int):
    """A streamed (chunked, no Content-Length) body of ``total`` bytes."""
    return (b"\0" * CHUNK for _ in range(total // CHUNK))


DIAGNOSE, CHAT = "/v1/diagnose", "/v1/chat/completions"
TRUNCATED_PNG = _png()[:60]

# (name, method, path, request keyword arguments, expected status, a word the message must hold)
BAD_REQUESTS = [
    ("no token", "POST", DIAGNOSE, {"files": {"image": ("q.png", _png(), "image/png")}}, 401, "token"),
    ("wrong token", "GET", "/v1/models", {"headers": {"Authorization": "Bearer nope"}}, 401, "token"),
    ("token without scheme", "GET", "/v1/models", {"headers": {"Authorization": SERVE_TOKEN}}, 401, "token"),
    ("chunked body without token", "POST", DIAGNOSE, {"content": _chunks(40 * CHUNK)}, 401, "token"),
    ("chunked body over the limit", "POST", DIAGNOSE,
     {"content": _chunks(40 * CHUNK), "headers": {**AUTH, "content-type": "multipart/form-data; boundary=B"}},
     413, "limit"),
    ("content-length over the limit", "POST", CHAT, {"content": b"{" * (3 * LIMIT), "headers": JSON_AUTH},
     413, "limit"),
    ("sex X", "POST", DIAGNOSE, _form(sex="X"), 422, "sex"),
    ("negative age", "POST", DIAGNOSE, _form(age="-3"), 422, "age"),
    ("age nan", "POST", DIAGNOSE, _form(age="nan"), 422, "age"),
    ("age not a number", "POST", DIAGNOSE, _form(age="old"), 422, "age"),
    ("site too long", "POST", DIAGNOSE, _form(site="x" * 500), 422, "site"),
    ("unknown form field", "POST", DIAGNOSE, _form(colour="red"), 422, "colour"),
    ("no image", "POST", DIAGNOSE, {"data": {"age": "3"}, "headers": AUTH}, 400, "image"),
    ("empty image", "POST", DIAGNOSE, _image("q.png", b""), 400, "empty"),
    ("text named png", "POST", DIAGNOSE, _image("q.png", b"hello, not an image"), 415, "PNG"),
    ("truncated png", "POST", DIAGNOSE, _image("q.png", TRUNCATED_PNG), 422, "image"),
    ("pixel bomb", "POST", DIAGNOSE, _image("q.png", _bomb()), 413, "pixels"),
    ("text named dcm", "POST", DIAGNOSE, _image("q.dcm", b"not DICOM at all" * 20, "application/dicom"), 422,
     "DICOM"),
    ("json to diagnose", "POST", DIAGNOSE, {"json": {"image": "x"}, "headers": AUTH}, 400, "image"),
    ("garbage json", "POST", CHAT, {"content": b"{not json", "headers": JSON_AUTH}, 400, "JSON"),
    ("chat as plain text", "POST", CHAT, {"content": b"hello", "headers": {**AUTH, "content-type": "text/plain"}},
     400, "body"),
    ("chat as form", "POST", CHAT, {"data": {"messages": "hi"}, "headers": AUTH}, 400, "body"),
    ("no messages", "POST", CHAT, _chat(), 400, "messages"),
    ("messages not a list", "POST", CHAT, {"json": {"messages": "hi"}, "headers": AUTH}, 400, "messages"),
    ("unknown role", "POST", CHAT, _chat({"role": "robot", "content": "hi"}), 400, "role"),
    ("content a number", "POST", CHAT, _chat({"role": "user", "content": 3}), 400, "content"),
    ("unknown content part", "POST", CHAT, _chat(_user({"type": "audio"})), 400, "content part"),
    ("image_url without url", "POST", CHAT, _chat(_user({"type": "image_url"})), 400, "url"),
    ("remote image url", "POST", CHAT, _chat(_user(_image_part("http://example.org/x.png"))), 400, "data URL"),
    ("bad base64 image", "POST", CHAT, _chat(_user(_image_part("data:image/png;base64,@@@not-base64"))), 400,
     "base64"),
    ("data url not base64", "POST", CHAT, _chat(_user(_image_part("data:image/png,abc"))), 400, "base64"),
    ("data url of text", "POST", CHAT, _chat(_user(_image_part(_data_url(b"plain text", "text/plain")))), 415,
     "PNG"),
    ("data url of a truncated png", "POST", CHAT, _chat(_user(_image_part(_data_url(TRUNCATED_PNG)))), 422,
     "image"),
    ("over-long prompt", "POST", CHAT, _chat({"role": "user", "content": "normal abnormal " * 2000}), 400,
     "max_prompt_tokens"),
    ("too many tokens asked", "POST", CHAT, _chat({"role": "user", "content": "hi"}, max_tokens=10**6), 400,
     "max_tokens"),
    ("zero max_tokens", "POST", CHAT, _chat({"role": "user", "content": "hi"}, max_tokens=0), 400, "max_tokens"),
    ("stream_options without stream", "POST", CHAT,
     _chat({"role": "user", "content": "hi"}, stream_options={"include_usage": True}), 400, "stream"),
    ("unknown model", "POST", CHAT, _chat({"role": "user", "content": "hi"}, model="gpt-4o"), 404, "gpt-4o"),
    ("unknown model retrieved", "GET", "/v1/models/gpt-4o", {"headers": AUTH}, 404, "gpt-4o"),
    ("tools", "POST", CHAT, _chat({"role": "user", "content": "hi"}, tools=[{"type": "function"}]), 400, "tools"),
    ("tool_choice", "POST", CHAT, _chat({"role": "user", "content": "hi"}, tool_choice="auto"), 400, "tool_choice"),
    ("json response_format", "POST", CHAT,
     _chat({"role": "user", "content": "hi"}, response_format={"type": "json_object"}), 400, "response_format"),
    ("logit_bias", "POST", CHAT, _chat({"role": "user", "content": "hi"}, logit_bias={"5": 10}), 400, "logit_bias"),
    ("presence_penalty", "POST", CHAT, _chat({"role": "user", "content": "hi"}, presence_penalty=1), 400,
     "presence_penalty"),
    ("unknown parameter", "POST", CHAT, _chat({"role": "user", "content": "hi"}, temprature=0.5), 400, "temprature"),
    ("top_logprobs without logprobs", "POST", CHAT, _chat({"role": "user", "content": "hi"}, top_logprobs=2), 400,
     "logprobs"),
    ("temperature above 2", "POST", CHAT, _chat({"role": "user", "content": "hi"}, temperature=3), 400,
     "temperature"),
    ("five stop strings", "POST", CHAT, _chat({"role": "user", "content": "hi"}, stop=list("abcde")), 400, "stop"),
    ("tool role", "POST", CHAT, _chat({"role": "tool", "content": "hi"}), 400, "role"),
    ("n=2", "POST", CHAT, _chat({"role": "user", "content": "hi"}, n=2), 400, "n"),
    ("unknown reference", "GET", "/v1/references/not-a-case/image", {"headers": AUTH}, 404, "reference"),
    ("reference traversal", "GET", "/v1/references/..%2F..%2Fetc%2Fpasswd/image", {"headers": AUTH}, 404, ""),
]


@pytest.fixture(scope="module")
def hostile_app(synthetic_data, tiny_models, served_backend):
    from seeinpairs.serve.app import create_app

    config = serve_config(synthetic_data, tiny_models, max_upload_bytes=LIMIT, max_pixels=200 * 200,
                          max_prompt_tokens=PROMPT_LIMIT)
    return create_app(config, backend_factory=lambda _: served_backend)


@pytest.fixture(scope="module")
def client(hostile_app):
    return TestClient(hostile_app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def server_paths(synthetic_data, tiny_models) -> list[str]:
    """Absolute paths of this machine that no response may show."""
    root = synthetic_data[0]
    return [str(root), str(tiny_models["qwen2_vl"]), tempfile.gettempdir()]


def assert_clean_error(response, status: int, word: str, server_paths: list[str]) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    message = body["error"]["message"]
    assert isinstance(message, str) and message and "\n" not in message
    assert word.lower() in message.lower(), message
    assert "Traceback" not in response.text and 'File "' not in response.text
    for path in server_paths:
        assert path not in response.text, f"{response.text} shows the server path {path}"
    return message


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status", "word"), BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_is_a_clear_4xx(client, server_paths, name, method, path, kwargs, status, word):
    response = client.request(method, path, **kwargs)
    assert_clean_error(response, status, word, server_paths)
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)  # OpenAI's error shape
    if path in (CHAT, "/v1/models/gpt-4o") and status in (400, 404) and word in kwargs.get("json", {}):
        assert error["param"] == word  # a refused parameter is named where clients look for it
    assert client.get("/v1/models", headers=AUTH).status_code == 200  # still answering


# ----- streamed bodies: how much does the server read? ----------------------------------------------------
MULTIPART_HEAD = (b'--B\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
                  b"Content-Type: image/png\r\n\r\n")


def stream_request(app, path: str, headers: dict[str, str], total: int) -> tuple[int, dict, int]:
    """POST a chunked body of ``total`` bytes through the ASGI interface; the status, the JSON answer and
    how many body bytes the app pulled."""
    import json

    pulled = 0
    chunks = iter([MULTIPART_HEAD] + [b"\0" * CHUNK] * (total // CHUNK))
    messages: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in
                         {"content-type": "multipart/form-data; boundary=B", "transfer-encoding": "chunked",
                          **headers}.items()],
             "client": ("127.0.0.1", 40000), "server": ("testserver", 80)}
    async def run() -> None:
        with anyio.fail_after(60):  # a hang guard, not a timing assertion
            await app(scope, receive, send)

    anyio.run(run)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


@pytest.mark.parametrize(("headers", "status", "most_read"), [
    ({}, 401, 0),  # no token: not one byte of the body is read
    ({"Authorization": "Bearer wrong"}, 401, 0),
    (AUTH, 413, LIMIT * 4 // 3 + 65536 + CHUNK),  # with the token: reading stops at the limit
], ids=["no token", "wrong token", "token"])
def test_chunked_upload_is_refused_before_it_is_read(hostile_app, headers, status, most_read):
    total = 200 * CHUNK  # 3.3 MB, far over the limit
    got, body, pulled = stream_request(hostile_app, DIAGNOSE, headers, total)
    assert got == status, body
    assert pulled <= most_read < total, f"the server read {pulled} bytes of the body"
    assert "\n" not in body["error"]["message"]


def test_server_still_diagnoses_after_the_hostile_requests(client, synthetic_data):
    root, table, task = synthetic_data
    query = next(c for c in table if c.split == "test")
    response = client.post(DIAGNOSE, files={"image": ("q.png", open(query.image, "rb").read(), "image/png")},
                           data={"age": "60", "sex": "F", "site": "A"}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["answer"] in task.classes


@pytest.mark.parametrize(("headers", "status"), [("", 401), (f"Authorization: Bearer {SERVE_TOKEN}\r\n", 413)],
                         ids=["no token", "token"])
def test_live_server_drops_a_chunked_upload_over_the_limit(live_server, headers, status):
    """On a real server the refusal closes the connection: the client cannot keep streaming."""
    import socket

    host, port = live_server.removeprefix("http://").split(":")
    total, chunk, sent = 400 * 2**20, 2**16, 0  # 400 MB offered; the served app's limit is about 27 MB
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(b"POST /v1/diagnose HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                           b"Content-Type: multipart/form-data; boundary=B\r\n" + headers.encode() + b"\r\n"
                           + b"%x\r\n%s\r\n" % (len(MULTIPART_HEAD), MULTIPART_HEAD))
        try:
            while sent < total:
                connection.sendall(b"%x\r\n%s\r\n" % (chunk, b"\0" * chunk))
                sent += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while part := connection.recv(65536):
            answer += part
    assert sent < total, "the server read the whole body"
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"Traceback" not in answer
