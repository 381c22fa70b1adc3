"""Chat completions: which parameters are honoured, token-by-token generation with a local model,
and the OpenAI response and stream shapes.

A local (``hf``) model generates in a worker thread that holds the model lock for the whole
generation. Each token is detokenised there as it comes, so a stop string ends generation within a
token of the one that completes it (anything after it is discarded, not counted), and is handed over a
queue to the response: a stream sends one chunk per
token as it is generated. Any other backend (``openai_compat`` fronting vLLM, ...) answers through its
``generate``: greedy, without log-probabilities; its text comes whole, and a stream carries it as one
chunk.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import APIError
from .schemas import ChatCompletionRequest

#: parameters accepted and ignored because they do not change the answer
HARMLESS = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls", "safety_identifier",
                      "prompt_cache_key"})
#: parameters this server cannot honour, with the values that mean "not used" (only those are accepted)
UNUSED_VALUES: dict[str, tuple[Any, ...]] = {
    "tools": (None, []), "functions": (None, []), "tool_choice": (None, "none"), "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}), "logit_bias": (None, {}), "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0), "modalities": (None, ["text"]), "audio": (None,), "prediction": (None,),
    "web_search_options": (None,), "reasoning_effort": (None,),
}
#: the log-probability written for an impossible token (JSON has no -Infinity; vLLM writes the same)
NO_LOGPROB = -9999.0


def unsupported_parameter(body: ChatCompletionRequest) -> None:
    """Refuse, by name, a parameter the server would otherwise ignore while it changes the answer."""
    for name, value in (body.model_extra or {}).items():
        if name in HARMLESS or value in UNUSED_VALUES.get(name, ()):
            continue
        if name in UNUSED_VALUES:
            shown = json.dumps(value)
            raise APIError(400, f"{name}={shown[:60]} is not supported by this server", "unsupported_parameter", name)
        raise APIError(400, f"unknown parameter '{name}'", "unsupported_parameter", name)


@dataclass(frozen=True)
class ChatSettings:
    """What a chat request asks of generation, checked."""

    max_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    logprobs: bool
    top_logprobs: int
    stream: bool
    include_usage: bool

    @property
    def sampling(self) -> bool:
        """Sampling, not greedy decoding (temperature 0 or top_p 0 keep only the most likely token)."""
        return self.temperature > 0 and self.top_p > 0


def chat_settings(body: ChatCompletionRequest, max_tokens_limit: int, max_top_logprobs: int) -> ChatSettings:
    """The request's generation settings, or a 400 naming the parameter that cannot be honoured."""
    unsupported_parameter(body)
    if body.n > 1:
        raise APIError(400, "n must be 1 (one choice per request)", "unsupported_parameter", "n")
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    max_tokens = body.max_completion_tokens or body.max_tokens or max_tokens_limit
    if max_tokens > max_tokens_limit:
        raise APIError(400, f"{param} must be at most {max_tokens_limit}", "invalid_value", param)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", "invalid_value", "top_logprobs")
    if (body.top_logprobs or 0) > max_top_logprobs:
        raise APIError(400, f"top_logprobs must be at most {max_top_logprobs}", "invalid_value", "top_logprobs")
    if body.stream_options is not None and not body.stream:
        raise APIError(400, "stream_options needs stream=true", "invalid_value", "stream_options")
    return ChatSettings(max_tokens=max_tokens, temperature=body.temperature or 0.0,
                        top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed,
                        stop=tuple(body.stop_strings), logprobs=body.logprobs, top_logprobs=body.top_logprobs or 0,
                        stream=body.stream,
                        include_usage=bool(body.stream_options and body.stream_options.include_usage))


def is_local(backend: Any) -> bool:
    """Whether the backend is a model in this process (processor, tokenizer and a model that generates):
    only such a backend samples, streams token by token and returns log-probabilities."""
    return (getattr(backend, "processor", None) is not None and getattr(backend, "tokenizer", None) is not None
            and hasattr(getattr(backend, "model", None), "generate"))


def check_backend_can(settings: ChatSettings, backend_kind: str) -> None:
    """A backend that generates only greedily, text only, refuses what it cannot give."""
    if settings.logprobs:
        raise APIError(400, f"this server's backend ({backend_kind}) cannot return logprobs", "unsupported_parameter",
                       "logprobs")
    if settings.sampling:
        raise APIError(400, f"this server's backend ({backend_kind}) generates greedily: leave temperature out or "
                            "set it to 0", "unsupported_parameter", "temperature")


# ----- text as tokens come -------------------------------------------------------------------------
class Detokenizer:
    """Token ids to text as it grows. Text that may begin a stop string, or ends in an incomplete
    UTF-8 character, is held back until later tokens decide; at a stop string the text ends before it."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self.tokenizer, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.sent = 0  # characters handed out
        self.stopped = False

    def add(self, token: int) -> str:
        """The new text that ``token`` makes certain (possibly none)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.stopped = True
            return self._emit(text[:max(min(cuts), self.sent)])
        return self._emit(text[:len(text) - self._held(text)])

    def flush(self) -> str:
        """The text held back, once generation has ended without a stop string."""
        return self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _held(self, text: str) -> int:
        held = len(text) - len(text.rstrip("\ufffd"))
        for stop in self.stop:
            held = max([held] + [k for k in range(1, len(stop)) if text.endswith(stop[:k])])
        return held

    def _emit(self, upto: str) -> str:
        new = upto[self.sent:]
        self.sent = max(self.sent, len(upto))
        return new


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` ended before its first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def token_entry(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    text = tokenizer.decode([token_id])
    value = logprob if math.isfinite(logprob) else NO_LOGPROB
    return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}


@dataclass
class Step:
    """One generated token: the text it adds (empty when held back or special) and its log-prob entry."""

    text: str
    entry: dict[str, Any] | None = None


@dataclass
class Outcome:
    """How generation ended."""

    finish_reason: str
    completion_tokens: int


# ----- local generation ----------------------------------------------------------------------------
class LocalGeneration:
    """One generation by a local model in a worker thread, read as :class:`Step` items then an :class:`Outcome`.

    The worker holds ``lock`` while the model runs; a reader that stops early (a client gone) cancels it
    at the next token, so the lock is not held for tokens nobody reads.
    """

    def __init__(self, backend: Any, lock: threading.Lock, encoded: dict[str, Any], settings: ChatSettings) -> None:
        from transformers.generation.streamers import BaseStreamer

        self.backend, self.lock, self.encoded, self.settings = backend, lock, encoded, settings
        self.tokenizer = backend.tokenizer
        self.items: queue.SimpleQueue = queue.SimpleQueue()
        self.cancel = threading.Event()
        self.text = Detokenizer(self.tokenizer, settings.stop)
        self.count, self.finish = 0, "length"
        self._step_logprobs = None  # the log-softmax of the step being generated (logprobs only)
        generation = self

        class _Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value) -> None:
                if not self.prompt_seen:  # generate hands over the prompt first
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    generation.on_token(int(token))

            def end(self) -> None:
                pass

        self.streamer = _Streamer()

    def stop_ids(self) -> set[int]:
        config = getattr(self.backend.model, "generation_config", None)
        ids = getattr(config, "eos_token_id", None)
        ids = set(ids if isinstance(ids, (list, tuple)) else [ids])
        return {i for i in ids | {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} if i is not None}

    def on_token(self, token: int) -> None:
        """In the worker: detokenise, note a stop, queue the token's text and log-prob entry."""
        if self.text.stopped:
            return
        self.count += 1
        entry = self.entry(token) if self.settings.logprobs else None
        if token in self._stops:
            self.finish = "stop"
            text = ""
        else:
            text = self.text.add(token)
            if self.text.stopped:
                self.finish = "stop"
                self.cancel.set()  # generate stops at its next check; a token it computed meanwhile is dropped
        self.items.put(Step(text, entry))

    def entry(self, token: int) -> dict[str, Any]:
        import torch

        step = self._step_logprobs
        entry = token_entry(self.tokenizer, token, float(step[token]))
        n_top = min(self.settings.top_logprobs, step.shape[0])
        values, ids = torch.topk(step, n_top) if n_top else ([], [])
        entry["top_logprobs"] = [token_entry(self.tokenizer, int(i), float(v)) for v, i in zip(values, ids)]
        return entry

    def run(self) -> None:
        """The worker: generate under the lock, then queue the held-back text and the outcome (or the error)."""
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        generation = self

        def record(input_ids, scores):  # after the model's own processors, before temperature/top-p
            generation._step_logprobs = torch.log_softmax(scores[0].float(), -1)
            return scores

        def cancelled(input_ids, scores):
            return torch.full((input_ids.shape[0],), generation.cancel.is_set(), dtype=torch.bool,
                              device=input_ids.device)

        settings = self.settings
        sampling = ({"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}
                    if settings.sampling else {"do_sample": False})
        try:
            self._stops = self.stop_ids()
            with self.lock, torch.inference_mode():
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                self.backend.model.generate(
                    **self.encoded, max_new_tokens=settings.max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                    streamer=self.streamer, stopping_criteria=StoppingCriteriaList([_hook(StoppingCriteria, cancelled)]),
                    logits_processor=LogitsProcessorList([_hook(LogitsProcessor, record)] if settings.logprobs else []),
                    **sampling)
            if not self.text.stopped:
                tail = self.text.flush()
                if tail:
                    self.items.put(Step(tail))
            self.items.put(Outcome(self.finish, self.count))
        except Exception as exc:  # handed to the reader, which answers it
            self.items.put(exc)

    def __iter__(self) -> Iterator[Step | Outcome]:
        worker = threading.Thread(target=self.run, name="seeinpairs-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = self.items.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Outcome):
                    return
        finally:
            self.cancel.set()


def _hook(base: type, function: Callable):
    """An instance of transformers' ``base`` (StoppingCriteria, LogitsProcessor) that calls ``function``
    (made here, not at import: transformers loads torch)."""

    class Hook(base):
        def __call__(self, input_ids, scores):  # no **kwargs: LogitsProcessorList demands every named one
            return function(input_ids, scores)

    return Hook()


# ----- response shapes -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Completion:
    """The identity of one completion: what every chunk of it repeats."""

    id: str
    created: int
    model: str

    def body(self, text: str, finish: str, entries: list[dict] | None, usage: dict | None) -> dict[str, Any]:
        """A ``chat.completion`` object."""
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                  "logprobs": {"content": entries} if entries is not None else None}
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [choice], "usage": usage}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, entries: list[dict] | None = None,
              usage: dict | None = None, with_usage: bool = False, choices: bool = True) -> dict[str, Any]:
        """A ``chat.completion.chunk`` object (with ``usage: null`` in every chunk when usage was asked for)."""
        chunk: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                 "model": self.model, "choices": []}
        if choices:
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish,
                                 "logprobs": {"content": entries} if entries is not None else None}]
        if with_usage:
            chunk["usage"] = usage
        return chunk


def usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int] | None:
    if prompt_tokens is None or completion_tokens is None:
        return None
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def collect(steps: Iterator[Step | Outcome]) -> tuple[str, list[dict], Outcome]:
    """A whole generation: its text, its tokens' log-prob entries and how it ended."""
    text, entries = [], []
    for item in steps:
        if isinstance(item, Outcome):
            return "".join(text), entries, item
        text.append(item.text)
        if item.entry is not None:
            entries.append(item.entry)
    raise RuntimeError("generation ended without an outcome")


def stream_chunks(completion: Completion, steps: Iterator[Step | Outcome], settings: ChatSettings,
                  prompt_tokens: int | None) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed completion: the role, one chunk per token with text or a log-prob entry,
    the finish reason, then (if asked) the usage."""
    with_usage = settings.include_usage
    yield completion.chunk({"role": "assistant", "content": ""}, with_usage=with_usage)
    for item in steps:
        if isinstance(item, Outcome):
            yield completion.chunk({}, item.finish_reason, with_usage=with_usage)
            if with_usage:
                yield completion.chunk({}, usage=usage(prompt_tokens, item.completion_tokens), with_usage=True,
                                       choices=False)
            return
        if item.text or item.entry is not None:
            entries = [item.entry] if item.entry is not None else None
            yield completion.chunk({"content": item.text}, entries=entries, with_usage=with_usage)


def sse_events(chunks: Iterator[dict[str, Any]], on_error: Callable[[BaseException], dict]) -> Iterator[bytes]:
    """Server-sent events of the chunks, then ``data: [DONE]``; an error after the stream began is sent
    as an ``{"error": ...}`` event (the status line has gone out already)."""
    from fastapi.sse import format_sse_event

    try:
        for chunk in chunks:
            yield format_sse_event(data_str=json.dumps(chunk))
    except Exception as exc:
        yield format_sse_event(data_str=json.dumps(on_error(exc)))
    yield format_sse_event(data_str="[DONE]")
