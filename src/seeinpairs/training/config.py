"""Fine-tuning configs: what to train on, with which references, and how.

Read from YAML and validated with pydantic like :class:`ExperimentConfig`: an
unknown or invalid field is a one-line :class:`ConfigError` naming the field.
Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ..backends.lora_targets import language_model_targets
from ..backends.tiny import TinySpec
from ..configfile import ConfigFile, resolve_path
from ..errors import ConfigError
from ..settings import (BankConfig, ConfigTask, DataConfig, ModelConfig, ReferenceCount, StrictModel,
                        check_partial_task, partial_task_input)
from ..siteshift.augment import AcquisitionAugment
from .balance import ClassBalance


#: the member tags pydantic appends to the location of a union field's errors ("k.list[int]")


class LoraConfig(StrictModel):
    """Low-rank adaptation. ``enabled="auto"``: LoRA for pretrained checkpoints, full training for
    tiny randomly initialised models (an adapter on random weights cannot learn the task)."""

    enabled: bool | Literal["auto"] = "auto"
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str | None = None
    #: QLoRA: load the frozen base in 4 or 8 bits (bitsandbytes, CUDA only) and train the adapter on it;
    #: ``final/`` merges the adapter into the base reloaded at ``model.dtype``, not into the rounded weights.
    quantize: Literal[4, 8] | None = None

    @model_serializer(mode="wrap")
    def _omit_default_quantize(self, handler):
        data = handler(self)
        if isinstance(data, dict) and self.quantize is None:
            data.pop("quantize", None)  # runs made before the field existed still match on resume
        return data

    def targets(self, model) -> list[str] | str:
        """Explicit ``target_modules``, else the language model's attention projections read from
        ``model``'s module tree (the vision tower and projector stay frozen unless named here)."""
        if self.target_modules is not None:
            return self.target_modules
        targets = language_model_targets(model)
        if targets is None:
            raise ConfigError(f"field 'lora.target_modules': no language model with attention projections found in "
                              f"{type(model).__name__}; name the modules to adapt (e.g. all-linear)")
        return targets


class SFTSettings(ConfigFile):
    """What every fine-tuning run needs, whatever its examples are: the model, LoRA, the optimiser,
    the schedule, validation cadence, early stopping, the seed and the output folder.

    :class:`TrainConfig` adds the case-based data (manifest, task, references);
    :func:`~seeinpairs.training.train_on_examples` takes these settings with examples given
    directly as (request, gold answer) pairs, e.g. multi-image QA items.

    * ``max_steps`` (optimizer steps) overrides ``epochs`` when set.
    * Validation every ``eval_every`` steps (and at the end). Early stopping and the kept ("best")
      checkpoint use the validation loss (mean negative log-likelihood of the gold answer tokens,
      the training objective): it is smooth and defined on any validation subset, whereas AUROC or
      accuracy move in coarse steps on small validation sets and saturate while calibration still
      improves. ``patience``: evaluations without improvement before stopping (``None``: never).
    * ``class_balance`` (examples' classes: the gold class of a case, the gold answer of a generic
      example): ``loss`` multiplies each example's answer loss by its inverse class frequency
      (normalised to mean 1), ``sampler`` draws every class equally often in each epoch, ``none``
      trains on the examples as they are, and ``auto`` (the default) applies ``sampler`` to cases (not to
      generic examples, whose answers are not classes) when the
      largest class has at least 1.5 times as many examples as the smallest, else ``none``. Without
      it a small model on an imbalanced task can settle on answering the class shares for every
      case. The summary records what was applied (``class_balance``). See :mod:`.balance`.
    """

    name: str = "sft"
    model: ModelConfig
    tiny_spec: dict[str, Any] = Field(default_factory=dict)
    lora: LoraConfig = Field(default_factory=LoraConfig)

    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)

    eval_every: int = Field(50, ge=1)
    patience: int | None = Field(None, ge=1)

    #: also train the tokenizer's end-of-sequence token after every gold answer, so that the model
    #: ends its turn after answering when it generates free text. Option scoring and the validation
    #: loss (the answer's tokens only) do not depend on it; off keeps earlier runs reproducible.
    end_of_turn: bool = False

    class_balance: ClassBalance = "auto"

    #: autocast of the forward pass (accelerate's ``mixed_precision``): weights and optimizer states
    #: stay in ``model.dtype`` (float32 by default), so small updates are not rounded away as they are
    #: with ``model.dtype: bfloat16``. ``fp16`` scales the loss (a GradScaler) and needs a CUDA device.
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    #: recompute activations in the backward pass instead of keeping them (transformers'
    #: ``gradient_checkpointing_enable``, non-reentrant): much less activation memory for some extra
    #: compute; the loss and gradients are those of the run without it.
    gradient_checkpointing: bool = False
    #: an experiment tracker through accelerate's trackers, logging every evaluation's record into
    #: ``output_dir/logs``: ``tensorboard`` (needs the tensorboard package) or ``wandb`` (offline unless
    #: ``WANDB_MODE`` says otherwise; needs wandb).
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    #: at most this many visual tokens per image (the processor's pixel budget, kept in ``final/``'s
    #: processor so evaluation sees what training saw): an example with k references then costs at most
    #: (k + 1) x ``max_image_tokens`` image tokens, so memory is predictable whatever the image sizes.
    #: Qwen2-VL / Qwen2.5-VL processors (``max_pixels``); ``None`` keeps the processor's own limit.
    max_image_tokens: int | None = Field(None, ge=1)

    seed: int = 0
    output_dir: Path = Path("runs/sft")

    @field_validator("tiny_spec")
    @classmethod
    def _known_spec(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in fields(TinySpec)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown TinySpec field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return value

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler):
        data = handler(self)
        if isinstance(data, dict):
            for key in self._omitted_fields():
                data.pop(key, None)  # the resume check and the study compare dumps with older runs
        return data

    def _omitted_fields(self) -> list[str]:
        """Fields left out of the dump at their default, so runs made before they existed still match
        (``class_balance``: the study and resume check compare what was applied separately)."""
        omitted = ["class_balance"] if self.class_balance == "auto" else []
        if self.mixed_precision == "no":
            omitted.append("mixed_precision")
        if not self.gradient_checkpointing:
            omitted.append("gradient_checkpointing")
        if self.report_to == "none":
            omitted.append("report_to")
        if self.max_image_tokens is None:
            omitted.append("max_image_tokens")
        return omitted

    def resolve_paths(self, base: Path) -> SFTSettings:
        return self.model_copy(update={"model": self.model.resolved(base),
                                       "output_dir": resolve_path(self.output_dir, base)})


class TrainConfig(SFTSettings):
    """Comparative supervised fine-tuning: each training case is shown with k healthy references
    (k=0: the single-image baseline) and the gold class name is the assistant's answer.

    * ``k``: an int, or a list from which each example draws its k uniformly (one model for several k).
    * ``n_train``: train on a subset of that many cases, chosen by a seeded hash of case ids, so
      single and paired runs with the same ``n_train`` and ``seed`` see the same cases, and subsets
      of growing size are nested. ``balance_labels`` interleaves the classes in that order, so an
      ``n_train`` subset is as class-balanced as the data allow; it changes which cases are chosen,
      never how often each is drawn or weighted (without ``n_train`` it has no effect on training).
      Balancing the loss or the draws of an imbalanced training set is ``class_balance``.
    * Validation (see :class:`SFTSettings`) on up to ``max_val_cases`` cases of ``val_split``
      (``None``: no validation) with ``val_k`` references (default: the largest k).
    * ``augment``: optional acquisition augmentation of training examples (validation is never
      augmented), e.g. ``{kind: acquisition, shared: true}``: see
      :class:`~seeinpairs.siteshift.augment.AcquisitionAugment`. Off by default; when off it is
      left out of the dumped config, so runs and checkpoints made before it existed still match.
    """

    #: with ``data.dataset``, the fields left out (classes, healthy class, question) are the adapter's
    task: ConfigTask
    data: DataConfig
    bank: BankConfig = Field(default_factory=BankConfig)

    selector: str = "random"
    k: ReferenceCount = 1
    selector_params: dict[str, Any] = Field(default_factory=dict)
    vary_references: bool = True
    train_split: str = "train"
    val_split: str | None = "val"
    n_train: int | None = Field(None, ge=1)
    balance_labels: bool = False

    max_val_cases: int | None = Field(200, ge=1)
    val_k: int | None = Field(None, ge=0)
    augment: AcquisitionAugment | None = None

    _partial_task = model_validator(mode="before")(partial_task_input)

    @model_validator(mode="after")
    def _task_complete_or_from_adapter(self) -> TrainConfig:
        check_partial_task(self.task, self.data)
        return self

    def _omitted_fields(self) -> list[str]:
        # the resume check and the study compare dumps with older runs
        return super()._omitted_fields() + (["augment"] if self.augment is None else [])

    @field_validator("val_k")
    @classmethod
    def _val_k_allowed(cls, value: int | None, info: ValidationInfo) -> int | None:
        k = info.data.get("k")
        ks = k if isinstance(k, list) else [k] if k is not None else []
        if value and ks and max(ks) == 0:
            raise ValueError("val_k > 0 needs training with references (k > 0)")
        return value

    # ----- derived ------------------------------------------------------------------------------
    @property
    def ks(self) -> list[int]:
        return list(self.k) if isinstance(self.k, list) else [self.k]

    @property
    def validation_k(self) -> int:
        return self.val_k if self.val_k is not None else max(self.ks)

    @property
    def paired(self) -> bool:
        return max(self.ks) > 0

    # ----- loading ------------------------------------------------------------------------------
    def resolve_paths(self, base: Path) -> TrainConfig:
        return self.model_copy(update={"data": self.data.resolved(base), "bank": self.bank.resolved(base),
                                       "model": self.model.resolved(base),
                                       "output_dir": resolve_path(self.output_dir, base)})
