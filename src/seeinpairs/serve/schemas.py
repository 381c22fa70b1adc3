"""The serve config (YAML) and the JSON shapes of the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..cases import normalise_sex
from ..configfile import ConfigFile, resolve_path
from ..evaluation.config import BankConfig, ConfigTask, DataConfig, check_partial_task, partial_task_input
from ..imaging import MAX_PIXELS

#: environment variable holding the bearer token when the config names none
TOKEN_ENV = "SEEINPAIRS_API_TOKEN"


class ServedModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str  # hub id or local folder (HFBackend)
    label: str | None = None  # the name clients send as "model" (default: the folder or hub id)
    dtype: str = "float32"
    device: str = "cpu"
    batch_size: int = Field(8, ge=1)


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
        model: {name: models/my-vlm}
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
        if (base / model.name).exists():
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
    type: str


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


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat-completions request that is honoured (other fields are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    temperature: float | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
