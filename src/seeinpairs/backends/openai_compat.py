"""Evaluation through any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, ``seeinpairs serve``).

Images travel as PNG data URLs re-encoded from the decoded pixels, so no file
metadata (DICOM headers with patient names and ids, EXIF) ever leaves the machine.

Option scoring asks for ONE token (``max_tokens=1``, ``logprobs=true``,
``top_logprobs=N``) and reads the log-probability of each option's FIRST token
among the returned top tokens:

* an option is matched as written (``"normal"``), then with a leading space
  (``" normal"``), then by the longest returned token that is a prefix of it
  (its first token when the option spans several tokens);
* only the first token is scored: options that share a first token (``"abnormal"``
  and ``"abnormal opacity"``) get the same score, hence equal probability; the
  record says ``shared-first-token``. Make options differ in their first token
  (or use the ``hf`` backend, which sums all tokens) when that matters;
* an option whose first token is not among the top N is given the lowest
  returned log-probability (an upper bound) and recorded as ``bounded``;
  OpenAI caps N at 20, vLLM at ``--max-logprobs``, ``seeinpairs serve`` at
  ``max_top_logprobs``.

When the server returns no log-probabilities at all, scoring falls back to
generation: the answer is generated at temperature 0, constrained to the options
where the server accepts a choice constraint (vLLM's ``structured_outputs`` or,
before 0.12, ``guided_choice``; noted as ``constrained:<name>``), mapped to an
option by exact then prefix match, and that option gets probability 1 (method
``generation``; ``generation-unmatched`` and a uniform score when nothing matches).
Each request's :class:`~.base.Scored` says how it was scored (``how``).

First-token scores are exact only when every option is one whole returned token.
Where they are not (an option matched by its first token only, shared first
tokens, bounded scores), ``scoring: auto`` (the default) rescores the request
exactly where the server offers it: each option appended as the assistant's
answer, and its tokens' log-probabilities read from vLLM's ``prompt_logprobs``
(method ``prompt-logprobs``). Servers without prompt log-probabilities keep the
first-token scores with their notes.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import io
import logging
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx
from PIL import Image

from ..errors import BackendError
from ..prompts import Request
from ..settings import ModelConfig
from .base import Backend, Scored
from .chat_layout import one_image_per_turn

logger = logging.getLogger(__name__)

#: the log-likelihood given to options that generation did not choose (probability 0 after normalising)
NOT_CHOSEN = -1e9
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def image_data_url(image: Image.Image) -> str:
    """A PNG data URL of the image's pixels only (no metadata is copied)."""
    rgb = image.convert("RGB")
    pixels = Image.frombytes("RGB", rgb.size, rgb.tobytes())  # a fresh image: no info, EXIF or ICC copied
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(request: Request, image_turns: bool = False) -> list[dict]:
    """The request's chat messages with each image slot replaced by an ``image_url`` data URL; with
    ``image_turns``, every image starts a new user turn (:func:`.chat_layout.one_image_per_turn`)."""
    images = iter(request.images)
    messages = []
    for message in one_image_per_turn(request.messages) if image_turns else request.messages:
        content = message.get("content")
        if isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content or []:
            if part.get("type") == "image":
                try:
                    image = next(images)
                except StopIteration:
                    raise BackendError("request has more image slots than images") from None
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
        messages.append({"role": message["role"], "content": parts})
    if next(images, None) is not None:
        raise BackendError("request has more images than image slots")
    return messages


def _normal(text: str) -> str:
    return re.sub(r"[\s\.\,\;\:\!\?\"'`*]+$", "", re.sub(r"^[\s\"'`*]+", "", text)).lower()


def match_generated(text: str, options: Sequence[str]) -> int | None:
    """The option a generated answer names: exact (case-insensitive), then prefix match, longest option first."""
    answer = _normal(text)
    lowered = [_normal(o) for o in options]
    if answer in lowered:
        return lowered.index(answer)
    by_length = sorted(range(len(options)), key=lambda i: -len(lowered[i]))
    for i in by_length:  # "abnormal opacity seen" -> "abnormal opacity"; "abnormal." -> "abnormal"
        if lowered[i] and answer.startswith(lowered[i]):
            return i
    for i in by_length:  # a truncated answer: "abno" -> "abnormal" (only when unambiguous)
        if answer and lowered[i].startswith(answer):
            if sum(1 for o in lowered if o.startswith(answer)) == 1:
                return i
    return None


def first_token_scores(options: Sequence[str], top: dict[str, float]) -> tuple[list[float], list[str]]:
    """Each option's first-token log-probability from ``{token: logprob}``, and notes on how it was found."""
    floor = min(top.values())
    scores, notes, matched = [], [], []
    for option in options:
        found = None
        for variant in (option, " " + option.lstrip(), option.strip()):
            if variant in top:
                found = variant
                break
        if found is None:  # the option's first token: the longest returned token that begins it
            prefixes = [t for t in top if t.strip() and option.strip().startswith(t.strip())
                        and (t == t.strip() or t.startswith(" "))]
            if prefixes:
                found = max(prefixes, key=lambda t: (len(t.strip()), t == option[:len(t)]))
                notes.append(f"first-token:{option}")  # only the option's first token is scored
        if found is None:
            scores.append(floor)
            notes.append(f"bounded:{option}")
            matched.append(None)
        else:
            scores.append(top[found])
            matched.append(found)
    tokens = [m for m in matched if m is not None]
    if len(set(tokens)) < len(tokens):
        notes.append("shared-first-token")
    return scores, notes


class OpenAICompatBackend(Backend):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ``model`` is the served model name; ``base_url`` ends before ``/chat/completions``
    (e.g. ``http://localhost:8000/v1``). The API key comes from ``api_key`` or the
    environment variable ``api_key_env``; it is never part of :meth:`identity`.
    """

    kind = "openai_compat"

    def __init__(self, model: str, base_url: str = "http://localhost:8000/v1", api_key: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 60.0, max_retries: int = 4,
                 backoff: float = 0.5, concurrency: int = 4, top_logprobs: int = 20,
                 fallback: bool = True, generation_tokens: int = 8, extra_body: dict[str, Any] | None = None,
                 scoring: str = "auto", image_turns: bool = False,
                 transport: httpx.BaseTransport | None = None) -> None:
        """The keyword parameters after ``model`` (except ``transport``, for tests) are the config's
        ``options`` (:class:`seeinpairs.backend_options.OpenAICompatOptions`). ``extra_body`` is merged
        into every request body: server-specific fields such as vLLM's ``chat_template_kwargs:
        {enable_thinking: false}`` (for thinking models) or ``mm_processor_kwargs``.

        ``scoring``: ``first_token`` reads each option's first token from one request; ``prompt_logprobs``
        scores each whole option from the log-probabilities of the prompt with the option appended
        as the assistant's answer (vLLM's ``prompt_logprobs``; one request per option); ``auto``
        keeps the first-token score where it is exact (every option found as a whole returned token)
        and rescores the other requests with prompt log-probabilities where the server offers them.

        ``image_turns``: every image starts a new user turn, for a served model whose chat template renders
        a message's images before its text (llava-hf's LLaVA 1.5 and LLaVA-OneVision): the client cannot
        read the server's template, so the user says so, and each "Reference i:" / "Query:" label then
        still precedes its own image."""
        if not model:
            raise BackendError("openai_compat: 'model' (the served model name) is required")
        if top_logprobs < 1:
            raise BackendError(f"openai_compat: top_logprobs must be >= 1, got {top_logprobs}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise BackendError("openai_compat: concurrency >= 1, max_retries >= 0 and timeout > 0 are required")
        self.model = str(model)
        self.base_url = base_url.rstrip("/")
        key = api_key if api_key is not None else (os.environ.get(api_key_env) if api_key_env else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.concurrency = int(concurrency)
        self.top_logprobs = int(top_logprobs)
        self.fallback = bool(fallback)
        self.generation_tokens = int(generation_tokens)
        self.extra_body = dict(extra_body or {})
        if scoring not in ("auto", "first_token", "prompt_logprobs"):
            raise BackendError(f"openai_compat: scoring must be auto, first_token or prompt_logprobs, got {scoring!r}")
        self.scoring = scoring
        self.image_turns = image_turns
        self._prompt_logprobs_served: bool | None = None  # learnt from the first request that asks for them
        self._refused_constraints: dict[str, bool] = {}  # choice constraints the server refused
        self._model_checked = False
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout), transport=transport)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "OpenAICompatBackend":
        """The served model ``config.name`` with the config's options (dtype, device and batch size are
        the server's business)."""
        return cls(str(config.name or ""), **config.options)

    def identity(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": self.base_url,
                "scoring": self.scoring, "top_logprobs": self.top_logprobs, "fallback": self.fallback,
                "extra_body": self.extra_body, "image_turns": self.image_turns}

    def close(self) -> None:
        self.client.close()

    # ----- HTTP -------------------------------------------------------------------------------
    def _post(self, body: dict[str, Any], refusal_ok: bool = False) -> dict[str, Any] | None:
        """POST to /chat/completions with retries on 429/5xx/connection errors.

        The wait before a retry is the server's ``Retry-After`` when it sends one (seconds or an
        HTTP date, at most 30 s), else exponential backoff with jitter; never both. ``refusal_ok``:
        a 400/422 (a parameter the server does not know) returns None instead of raising.
        """
        url = f"{self.base_url}/chat/completions"
        body = {**body, **self.extra_body}
        last, wait = "no attempt", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = wait if wait is not None else self.backoff * (2 ** (attempt - 1)) * (1 + 0.25 * random.random())
                time.sleep(min(delay, 30.0))
            try:
                response = self.client.post(url, json=body)
            except (httpx.TransportError,) as exc:  # connection refused/reset, timeouts, protocol errors
                last, wait = f"{type(exc).__name__}", None
                continue
            if response.status_code in _RETRY_STATUS:
                last, wait = f"HTTP {response.status_code}", retry_after_seconds(response.headers.get("retry-after"))
                continue
            if refusal_ok and response.status_code in (400, 422):
                return None
            if response.status_code >= 400:
                raise BackendError(f"{url}: HTTP {response.status_code}: {_error_message(response)}")
            try:
                return response.json()
            except ValueError:
                raise BackendError(f"{url}: the server answered with something other than JSON") from None
        raise BackendError(f"{url}: no answer after {self.max_retries + 1} attempts ({last})")

    def check_model(self) -> None:
        """Once per backend: the served model name is among the server's ``/models`` (a typo would
        otherwise be answered by whatever the server runs, or fail on every request). Servers that
        list no models are not checked."""
        if self._model_checked:
            return
        self._model_checked = True
        try:
            response = self.client.get(f"{self.base_url}/models")
            served = [str(m["id"]) for m in response.json().get("data", [])] if response.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError, KeyError, TypeError):
            return  # the requests themselves report an unreachable or unusual server
        if served and self.model not in served:
            raise BackendError(f"{self.base_url}: model '{self.model}' is not served there "
                               f"(served: {', '.join(served[:10])})")

    def _map(self, function, items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.concurrency == 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(function, items))

    # ----- backend API ----------------------------------------------------------------------------
    def _score_one(self, request: Request) -> tuple[list[float], dict[str, Any]]:
        messages = openai_messages(request, self.image_turns)
        body = {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0,
                "logprobs": True, "top_logprobs": self.top_logprobs}
        if self.scoring == "prompt_logprobs":
            exact = self._score_whole_options(messages, request.options)
            if exact is None:
                raise BackendError(f"{self.base_url}: the server returns no prompt log-probabilities "
                                   "(scoring: prompt_logprobs needs vLLM's prompt_logprobs; use auto or first_token)")
            return exact, {"method": "prompt-logprobs", "notes": []}
        data = self._post(body)
        top = _top_logprobs(data)
        if top:
            scores, notes = first_token_scores(request.options, top)
            if notes and self.scoring == "auto" and self._prompt_logprobs_served is not False:
                exact = self._score_whole_options(messages, request.options)
                if exact is not None:
                    return exact, {"method": "prompt-logprobs", "notes": [], "first_token_notes": notes}
            return scores, {"method": "logprobs", "notes": notes}
        if not self.fallback:
            raise BackendError(f"{self.base_url}: the server returned no log-probabilities (fallback is off)")
        text, constraint = self._generate_choice(messages, request.options)
        notes = [f"constrained:{constraint}"] if constraint else []
        chosen = match_generated(text, request.options)
        if chosen is None:
            return [0.0] * len(request.options), {"method": "generation-unmatched", "notes": notes, "text": text}
        scores = [NOT_CHOSEN] * len(request.options)
        scores[chosen] = 0.0
        return scores, {"method": "generation", "notes": notes, "text": text}

    #: ways servers constrain generation to a list of choices: vLLM since 0.12, then vLLM before it
    CHOICE_CONSTRAINTS = ("structured_outputs", "guided_choice")

    def _generate_choice(self, messages: list[dict], options: Sequence[str]) -> tuple[str, str | None]:
        """An answer generated at temperature 0, constrained to the options where the server can (the
        first constraint it accepts is remembered); (text, the constraint asked for or None)."""
        for name in self.CHOICE_CONSTRAINTS:
            if self._refused_constraints.get(name):
                continue
            constraint = {"structured_outputs": {"choice": list(options)}} if name == "structured_outputs" \
                else {"guided_choice": list(options)}
            data = self._post({"model": self.model, "messages": messages, "max_tokens": self.generation_tokens,
                               "temperature": 0, **constraint}, refusal_ok=True)
            if data is None:
                self._refused_constraints[name] = True
                continue
            return _message_text(data, self.base_url), name
        return self._generate_one(messages, self.generation_tokens), None

    def _score_whole_options(self, messages: list[dict], options: Sequence[str]) -> list[float] | None:
        """Each option's summed token log-probability as the assistant's answer, from the prompt
        log-probabilities of the conversation with the option appended; None where the server does
        not return them (then remembered, so it is asked once)."""
        scores = []
        for option in options:
            body = {"model": self.model, "messages": [*messages, {"role": "assistant", "content": option}],
                    "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0,
                    "add_generation_prompt": False, "continue_final_message": True}
            data = self._post(body, refusal_ok=True)
            served = data.get("prompt_logprobs") if isinstance(data, dict) else None
            if not isinstance(served, list):
                self._prompt_logprobs_served = False
                return None
            self._prompt_logprobs_served = True
            value = answer_logprob(served, option)
            if value is None:
                raise BackendError(f"{self.base_url}: the prompt's last tokens do not spell the option {option!r} "
                                   "(a chat template that rewrites the answer?); use scoring: first_token")
            scores.append(value)
        return scores

    def score(self, requests: Sequence[Request]) -> list[Scored]:
        """Each request's scores with how they were found (``{"method", "notes", ...}``), which predictions keep."""
        self.check_model()
        results = self._map(self._score_one, list(requests))
        for _, record in results:
            if record["method"] != "logprobs" or record["notes"]:
                logger.info("openai_compat scoring: %s %s", record["method"], ",".join(record["notes"]))
        return [Scored(scores, how=record, path=record["method"]) for scores, record in results]

    def _generate_one(self, messages: list[dict], max_tokens: int) -> str:
        data = self._post({"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
        return _message_text(data, self.base_url)

    def generate(self, requests: Sequence[Request], max_new_tokens: int = 32) -> list[str]:
        self.check_model()
        return self._map(lambda r: self._generate_one(openai_messages(r, self.image_turns), max_new_tokens), list(requests))


def _message_text(data: Any, base_url: str) -> str:
    """The text of a chat completion's first choice."""
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"{base_url}: malformed chat completion (no choices[0].message.content)") from None
    return (content or "").strip()


def _top_logprobs(data: dict[str, Any]) -> dict[str, float]:
    """``{token: logprob}`` for the first generated position (top tokens plus the chosen one), or {}."""
    try:
        content = (data["choices"][0].get("logprobs") or {}).get("content") or []
    except (KeyError, IndexError, TypeError, AttributeError):
        return {}
    if not content:
        return {}
    first = content[0]
    top: dict[str, float] = {}
    for entry in list(first.get("top_logprobs") or []) + [first]:
        token, value = entry.get("token"), entry.get("logprob")
        if isinstance(token, str) and isinstance(value, (int, float)):
            top[token] = max(float(value), top.get(token, float("-inf")))
    return top


def _prompt_token(entry: Any) -> tuple[str, float] | None:
    """(decoded text, log-probability) of the prompt token at one position of vLLM's
    ``prompt_logprobs`` (``{token_id: {"logprob", "rank", "decoded_token"}}``; with
    ``prompt_logprobs: 0`` the prompt token is the only entry, else the first one listed)."""
    if not isinstance(entry, dict) or not entry:
        return None
    first = next(iter(entry.values()))
    if not isinstance(first, dict) or not isinstance(first.get("logprob"), (int, float)):
        return None
    return str(first.get("decoded_token") or ""), float(first["logprob"])


def answer_logprob(prompt_logprobs: Sequence[Any], answer: str) -> float | None:
    """The summed log-probability of the tokens that end a prompt and spell ``answer`` (surrounding
    whitespace aside), read backwards from ``prompt_logprobs``; None when they do not spell it."""
    target = answer.strip()
    text, total = "", 0.0
    for entry in reversed(prompt_logprobs):
        token = _prompt_token(entry)
        if token is None:
            return None
        text, total = token[0] + text, total + token[1]
        stripped = text.strip()
        if stripped == target:
            return total
        if not target.endswith(stripped):
            return None
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header as seconds to wait (it is either seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else None
        return str(message or error)[:300]
    except ValueError:
        return response.text[:300].replace("\n", " ")
