import json

import httpx
import numpy as np
import pytest
from shared_helpers import SERVE_TOKEN

from seeinpairs.backends import create_backend
from seeinpairs.backends.base import option_probabilities
from seeinpairs.backends.openai_compat import (OpenAICompatBackend, first_token_scores, match_generated,
                                               openai_messages)
from seeinpairs.errors import BackendError
from seeinpairs.prompts import PromptBuilder


@pytest.fixture(scope="module")
def requests_(synthetic_data):
    root, table, task = synthetic_data
    builder = PromptBuilder(task)
    bank = [c for c in table if c.split == "train" and c.label == task.healthy_class]
    queries = [c for c in table if c.split == "test"][:3]
    return [builder.build(queries[0]), builder.build(queries[1], bank[:1]), builder.build(queries[2], bank[1:3])]


def test_client_against_served_model_matches_in_process(live_server, served_backend, requests_):
    """Single-token options: the served first-token log-prob is the in-process option score."""
    tokenizer = served_backend.tokenizer
    for option in requests_[0].options:
        assert len(tokenizer(option, add_special_tokens=False)["input_ids"]) == 1
    client = create_backend("openai_compat", model="tiny", base_url=live_server + "/v1", api_key=SERVE_TOKEN,
                            top_logprobs=1000, concurrency=3)
    remote = client.score_options(requests_)
    local = served_backend.score_options(requests_)
    assert [r["method"] for r in client.last_score_records] == ["logprobs"] * 3
    assert all(not r["notes"] for r in client.last_score_records)
    for r, l in zip(remote, local):
        assert np.allclose(r, l, atol=1e-4)
        assert np.allclose(option_probabilities(r), option_probabilities(l), atol=1e-4)
    assert all(isinstance(t, str) for t in client.generate(requests_[:1], max_new_tokens=2))
    assert "api_key" not in json.dumps(client.identity()) and SERVE_TOKEN not in json.dumps(client.identity())


def test_client_needs_the_token(live_server, requests_):
    client = OpenAICompatBackend("tiny", base_url=live_server + "/v1", api_key="wrong", api_key_env=None)
    with pytest.raises(BackendError, match="401"):
        client.score_options(requests_[:1])


def test_messages_carry_pixels_only(requests_):
    messages = openai_messages(requests_[2])
    urls = [p["image_url"]["url"] for p in messages[0]["content"] if p["type"] == "image_url"]
    assert len(urls) == 3 and all(u.startswith("data:image/png;base64,") for u in urls)


def test_first_token_matching_rules():
    top = {"normal": -1.0, " abnormal": -2.0, "ab": -3.0, "x": -5.0}
    scores, notes = first_token_scores(["normal", "abnormal"], top)
    assert scores == [-1.0, -2.0] and notes == []
    scores, notes = first_token_scores(["abnormal opacity", "abnormal", "effusion"], {"abnormal": -0.5, "z": -4.0})
    assert scores == [-0.5, -0.5, -4.0]
    assert "shared-first-token" in notes and "bounded:effusion" in notes
    assert match_generated(" Abnormal.", ["normal", "abnormal"]) == 1
    assert match_generated("abnormal opacity in the left lung", ["abnormal", "abnormal opacity"]) == 1
    assert match_generated("maybe", ["normal", "abnormal"]) is None


def fake_server(handler):
    calls = []

    def wrapped(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # /models: a server that lists none (the served-name check is skipped)
            return httpx.Response(404, json={"error": {"message": "not found"}})
        body = json.loads(request.content)
        calls.append(body)
        return handler(body, len(calls))
    return httpx.MockTransport(wrapped), calls


def test_fallback_to_generation_when_no_logprobs(requests_):
    def handler(body, n):
        content = "abnormal." if body["max_tokens"] > 1 else "x"
        return httpx.Response(200, json={"choices": [{"message": {"content": content}, "logprobs": None}]})

    transport, calls = fake_server(handler)
    client = OpenAICompatBackend("m", base_url="http://fake/v1", transport=transport, api_key_env=None)
    scores = client.score_options(requests_[:1])[0]
    assert option_probabilities(scores).tolist() == [0.0, 1.0]
    assert client.last_score_records[0]["method"] == "generation"
    assert calls[0]["logprobs"] is True and calls[0]["max_tokens"] == 1 and calls[1]["temperature"] == 0


def test_retries_with_backoff_on_429_and_5xx(requests_):
    def handler(body, n):
        if n == 1:
            return httpx.Response(429, json={"error": {"message": "slow down"}})
        if n == 2:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, json={"choices": [{"message": {"content": "normal"}, "logprobs": {"content": [
            {"token": "normal", "logprob": -0.1, "top_logprobs": [{"token": "normal", "logprob": -0.1},
                                                                  {"token": "abnormal", "logprob": -2.4}]}]}}]})

    transport, calls = fake_server(handler)
    client = OpenAICompatBackend("m", base_url="http://fake/v1", transport=transport, backoff=0.01, api_key_env=None)
    assert client.score_options(requests_[:1]) == [[-0.1, -2.4]]
    assert len(calls) == 3
    transport, calls = fake_server(lambda body, n: httpx.Response(500, text="down"))
    client = OpenAICompatBackend("m", base_url="http://fake/v1", transport=transport, backoff=0.001,
                                 max_retries=2, api_key_env=None)
    with pytest.raises(BackendError, match="3 attempts"):
        client.score_options(requests_[:1])
    assert len(calls) == 3


def test_connection_errors_are_retried_then_reported(requests_):
    client = OpenAICompatBackend("m", base_url="http://127.0.0.1:9/v1", backoff=0.001, max_retries=1,
                                 timeout=2, api_key_env=None)
    with pytest.raises(BackendError, match="ConnectError"):
        client.score_options(requests_[:1])


def test_retry_after_replaces_the_backoff(requests_, monkeypatch):
    slept = []
    monkeypatch.setattr("seeinpairs.backends.openai_compat.time.sleep", slept.append)
    answer = {"choices": [{"message": {"content": "normal"}, "logprobs": {"content": [
        {"token": "normal", "logprob": -0.1, "top_logprobs": [{"token": "abnormal", "logprob": -2.0}]}]}}]}

    def handler(body, n):
        if n == 1:
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}})
        if n == 2:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, json=answer)

    transport, calls = fake_server(handler)
    client = OpenAICompatBackend("m", base_url="http://fake/v1", transport=transport, backoff=0.5, api_key_env=None)
    client.score_options(requests_[:1])
    assert len(calls) == 3
    assert slept[0] == 2.0  # the server's wait alone, not added to the backoff
    assert 1.0 <= slept[1] <= 1.25  # no Retry-After: the backoff of the second retry (0.5 * 2, with jitter)


def test_retry_after_as_an_http_date():
    from seeinpairs.backends.openai_compat import retry_after_seconds

    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_extra_body_reaches_every_request_and_the_served_name_is_checked(requests_):
    answer = {"choices": [{"message": {"content": "normal"}, "logprobs": {"content": [
        {"token": "normal", "logprob": -0.1, "top_logprobs": []}]}}]}
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served-a"}, {"id": "served-b"}]})
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=answer)

    extra = {"chat_template_kwargs": {"enable_thinking": False}}
    client = OpenAICompatBackend("served-b", base_url="http://fake/v1", transport=httpx.MockTransport(handler),
                                 extra_body=extra, api_key_env=None)
    client.score_options(requests_[:1])
    client.generate(requests_[:1], max_new_tokens=4)
    assert len(seen) == 2 and all(body["chat_template_kwargs"] == {"enable_thinking": False} for body in seen)
    typo = OpenAICompatBackend("served-c", base_url="http://fake/v1", transport=httpx.MockTransport(handler),
                               api_key_env=None)
    with pytest.raises(BackendError, match="model 'served-c' is not served there \\(served: served-a, served-b\\)"):
        typo.score_options(requests_[:1])
