"""The serve config (YAML) and the JSON shapes of the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..cases import normalise_sex
from ..configfile import ConfigFile, resolve_path
from ..imaging import MAX_PIXELS
from ..settings import BankConfig, ConfigTask, DataConfig, ModelConfig, check_partial_task, partial_task_input

#: environment variable holding the bearer token when the config names none
TOKEN_ENV = "SEEINPAIRS_API_TOKEN"


class ServedModel(ModelConfig):
    """The served model: a model config with a ``name`` (any backend: ``hf`` loads a checkpoint here;
    ``openai_compat`` fronts a model served elsewhere, e.g. by vLLM, with ``name`` its served name and
    ``options.base_url`` its server), on the CPU unless it says otherwise. ``label`` is the name clients
    send as "model" (default: the name)."""

    name: str  # hf: hub id or local folder; openai_compat: the served model name
    device: str = "cpu"

    @model_validator(mode="after")
    def _served(self) -> "ServedModel":
        if self.conditions is not None:
            raise ValueError("a served model has no 'conditions' (the selector and k are the config's 'selector')")
        return self


class SelectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "random"
    k: int = Field(2, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0


#: the selectors the page offers by default (each leakage-free; ``prior_study`` needs a patient history)
DEFAULT_VIEWER_SELECTORS: dict[str, dict[str, Any]] = {
    "random": {}, "demographic": {"match": ["sex"], "fallback": True}, "same_center": {}, "cross_center": {}}


class ViewerSettings(BaseModel):
    """What the comparative viewer (the web page) may ask for, beyond the configured selector and k."""

    model_config = ConfigDict(extra="forbid")

    #: selector name -> its parameters; the configured selector is always offered with its own
    selectors: dict[str, dict[str, Any]] = Field(default_factory=lambda: dict(DEFAULT_VIEWER_SELECTORS))
    #: the most references a page request may ask for (each one lengthens the model call)
    max_k: int = Field(4, ge=0, le=16)
    #: the longest side of images the viewer sends back (query preview, references, overlays)
    image_size: int = Field(512, ge=64, le=2048)
    #: the attribution method behind the overlay toggle (grad_x_input: one backward pass, fine on CPU)
    explain_method: Literal["grad_x_input", "integrated_gradients", "attention", "rollout"] = "grad_x_input"


class ServeConfig(ConfigFile):
    """What ``seeinpairs serve`` hosts: one model, one task, one reference bank and its selector.

    A question goes in quotes: a plain scalar in a YAML flow mapping (``{...}``) cannot hold ``?`` or ``,``.

    .. code-block:: yaml

        task: {question: "Is there an abnormal opacity in the query image?", classes: [normal, abnormal],
               healthy_class: normal}
        data: {manifest: data/manifest.csv}
        bank: {split: train}
        selector: {name: embedding, k: 2, params: {embedder: pixel}}
        model: {name: models/my-vlm}  # or a model served elsewhere (vLLM, ...): {backend: openai_compat,
                                      #   name: served-name, options: {base_url: "http://gpu-host:8000/v1"}}
        auth_token: null            # or set SEEINPAIRS_API_TOKEN
        max_prompt_tokens: 8192     # longer chat prompts: 400, before the model runs
        max_concurrent_decodes: 2   # uploads decoded at once (each may take up to max_pixels x 3 bytes)
    """

    #: with ``data.dataset``, the fields left out (classes, healthy class, question) are the adapter's
    task: ConfigTask
    data: DataConfig
    bank: BankConfig = Field(default_factory=BankConfig)
    selector: SelectorSettings = Field(default_factory=SelectorSettings)
    model: ServedModel
    auth_token: str | None = None
    max_upload_bytes: int = Field(20_000_000, ge=1)
    max_pixels: int = Field(MAX_PIXELS, ge=1)
    max_top_logprobs: int = Field(20, ge=1)
    max_tokens_limit: int = Field(256, ge=1)
    thumbnail_size: int = Field(256, ge=16)
    #: a chat prompt longer than this (text and image tokens) is refused before it reaches the model,
    #: so one request cannot hold the model for long
    max_prompt_tokens: int = Field(8192, ge=1)
    #: images decoded at the same time: each decode may take ``max_pixels`` x 3 bytes of memory
    max_concurrent_decodes: int = Field(2, ge=1)
    #: what the web page may choose (selectors, k) and the size of the images it shows
    viewer: ViewerSettings = Field(default_factory=ViewerSettings)

    _partial_task = model_validator(mode="before")(partial_task_input)

    @model_validator(mode="after")
    def _task_complete_or_from_adapter(self) -> "ServeConfig":
        check_partial_task(self.task, self.data)
        return self

    @property
    def max_request_bytes(self) -> int:
        """The most body bytes read from one request: one upload base64-encoded (4/3) plus 64 KiB of fields."""
        return self.max_upload_bytes * 4 // 3 + 65536

    def resolve_paths(self, base: Path) -> "ServeConfig":
        model = self.model
        if model.backend == "hf" and (base / model.name).exists():
            model = model.model_copy(update={"name": str(resolve_path(Path(model.name), base))})
        return self.model_copy(update={"data": self.data.resolved(base), "bank": self.bank.resolved(base),
                                       "model": model})


class DiagnoseForm(BaseModel):
    """The multipart form of ``POST /v1/diagnose``, validated in one place (a bad field is a 422 naming it)."""

    model_config = ConfigDict(extra="forbid")

    image: UploadFile | None = Field(None, description="PNG, JPEG or DICOM")
    age: float | None = Field(None, ge=0, le=150, allow_inf_nan=False, description="years")
    sex: str | None = Field(None, description="M, F or O (male/female/other and other spellings are accepted)")
    site: str | None = Field(None, max_length=100, description="acquisition site, for site-aware selectors")

    @field_validator("age", "sex", "site", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        """A web form sends empty fields as empty strings; they mean 'not given'."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sex")
    @classmethod
    def _sex(cls, value: str | None) -> str | None:
        return normalise_sex(value)


class ProblemDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error or server_error")
    param: str | None = Field(None, description="the request parameter at fault, if one is")
    code: str | None = Field(None, description="the specific reason, e.g. model_not_found")


class ErrorResponse(BaseModel):
    error: ProblemDetail


class DiagnoseResponse(BaseModel):
    answer: str
    probabilities: dict[str, float]
    log_likelihoods: dict[str, float]
    references: list[str]
    selector: str
    k: int
    selection_note: str | None = None
    model: str
    seconds: float


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    bank_size: int
    selector: str
    k: int


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat-completions request as far as it is honoured. Other parameters are checked by
    :func:`seeinpairs.serve.chat.unsupported_parameter`: harmless ones (``user``, ``metadata``) are
    accepted, ones that would change the answer (``tools``, ``logit_bias``, ...) refused by name."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="the served model's id (GET /v1/models); default: it")
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="default: the server's max_tokens_limit")
    max_completion_tokens: int | None = Field(None, ge=1, description="the newer name of max_tokens")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0, le=2, description="0 or absent: greedy (this server's default)")
    top_p: float | None = Field(None, ge=0, le=1, description="nucleus sampling, with temperature > 0")
    seed: int | None = Field(None, description="makes sampling repeatable")
    stop: str | list[str] | None = Field(None, description="up to 4 strings; the text ends before the first")
    n: int = Field(1, ge=1, description="only 1")
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        strings = [value] if isinstance(value, str) else value or []
        if len(strings) > 4 or any(not s for s in strings):
            raise ValueError("at most 4 stop strings, none empty")
        return value

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = Field(None, description="absent when the backend does not count tokens")


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed completion (``data: {...}``; the stream ends with ``data: [DONE]``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
