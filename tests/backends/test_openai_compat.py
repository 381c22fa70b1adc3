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
    client = create_backend({"backend": "openai_compat", "name": "tiny", "options": {
        "base_url": live_server + "/v1", "api_key": SERVE_TOKEN, "top_logprobs": 1000, "concurrency": 3}})
    scored = client.score(requests_)
    remote = [s.log_likelihoods for s in scored]
    local = served_backend.score_options(requests_)
    assert [s.how["method"] for s in scored] == ["logprobs"] * 3
    assert all(not s.how["notes"] for s in scored)
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


def test_image_turns_put_each_label_right_before_its_own_image(requests_):
    """For servers whose template renders a message's images first: one user turn per image, the label
    that names an image ending the turn before it."""
    request = requests_[2]  # two references and the query
    plain = openai_messages(request)
    turns = openai_messages(request, image_turns=True)
    assert len(plain) == 1 and len(turns) == 4 and all(t["role"] == "user" for t in turns)
    assert [sum(p["type"] == "image_url" for p in t["content"]) for t in turns] == [0, 1, 1, 1]
    labels = ["Reference 1:", "Reference 2:", "Query:"]
    for turn, label in zip(turns[:3], labels):
        assert turn["content"][-1]["type"] == "text" and turn["content"][-1]["text"].rstrip().endswith(label)
    flat = [p for t in turns for p in t["content"]]
    assert [p.get("image_url") for p in flat if p["type"] == "image_url"] == \
        [p.get("image_url") for p in plain[0]["content"] if p["type"] == "image_url"]


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
    scored = client.score(requests_[:1])[0]
    assert option_probabilities(scored.log_likelihoods).tolist() == [0.0, 1.0]
    assert scored.how["method"] == "generation"
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
    assert len(seen) >= 2 and all(body["chat_template_kwargs"] == {"enable_thinking": False} for body in seen)
    typo = OpenAICompatBackend("served-c", base_url="http://fake/v1", transport=httpx.MockTransport(handler),
                               api_key_env=None)
    with pytest.raises(BackendError, match="model 'served-c' is not served there \\(served: served-a, served-b\\)"):
        typo.score_options(requests_[:1])


class PromptLogprobServer:
    """A vLLM-shaped server for the prompt-logprobs path: a word-piece 'tokenizer' (each word a token with
    its leading space, words over 6 letters split after the 4th), fixed log-probabilities per token text,
    and ``prompt_logprobs`` for every prompt token when asked."""

    LOGPROB = {"Answer:": -0.5, " normal": -0.3, " abno": -1.2, "rmal": -0.05, " opacity": -2.0, " norm": -4.0}

    def __init__(self, serves_prompt_logprobs: bool = True) -> None:
        self.serves = serves_prompt_logprobs
        self.bodies = []

    @staticmethod
    def tokens(text: str) -> list[str]:
        out = []
        for i, word in enumerate(text.split()):
            piece = (" " if i else "") + word
            out += [piece[:5], piece[5:]] if len(word) > 6 else [piece]
        return out

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(404, json={"error": {"message": "no"}})
        body = json.loads(request.content)
        self.bodies.append(body)
        if "prompt_logprobs" in body:
            if not self.serves:
                return httpx.Response(400, json={"error": {"message": "unknown field prompt_logprobs"}})
            answer = body["messages"][-1]["content"]
            prompt = self.tokens("Answer: " + answer)
            logprobs = [None] + [{str(i): {"logprob": self.LOGPROB.get(t, -9.0), "rank": 1, "decoded_token": t}}
                                 for i, t in enumerate(prompt[1:])]
            return httpx.Response(200, json={"choices": [{"message": {"content": ""}}], "prompt_logprobs": logprobs})
        top = [{"token": t, "logprob": v} for t, v in self.LOGPROB.items() if t.startswith(" ")]
        return httpx.Response(200, json={"choices": [{"message": {"content": "x"}, "logprobs": {"content": [
            {"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}]}}]})


def _request_with(options):
    from seeinpairs.prompts import Request

    return Request(messages=[{"role": "user", "content": [{"type": "text", "text": "Which?"}]}], images=[],
                   options=list(options))


def test_answer_logprob_reads_the_answer_tokens_backwards():
    from seeinpairs.backends.openai_compat import answer_logprob

    def entries(*tokens):
        return [None] + [{str(i): {"logprob": v, "decoded_token": t}} for i, (t, v) in enumerate(tokens)]

    assert answer_logprob(entries(("Answer:", -0.5), (" abno", -1.0), ("rmal", -0.25)), "abnormal") == -1.25
    assert answer_logprob(entries(("Answer:", -0.5), (" normal", -0.3)), "normal") == -0.3
    assert answer_logprob(entries(("Answer:", -0.5), (" other", -0.3)), "normal") is None


def test_auto_scoring_keeps_exact_first_tokens_and_rescores_the_rest():
    # one-token options: the first-token scores are exact, one request
    server = PromptLogprobServer()
    client = OpenAICompatBackend("m", base_url="http://fake/v1", transport=httpx.MockTransport(server),
                                 api_key_env=None)
    scored = client.score([_request_with(["normal", "opacity"])])[0]
    assert scored.log_likelihoods == [-0.3, -2.0]
    assert len(server.bodies) == 1 and scored.how["method"] == "logprobs"
    # 'abnormal' spans two tokens: first-token scoring would give it ' abno' alone; the whole option is rescored
    scored = client.score([_request_with(["normal", "abnormal"])])[0]
    assert scored.log_likelihoods == pytest.approx([-0.3, -1.25]) and scored.how["method"] == "prompt-logprobs"
    appended = [b for b in server.bodies if "prompt_logprobs" in b]
    assert [b["messages"][-1] for b in appended] == [{"role": "assistant", "content": "normal"},
                                                      {"role": "assistant", "content": "abnormal"}]
    assert all(b["continue_final_message"] and not b["add_generation_prompt"] for b in appended)


def test_servers_without_prompt_logprobs_keep_first_token_scores():
    server = PromptLogprobServer(serves_prompt_logprobs=False)
    client = OpenAICompatBackend("m", base_url="http://fake/v1", transport=httpx.MockTransport(server),
                                 api_key_env=None)
    for _ in range(2):
        scored = client.score([_request_with(["normal", "abnormal"])])[0]
        assert scored.log_likelihoods == [-0.3, -1.2] and scored.how["notes"] == ["first-token:abnormal"]
    assert sum("prompt_logprobs" in b for b in server.bodies) == 1  # asked once, then remembered
    strict = OpenAICompatBackend("m", base_url="http://fake/v1", transport=httpx.MockTransport(server),
                                 api_key_env=None, scoring="prompt_logprobs")
    with pytest.raises(BackendError, match="no prompt log-probabilities"):
        strict.score_options([_request_with(["normal", "abnormal"])])


def test_generation_fallback_is_constrained_to_the_options_where_the_server_can(requests_):
    def server(accepts):
        def handler(body, n):
            if "structured_outputs" in body and "structured_outputs" not in accepts:
                return httpx.Response(400, json={"error": {"message": "unknown field structured_outputs"}})
            if "guided_choice" in body and "guided_choice" not in accepts:
                return httpx.Response(400, json={"error": {"message": "unknown field guided_choice"}})
            content = "abnormal" if body["max_tokens"] > 1 else "x"
            return httpx.Response(200, json={"choices": [{"message": {"content": content}, "logprobs": None}]})
        return handler

    for accepts, expected, refusals in (({"structured_outputs"}, "constrained:structured_outputs", 0),
                                        ({"guided_choice"}, "constrained:guided_choice", 1), (set(), None, 2)):
        transport, calls = fake_server(server(accepts))
        client = OpenAICompatBackend("m", base_url="http://fake/v1", transport=transport, api_key_env=None,
                                     scoring="first_token")
        for _ in range(2):
            scored = client.score(requests_[:1])[0]
            record = scored.how
            assert option_probabilities(scored.log_likelihoods).tolist() == [0.0, 1.0] and record["method"] == "generation"
            assert record["notes"] == ([expected] if expected else [])
        refused = [c for c in calls if ("structured_outputs" in c and "structured_outputs" not in accepts)
                   or ("guided_choice" in c and "guided_choice" not in accepts)]
        assert len(refused) == refusals  # each refused constraint is asked once, then remembered
        constrained = [c.get("structured_outputs", {}).get("choice") or c.get("guided_choice") for c in calls
                       if c not in refused and ("structured_outputs" in c or "guided_choice" in c)]
        assert constrained == ([["normal", "abnormal"]] * 2 if expected else [])
