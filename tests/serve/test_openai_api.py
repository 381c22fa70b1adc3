"""The OpenAI-compatible endpoints as clients use them: streaming, sampling, stop strings, refusals,
models, the OpenAPI description, a server fronting another backend, and the official ``openai`` client."""

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from shared_helpers import SERVE_TOKEN, serve_config

AUTH = {"Authorization": f"Bearer {SERVE_TOKEN}"}
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def client(served_app):
    return TestClient(served_app, raise_server_exceptions=False)


def chat(client, **body):
    response = client.post(CHAT, json={"messages": HELLO, **body}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def sse_data(response) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]


def test_stream_is_the_completion_in_chunks(client):
    whole = chat(client, max_tokens=6, logprobs=True, top_logprobs=2)
    response = client.post(CHAT, json={"messages": HELLO, "max_tokens": 6, "logprobs": True, "top_logprobs": 2,
                                       "stream": True, "stream_options": {"include_usage": True}}, headers=AUTH)
    events = sse_data(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content") is not None]
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert text == whole["choices"][0]["message"]["content"]
    streamed_logprobs = [e for c in content for e in (c["choices"][0]["logprobs"] or {}).get("content", [])]
    assert streamed_logprobs == whole["choices"][0]["logprobs"]["content"]
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == [whole["choices"][0]["finish_reason"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])  # usage: null until the usage chunk


def test_stream_refusals_come_before_the_stream(client):
    response = client.post(CHAT, json={"messages": HELLO, "stream": True, "tools": [{"type": "function"}]},
                           headers=AUTH)
    assert response.status_code == 400 and response.json()["error"]["param"] == "tools"


def test_stop_string_ends_the_text_and_the_generation(client):
    free = chat(client, max_tokens=8)
    text = free["choices"][0]["message"]["content"]
    index = next((i for i in range(1, len(text)) if text[i].isalnum() and text[i] not in text[:i]), None)
    assert index is not None, f"no usable stop character in {text!r}"
    stopped = chat(client, max_tokens=8, stop=[text[index], "never appears"])
    assert stopped["choices"][0]["message"]["content"] == text[:index]
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] <= free["usage"]["completion_tokens"]
    events = sse_data(client.post(CHAT, json={"messages": HELLO, "max_tokens": 8, "stop": text[index],
                                              "stream": True}, headers=AUTH))
    streamed = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert streamed == text[:index]


def test_temperature_samples_and_seed_repeats(client):
    greedy = chat(client, max_tokens=8)["choices"][0]["message"]["content"]
    assert chat(client, max_tokens=8, temperature=0)["choices"][0]["message"]["content"] == greedy

    def sampled(seed):
        return chat(client, max_tokens=8, temperature=1.5, top_p=0.95, seed=seed)["choices"][0]["message"]["content"]

    first = sampled(7)
    assert sampled(7) == first
    assert len({first, sampled(8), sampled(9)}) > 1


def test_max_tokens_default_and_its_newer_name(synthetic_data, tiny_models, served_backend):
    from seeinpairs.serve.app import create_app

    small = TestClient(create_app(serve_config(synthetic_data, tiny_models, max_tokens_limit=5),
                                  backend_factory=lambda _: served_backend), raise_server_exceptions=False)
    default = chat(small)
    assert default["usage"]["completion_tokens"] == 5 or default["choices"][0]["finish_reason"] == "stop"
    assert chat(small, max_completion_tokens=2)["usage"]["completion_tokens"] <= 2
    too_many = small.post(CHAT, json={"messages": HELLO, "max_completion_tokens": 6}, headers=AUTH)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_completion_tokens"


def test_developer_role_is_the_system_message(client):
    def ask(role):
        return chat(client, max_tokens=3, messages=[{"role": role, "content": "answer briefly"}, *HELLO])

    developer, system = ask("developer"), ask("system")
    assert developer["choices"][0]["message"] == system["choices"][0]["message"]
    assert developer["usage"] == system["usage"]


def test_models_list_retrieve_and_unknown_model(client):
    listed = client.get("/v1/models", headers=AUTH).json()
    card = listed["data"][0]
    assert card["id"] == "tiny" and isinstance(card["created"], int) and card["owned_by"]
    assert client.get("/v1/models/tiny", headers=AUTH).json() == card
    assert chat(client, model="tiny", max_tokens=1)["model"] == "tiny"
    for response in (client.get("/v1/models/gpt-4o", headers=AUTH),
                     client.post(CHAT, json={"messages": HELLO, "model": "gpt-4o"}, headers=AUTH)):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found" and "gpt-4o" in response.json()["error"]["message"]


def test_openapi_declares_typed_responses(client):
    schema = client.get("/openapi.json").json()
    chat_responses = schema["paths"][CHAT]["post"]["responses"]
    assert chat_responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletion")
    assert "text/event-stream" in chat_responses["200"]["content"]
    assert chat_responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    models = schema["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert models["$ref"].endswith("/ModelList")
    assert {"param", "code"} <= set(schema["components"]["schemas"]["ProblemDetail"]["properties"])
    assert {"created", "owned_by"} <= set(schema["components"]["schemas"]["ModelCard"]["properties"])


# ----- any backend serves: a front server for a model served elsewhere -----------------------------------
@pytest.fixture(scope="module")
def front(synthetic_data, tiny_models, live_server):
    """A server built from its config alone whose model is the live server's, through ``openai_compat``."""
    from seeinpairs.serve.app import create_app

    model = {"backend": "openai_compat", "name": "tiny", "label": "front",
             "options": {"base_url": live_server + "/v1", "api_key": SERVE_TOKEN, "api_key_env": None,
                         "top_logprobs": 1000}}
    app = create_app(serve_config(synthetic_data, tiny_models, model=model))
    assert app.state.service.backend.kind == "openai_compat"
    return TestClient(app, raise_server_exceptions=False)


def test_front_server_diagnoses_like_the_model_it_fronts(front, client, synthetic_data):
    root, table, task = synthetic_data
    query = next(c for c in table if c.split == "test")
    files = {"image": ("q.png", open(query.image, "rb").read(), "image/png")}
    there = client.post("/v1/diagnose", files=files, data={"age": "60"}, headers=AUTH).json()
    here = front.post("/v1/diagnose", files=files, data={"age": "60"}, headers=AUTH).json()
    assert here["model"] == "front" and here["references"] == there["references"]
    assert np.allclose([here["probabilities"][o] for o in task.classes],
                       [there["probabilities"][o] for o in task.classes], atol=1e-4)


def test_front_server_chats_greedily_without_logprobs(front, client, synthetic_data):
    root, table, task = synthetic_data
    url = "data:image/png;base64," + base64.b64encode(open(table[0].image, "rb").read()).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": task.question}]}]
    there = chat(client, messages=messages, max_tokens=4)["choices"][0]["message"]["content"]
    here = chat(front, messages=messages, max_tokens=4, model="front")
    assert here["choices"][0]["message"]["content"] == there.strip() and here["usage"] is None
    events = sse_data(front.post(CHAT, json={"messages": messages, "max_tokens": 4, "stream": True}, headers=AUTH))
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == there.strip()
    for extra, param in (({"logprobs": True}, "logprobs"), ({"temperature": 0.7}, "temperature")):
        refused = front.post(CHAT, json={"messages": HELLO, **extra}, headers=AUTH)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param
    assert "cannot return logprobs" in front.post(CHAT, json={"messages": HELLO, "logprobs": True},
                                                  headers=AUTH).json()["error"]["message"]


def test_served_model_backend_and_options_are_checked(synthetic_data, tiny_models):
    from seeinpairs.errors import ConfigError

    with pytest.raises(ConfigError, match="top_logprob"):
        serve_config(synthetic_data, tiny_models, model={"backend": "openai_compat", "name": "m",
                                                         "options": {"top_logprob": 5}})
    with pytest.raises(ConfigError, match="unknown backend 'vllm'"):
        serve_config(synthetic_data, tiny_models, model={"backend": "vllm", "name": "m"})


# ----- the official client ------------------------------------------------------------------------------
def test_official_openai_client(live_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=live_server + "/v1", api_key=SERVE_TOKEN, max_retries=0)
    answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, logprobs=True, top_logprobs=3)
    assert answer.object == "chat.completion" and answer.usage.completion_tokens <= 3
    assert len(answer.choices[0].logprobs.content[0].top_logprobs) == 3
    stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").created > 0
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=HELLO, response_format={"type": "json_object"})
    assert refused.value.param == "response_format"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live_server + "/v1", api_key="wrong", max_retries=0).models.list()


def test_a_stream_left_early_cancels_its_generation(served_backend):
    """A client that goes away mid-stream does not keep the model lock for tokens nobody reads."""
    import threading

    from seeinpairs.backends.encoding import chat_prompt, encode_prompts
    from seeinpairs.prompts import Request
    from seeinpairs.serve.chat import ChatSettings, LocalGeneration, Step

    request = Request(messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]}], images=[],
                      options=[])
    encoded = encode_prompts(served_backend.processor, [chat_prompt(served_backend.processor, request)], [[]],
                             "right")
    settings = ChatSettings(max_tokens=256, temperature=0.0, top_p=1.0, seed=None, stop=(), logprobs=False,
                            top_logprobs=0, stream=True, include_usage=False)
    lock = threading.Lock()
    generation = LocalGeneration(served_backend, lock, encoded, settings)
    left, on_token = threading.Event(), generation.on_token

    def first_token_waits(token):  # the worker waits after its first token until the reader has gone
        on_token(token)
        if generation.count == 1:
            left.wait(timeout=60)

    generation.on_token = first_token_waits
    steps = iter(generation)
    assert isinstance(next(steps), Step)
    steps.close()  # what the server does when the client disconnects
    left.set()
    assert lock.acquire(timeout=120)  # a hang guard: the worker stops and lets go of the model
    lock.release()
    assert generation.count <= 2  # the token being generated when it left, not the 256 asked for
