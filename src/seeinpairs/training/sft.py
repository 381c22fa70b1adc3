"""Comparative supervised fine-tuning: a plain PyTorch loop over (query + references, gold answer).

The loss is the mean negative log-likelihood of the gold option's tokens after
the assistant turn starts, computed by the same encoding and log-probability
code that :class:`~seeinpairs.backends.hf.HFBackend` scores options with, so a
lower training loss is a higher score for the gold option at evaluation.

Layout of ``output_dir``::

    base_model/         the tiny model trained from (tiny models only)
    best/               the best checkpoint so far by validation loss (model + processor, or adapter)
    last/               resume state: weights, optimizer, scheduler, RNG, step, history
    adapter/            LoRA only: the final adapter (loadable by HFBackend too)
    final/              the final model (LoRA merged in) + processor: create_backend({"name": output_dir/final})
    history.json        one record per evaluation: step, train loss, val loss, val metrics
    train_summary.json  what was trained on, how long, and the best step

Two entry points share one loop (:func:`_fit`), which consumes an
:class:`~.examples.ExampleSource`: :func:`train` (cases of a manifest, with
healthy references) and :func:`train_on_examples` (any (request, gold answer)
pairs, e.g. multi-image QA items).

Determinism: model init and dropout follow ``torch.manual_seed(seed)``, the
order of each epoch is a permutation from ``numpy.random.default_rng([seed,
epoch])`` and each example's references from (seed, epoch, case id). ``last/``
holds everything else, so an interrupted run resumed with ``resume=True``
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import AutoModelForImageTextToText

from ..atomic import atomic_dir, atomic_write_text, folder_lock
from ..backends import require_local_weights
from ..backends.base import option_probabilities
from ..backends.encoding import answer_log_probs, answer_token_ids, chat_prompt
from ..backends.in_memory import loaded_backend
from ..backends.modeling import DTYPES, resolve_device
from ..backends.modeling import base_model as unwrapped_base_model
from ..backends.processors import load_processor
from ..backends.tiny import TinySpec, build_tiny_vlm, built_tiny_vlm
from ..cases import Case, CaseTable, select_eval_cases
from ..datasets.preparation import prepare_data
from ..errors import BankError, ConfigError
from ..evaluation.metrics import compute_metrics
from ..imaging import load_image
from ..references.bank import ReferenceBank
from ..runtime import environment_record
from .balance import (answer_loss, balanced_order, class_weights, example_weights, flat_loss, prior_entropy,
                      resolve_class_balance)
from .config import SFTSettings, TrainConfig
from .data import ExampleBuilder, select_train_cases
from .examples import (CaseExamples, ExampleLike, ExampleSource, ExampleValidator, RequestExamples, as_labelled,
                       example_texts, examples_digest)

STATE_FILE = "trainer_state.pt"


@dataclass
class TrainResult:
    """What :func:`train` produced. ``checkpoint`` loads with ``create_backend({"name": checkpoint})``."""

    checkpoint: Path
    output_dir: Path
    history: list[dict[str, Any]]
    #: the ids of the training cases (:func:`train`) or examples (:func:`train_on_examples`)
    train_case_ids: list[str]
    seconds: float
    steps: int
    best_step: int | None
    stopped_early: bool
    mode: str
    adapter: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    #: the final model in memory (LoRA merged in), eval mode; ``None`` when the run was stopped early by ``stop_after``
    model: Any = field(default=None, repr=False)
    processor: Any = field(default=None, repr=False)


# ----- model ----------------------------------------------------------------------------------------
def _tiny_marker(config: SFTSettings, texts_digest: str | None = None) -> dict[str, Any]:
    marker = {"family": config.model.tiny, "seed": config.model.tiny_seed, **asdict(TinySpec(**config.tiny_spec))}
    if texts_digest is not None:
        marker["texts"] = texts_digest
    return marker


def _task_texts(config: SFTSettings) -> list[str]:
    task = getattr(config, "task", None)
    return [] if task is None else [*task.classes, task.question, *task.descriptions.values()]


def base_model_path(config: SFTSettings, texts: Sequence[str] | None = None) -> str:
    """The checkpoint training starts from; a tiny model is built (once) into ``output_dir/base_model``.

    A tiny model's tokenizer is trained on ``texts`` (default: the task's classes, question and
    descriptions), so the words of the prompts and answers are single tokens where possible.
    """
    model = config.model
    require_local_weights(model, "training")
    if model.tiny is None:
        if config.tiny_spec:
            raise ConfigError("field 'tiny_spec': only applies to a tiny model (model.tiny)")
        return str(model.name)
    folder = (Path(config.output_dir) / "base_model").resolve()  # absolute: adapters record it
    digest = None if texts is None else hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    texts = _task_texts(config) if texts is None else list(texts)
    wanted = _tiny_marker(config, digest)
    if not built_tiny_vlm(folder, wanted):  # the marker also records which texts the tokenizer learned
        build_tiny_vlm(model.tiny, folder, texts=texts, seed=model.tiny_seed, spec=TinySpec(**config.tiny_spec),
                       marker=wanted)
    return str(folder)


def _is_tiny(path: str) -> bool:
    folder = Path(path)
    if (folder / "seeinpairs_tiny.json").is_file():
        return True
    sft = folder / "seeinpairs_sft.json"
    return sft.is_file() and bool(json.loads(sft.read_text()).get("tiny"))


def uses_lora(config: SFTSettings, base: str) -> bool:
    enabled = config.lora.enabled
    return (not _is_tiny(base)) if enabled == "auto" else bool(enabled)


def _load_kwargs(config: SFTSettings) -> dict[str, Any]:
    return {k: v for k, v in config.model.options.items() if k in ("revision", "trust_remote_code", "cache_dir")}


def _load_model(path: str, config: SFTSettings, device: torch.device, quantize: int | None = None):
    """The model at ``model.dtype`` on ``device``; ``quantize``: its linear layers in 4 or 8 bits
    (bitsandbytes, placed by ``device_map``), prepared for training an adapter on top (peft's
    ``prepare_model_for_kbit_training``: norms in float32, inputs that carry gradients)."""
    if config.model.dtype not in DTYPES:
        raise ConfigError(f"field 'model.dtype': unknown dtype '{config.model.dtype}' (use {', '.join(DTYPES)})")
    dtype = DTYPES[config.model.dtype]
    if quantize is None:
        return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, **_load_kwargs(config)).to(device)
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16 if config.mixed_precision == "fp16" else dtype
    bnb = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute) if quantize == 4 else BitsAndBytesConfig(load_in_8bit=True))
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, quantization_config=bnb,
                                                        device_map={"": device}, **_load_kwargs(config))
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # enabled by the loop if asked


def set_activation_checkpointing(model, enabled: bool) -> None:
    """Turn transformers' activation (gradient) checkpointing on, non-reentrant, or off; the
    ``activation_checkpointing_*`` names where the installed transformers has them (the older
    ``gradient_checkpointing_*`` ones are deprecated there)."""
    if enabled:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def limit_image_tokens(processor, tokens: int) -> None:
    """Bound every image of ``processor`` to at most ``tokens`` visual tokens (field
    ``max_image_tokens``): a Qwen2-VL-style processor's ``max_pixels`` (its ``size.longest_edge``) is
    ``tokens`` merged patches, so larger images are scaled down and smaller ones kept."""
    image_processor = getattr(processor, "image_processor", None)
    patch, merge = getattr(image_processor, "patch_size", None), getattr(image_processor, "merge_size", None)
    size = getattr(image_processor, "size", None)
    if not patch or not merge or size is None or getattr(size, "longest_edge", None) is None:
        name = type(image_processor).__name__
        raise ConfigError(f"field 'max_image_tokens': supported for Qwen2-VL-style processors (max_pixels), not {name}")
    max_pixels = tokens * (patch * merge) ** 2
    shortest = min(size.shortest_edge or max_pixels, max_pixels)
    image_processor.size = type(size)(shortest_edge=shortest, longest_edge=max_pixels)


def _check_quantize(config: SFTSettings, device: torch.device) -> None:
    """A one-line error before anything is loaded where ``lora.quantize`` cannot run."""
    if config.lora.quantize is None:
        return
    if config.lora.enabled is False:
        raise ConfigError("field 'lora.quantize': a quantised base trains an adapter only; set lora.enabled: true")
    if device.type != "cuda":
        raise ConfigError(f"field 'lora.quantize': {config.lora.quantize}-bit bitsandbytes needs a CUDA device, "
                          f"not {device.type}; leave lora.quantize unset")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("field 'lora.quantize': needs the bitsandbytes package (pip install bitsandbytes)")


def _check_report_to(config: SFTSettings) -> None:
    """A one-line error naming the missing package of ``report_to``, before training starts."""
    if config.report_to == "tensorboard":
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("field 'report_to': tensorboard needs the tensorboard package "
                              "(pip install tensorboard)") from None
    elif config.report_to == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("field 'report_to': wandb needs the wandb package (pip install wandb)")


def _wrap_lora(model, config: SFTSettings, base: str, adapter: Path | None = None):
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    lora = config.lora
    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=lora.targets(model))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft probes deprecated transformers attributes
            return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ConfigError(f"field 'lora.target_modules': {str(exc).splitlines()[0]}") from None


def _optimizer(model, config: SFTSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)  # no decay on biases and norms
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)


# ----- checkpoints ----------------------------------------------------------------------------------
def _save_weights(model, processor, folder: Path, lora: bool, extra: dict[str, Any] | None = None) -> None:
    """Full training: model + processor; LoRA: the adapter only; ``extra``: JSON files to add.

    Saved into a temporary folder that replaces ``folder`` when complete (a crash
    leaves the old checkpoint or the new one, never half of one).
    """
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        if not lora:
            processor.save_pretrained(tmp)
        for name, data in (extra or {}).items():
            _write_json(tmp / name, data)


def _tracker_config(config: SFTSettings) -> dict[str, Any]:
    """The config as flat scalars (what tensorboard's hparams and wandb's config accept)."""
    def flat(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value if isinstance(value, (int, float, str, bool)) else str(value)}

    return flat(config.model_dump(mode="json"))


def _comparable(config: SFTSettings) -> dict[str, Any]:
    dumped = config.model_dump(mode="json")
    dumped.pop("output_dir", None)
    return dumped


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----- validation -----------------------------------------------------------------------------------
class Validator:
    """Validation loss (gold-answer token NLL) and metrics via ``HFBackend.score_options``."""

    def __init__(self, cases: list[Case], builder: ExampleBuilder, k: int, config: TrainConfig, processor) -> None:
        self.cases = cases
        self.requests = [builder.eval_request(c, k) for c in cases]
        self.gold_tokens = [len(answer_token_ids(processor.tokenizer, chat_prompt(processor, r), str(c.label)))
                            for c, r in zip(cases, self.requests)]
        self.task = config.task
        self.batch_size = config.model.batch_size
        self.processor = processor

    def __call__(self, model) -> dict[str, float]:
        backend = loaded_backend(model, self.processor, name="training", batch_size=self.batch_size)
        try:
            scores = backend.score_options(self.requests)
        finally:
            model.train()
        records, nll = [], 0.0
        for case, request, option_scores in zip(self.cases, self.requests, scores):
            nll -= option_scores[request.options.index(str(case.label))]
            records.append({"case_id": case.case_id, "gold": case.label, "options": request.options,
                            "probabilities": option_probabilities(option_scores).tolist()})
        metrics = compute_metrics(records, self.task.classes, self.task.healthy_class)
        return {"val_loss": nll / max(1, sum(self.gold_tokens)), **{f"val_{k}": v for k, v in metrics.items()}}


# ----- the loop ---------------------------------------------------------------------------------------
def _train_cases(config: TrainConfig, table: CaseTable) -> list[Case]:
    cases = [c for c in table if c.split == config.train_split and c.label is not None]
    if not cases:
        found = ", ".join(table.splits) or "none"
        raise ConfigError(f"field 'train_split': no labelled cases in split '{config.train_split}' (splits found: {found})")
    try:
        return select_train_cases(cases, config.n_train, config.seed, config.balance_labels, config.task.classes)
    except ConfigError as exc:
        raise ConfigError(f"field 'n_train': {exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default, allow_nan=True))


def _check_resume(config: SFTSettings, comparable: dict[str, Any], last_dir: Path) -> dict[str, Any] | None:
    """The saved state to resume from (None for a fresh run); a changed config is an error."""
    state_file = last_dir / STATE_FILE
    if not state_file.is_file():
        return None
    saved = torch.load(state_file, weights_only=True)
    if saved["config"] != comparable:
        changed = sorted(k for k in set(saved["config"]) | set(comparable) if saved["config"].get(k) != comparable.get(k))
        raise ConfigError(f"cannot resume from {last_dir}: the config changed in field(s) {', '.join(changed)}")
    return saved


def train(config: TrainConfig, progress: bool = True, resume: bool = False, stop_after: int | None = None,
          console: Console | None = None, table: CaseTable | None = None) -> TrainResult:
    """Fine-tune ``config.model`` on comparative (or k=0 single-image) examples.

    ``resume=True`` continues from ``output_dir/last`` when it exists (the config must be the
    same apart from ``output_dir``). ``stop_after`` ends this call after that many optimizer
    steps in total, saving ``last/`` as an interruption would; a later ``resume=True`` call
    continues with the same schedule. ``table``: the cases ``config.data`` describes, when the
    caller has read them already (a study reads its manifest once for every stage).
    """
    comparable = _comparable(config)
    saved = _check_resume(config, comparable, Path(config.output_dir) / "last") if resume else None

    # data
    config = prepare_data(config)  # the data written if needed; an adapter's task completes config.task
    task = config.task
    table = table if table is not None else config.data.load_table(classes=task.classes)
    train_cases = _train_cases(config, table)
    val_cases: list[Case] = []
    if config.val_split:
        try:
            val_cases = select_eval_cases(table, config.val_split, config.max_val_cases)
        except ConfigError as exc:
            raise ConfigError(f"field 'val_split': {exc} (use val_split: null to train without validation)") from None
    val_cases = [c for c in val_cases if c.label is not None]
    needs_bank = config.paired or (val_cases and config.validation_k > 0)
    bank = None
    if needs_bank:
        bank = ReferenceBank.from_table(table, task, split=config.bank.split, cache_dir=config.bank.cache_dir)
        largest = max(config.ks + [config.validation_k])
        if largest > len(bank):
            raise BankError(f"k={largest} is larger than the reference bank ({len(bank)} healthy cases "
                            f"in split '{config.bank.split}')")

    def make_data(processor) -> tuple[ExampleSource, Callable | None]:
        loader = lru_cache(maxsize=2048)(load_image)
        builder = ExampleBuilder(task, processor, bank, config.selector, config.ks, config.selector_params,
                                 config.seed, image_loader=loader, augment=config.augment,
                                 end_of_turn=config.end_of_turn)
        validator = Validator(val_cases, builder, config.validation_k, config, processor) if val_cases else None
        return CaseExamples(train_cases, builder, task.classes), validator

    extra = {"n_val": len(val_cases), "val_k": config.validation_k if val_cases else None}
    return _fit(config, comparable, saved, make_data, None, extra, progress, stop_after, console)


def train_on_examples(settings: SFTSettings, train_examples: Sequence[ExampleLike],
                      val_examples: Sequence[ExampleLike] = (), progress: bool = True, resume: bool = False,
                      stop_after: int | None = None, console: Console | None = None) -> TrainResult:
    """Fine-tune on examples given directly as (request, gold answer) pairs.

    Each example is a :class:`~.examples.LabelledRequest`, a ``(Request, answer)`` or a
    ``(Request, answer, example_id)`` tuple; the request may hold any number of images placed
    anywhere in its messages (e.g. multi-image QA). The loss is the gold answer's token NLL,
    as in :func:`train`, and everything else is the same too: full training for tiny models and
    LoRA for pretrained ones (``settings.lora``), ``best/`` by validation loss, ``last/`` for
    ``resume``, ``final/`` loadable by ``create_backend``.

    Validation (every ``settings.eval_every`` steps) on ``val_examples``: the mean answer NLL per
    gold token (``val_loss``, which picks the best checkpoint) and, over the examples whose answer is
    one of their ``options``, option-scored accuracy (``val_accuracy``). A tiny model's tokenizer is
    trained on the examples' texts. Resuming requires the same settings and the same examples.
    """
    if len(train_examples) == 0:
        raise ConfigError("train_on_examples: no training examples")
    comparable = {**_comparable(settings), "train_examples": examples_digest(train_examples),
                  "val_examples": examples_digest(val_examples)}
    saved = _check_resume(settings, comparable, Path(settings.output_dir) / "last") if resume else None
    labelled = [as_labelled(train_examples[i], i) for i in range(len(train_examples))]
    texts = example_texts(labelled) + example_texts(as_labelled(val_examples[i], i) for i in range(len(val_examples)))

    def make_data(processor) -> tuple[ExampleSource, Callable | None]:
        validator = (ExampleValidator(val_examples, processor, settings.model.batch_size)
                     if len(val_examples) else None)
        return RequestExamples(train_examples, processor, settings.end_of_turn), validator

    return _fit(settings, comparable, saved, make_data, texts, {"n_val": len(val_examples)}, progress,
                stop_after, console)


def _progress_info(record: dict[str, Any], validated: bool) -> str:
    text = f"loss {record['train_loss']:.4f}"
    if validated:
        text += f" | val loss {record['val_loss']:.4f}"
        for key in ("val_auroc", "val_accuracy"):
            if isinstance(record.get(key), float) and math.isfinite(record[key]):
                text += f" {key.removeprefix('val_')} {record[key]:.3f}"
                break
    return text


def _class_balance(config: SFTSettings, labels: list[str], saved: dict[str, Any] | None,
                   auto_balance: bool = True) -> dict[str, Any]:
    """What ``config.class_balance`` applies to these training labels: the mode (``applied``), the
    per-class weights (``loss``) and each example's weight. ``auto`` applies nothing where the source
    says its answers are not classes (``auto_balance``). A resumed run must apply what it started
    with (a run saved before class balancing existed applied none)."""
    mode = "none" if config.class_balance == "auto" and not auto_balance else config.class_balance
    applied = resolve_class_balance(mode, labels)
    if saved is not None:
        before = saved["state"].get("class_balance", "none")
        if before != applied:
            raise ConfigError(f"cannot resume: the run started with class_balance '{before}' and would now apply "
                              f"'{applied}' (field 'class_balance'); train afresh or set class_balance: {before}")
    counts = {label: labels.count(label) for label in sorted(set(labels))}
    return {"mode": config.class_balance, "applied": applied, "label_counts": counts,
            "class_weights": class_weights(labels) if applied == "loss" else None,
            "labels": labels, "weights": example_weights(labels) if applied == "loss" else None}


def _fit(config: SFTSettings, comparable: dict[str, Any], saved: dict[str, Any] | None,
         make_data: Callable[[Any], tuple[ExampleSource, Callable | None]], tiny_texts: list[str] | None,
         summary_extra: dict[str, Any], progress: bool, stop_after: int | None,
         console: Console | None) -> TrainResult:
    """The training loop shared by :func:`train` and :func:`train_on_examples`.

    The output folder is locked for the run: a second training there would clear
    and overwrite the checkpoints of the first. Under ``accelerate launch``/``torchrun`` only the
    main process locks it and writes there; the others train on their shards alongside it.
    """
    accelerator = _accelerator(config)
    if not accelerator.is_main_process:
        return _fit_locked(config, comparable, saved, make_data, tiny_texts, summary_extra, progress, stop_after,
                           console, accelerator)
    with folder_lock(config.output_dir):
        return _fit_locked(config, comparable, saved, make_data, tiny_texts, summary_extra, progress, stop_after,
                           console, accelerator)


def _accelerator(config: SFTSettings):
    """The run's :class:`accelerate.Accelerator`: one process (a plain run) or those started by
    ``accelerate launch``/``torchrun`` (DDP; FSDP or DeepSpeed from accelerate's config), with the
    config's ``mixed_precision``.

    The accelerator state is reset first: accelerate keeps it per Python process and refuses a
    second run with another ``mixed_precision`` otherwise (the process group itself is kept).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    device = resolve_device(config.model.device)
    if config.mixed_precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"field 'mixed_precision': fp16 needs a CUDA device (loss scaling), not {device.type}; "
                          f"use bf16 or no")
    _check_quantize(config, device)
    _check_report_to(config)
    if config.report_to == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine unless asked
    AcceleratorState._reset_state()
    # examples without images leave the vision tower unused in a step: DDP must not wait for its gradients
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(mixed_precision=config.mixed_precision, cpu=device.type == "cpu", kwargs_handlers=[ddp],
                       log_with=None if config.report_to == "none" else config.report_to,
                       project_dir=Path(config.output_dir) / "logs")


# ----- the run's state ----------------------------------------------------------------------------------
@dataclass
class TrainState:
    """What the loop carries from one optimizer step to the next, saved in ``last/`` for ``resume``.

    Saved as a plain dict (:meth:`saved`, the same keys as before it was a dataclass) so that
    ``torch.load(weights_only=True)`` reads it and older runs still resume.
    """

    step: int = 0
    epoch: int = 0
    #: micro steps taken in the current epoch
    micro: int = 0
    best_val: float = math.inf
    best_step: int | None = None
    #: evaluations in a row without a new best validation loss (for ``patience``)
    bad_evals: int = 0
    #: the training loss summed since the last evaluation, over ``window_steps`` steps
    window_loss: float = 0.0
    window_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    #: training time of earlier calls of a resumed run
    seconds: float = 0.0
    step_losses: list[float] = field(default_factory=list)
    answer_tokens: int = 0
    answer_examples: int = 0
    #: how often each label was drawn into a batch
    drawn: dict[str, int] = field(default_factory=dict)
    class_balance: str = "none"

    @classmethod
    def restored(cls, saved: dict[str, Any], class_balance: str) -> TrainState:
        """The state of a saved run; keys a run saved by an older version lacks keep their start values."""
        known = {f.name for f in fields(cls)}
        return cls(**{"class_balance": class_balance, **{k: v for k, v in saved.items() if k in known}})

    def saved(self, elapsed: float) -> dict[str, Any]:
        """The state to save, with ``elapsed`` seconds of this call added to the training time."""
        return {**asdict(self), "seconds": self.seconds + elapsed}


def _flat_loss(state: TrainState, balance: dict[str, Any]) -> dict[str, Any]:
    """:func:`~.balance.flat_loss` of this run: the prior is the class shares trained towards (the
    training shares, or uniform when balanced), per answer token as the loss is."""
    counts = balance["label_counts"]
    shares = list(counts.values()) if balance["applied"] == "none" else [1.0] * len(counts)
    tokens_per_example = state.answer_tokens / max(1, state.answer_examples)
    prior = prior_entropy(shares) / tokens_per_example if tokens_per_example else 0.0
    return flat_loss(state.step_losses, prior)


@dataclass(frozen=True)
class _Schedule:
    """How the examples are cut into steps: ``batch_size`` examples per process and micro step."""

    n: int
    batch_size: int
    grad_accum: int
    world: int
    rank: int
    micro_per_epoch: int
    steps_per_epoch: int
    total: int

    @classmethod
    def of(cls, config: SFTSettings, n: int, world: int, rank: int) -> _Schedule:
        micro_per_epoch = math.ceil(n / (config.batch_size * world))
        steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum)
        total = config.max_steps if config.max_steps is not None else config.epochs * steps_per_epoch
        return cls(n, config.batch_size, config.grad_accum, world, rank, micro_per_epoch, steps_per_epoch, total)


@dataclass
class _Run:
    """One training run: its model, optimizer and data, and the :class:`TrainState` the loop advances."""

    config: SFTSettings
    comparable: dict[str, Any]
    accelerator: Any
    model: Any
    processor: Any
    base: str
    lora: bool
    device: torch.device
    source: ExampleSource
    validator: Callable | None
    balance: dict[str, Any]
    schedule: _Schedule
    optimizer: Any
    scheduler: Any
    state: TrainState
    started: float
    n_trainable: int
    n_total: int
    #: the example order of the current epoch (one epoch kept)
    orders: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def plain_model(self):
        """The model without the DDP wrapper (autocast kept), to validate and save."""
        return self.accelerator.unwrap_model(self.model)


# ----- the run's parts ------------------------------------------------------------------------------------
def _clear_outputs(out: Path) -> None:
    """A fresh run: clear the outputs of an earlier one (only once the inputs are known valid)."""
    for name in ("last", "best", "final", "adapter", "history.json", "train_summary.json"):
        target = out / name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def _prepare_model(config: SFTSettings, accelerator, tiny_texts: list[str] | None, resuming: bool):
    """(model in train mode, processor, base model path, LoRA or not, device) for this process."""
    world = accelerator.num_processes
    # several processes: each on its own device, e.g. cuda:<local rank>, or the CPU
    device = accelerator.device if world > 1 else resolve_device(config.model.device)
    with accelerator.main_process_first():  # a tiny base model is built once, by the main process
        base = base_model_path(config, tiny_texts)
    lora = uses_lora(config, base)
    if config.lora.quantize is not None and not lora:
        raise ConfigError("field 'lora.quantize': a quantised base trains an adapter only; set lora.enabled: true")
    processor = load_processor(base, **_load_kwargs(config))
    if config.max_image_tokens is not None:
        limit_image_tokens(processor, config.max_image_tokens)
    torch.manual_seed(config.seed)
    last_dir = Path(config.output_dir) / "last"
    if lora:
        model = _wrap_lora(_load_model(base, config, device, config.lora.quantize), config, base,
                           last_dir if resuming else None)
    else:
        model = _load_model(str(last_dir) if resuming else base, config, device)
    if config.gradient_checkpointing:
        # non-reentrant: gradients reach LoRA weights without inputs that require grad, and dropout's
        # random state is restored for the recomputation, so the loss is that of a run without it
        set_activation_checkpointing(unwrapped_base_model(model), True)
    model.train()
    return model, processor, base, lora, device


def _start_run(config: SFTSettings, comparable: dict[str, Any], saved: dict[str, Any] | None,
               make_data: Callable[[Any], tuple[ExampleSource, Callable | None]], tiny_texts: list[str] | None,
               accelerator, started: float) -> _Run:
    """Model, data, schedule, optimizer and state, restored from ``saved`` when resuming."""
    model, processor, base, lora, device = _prepare_model(config, accelerator, tiny_texts, saved is not None)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    source, validator = make_data(processor)
    balance = _class_balance(config, source.labels, saved, source.auto_balance)
    schedule = _Schedule.of(config, len(source), accelerator.num_processes, accelerator.process_index)
    optimizer = _optimizer(model, config)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * schedule.total),
                                                             schedule.total)
    state = TrainState(class_balance=balance["applied"])
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainState.restored(saved["state"], balance["applied"])
        _set_rng_state(saved["rng"])
    # the scheduler stays on the plain optimizer (stepped once per optimizer step, whatever the process count);
    # devices are placed above
    model, optimizer = accelerator.prepare(model, optimizer, device_placement=[False, False])
    if config.report_to != "none":
        accelerator.init_trackers(config.name, config=_tracker_config(config))
    return _Run(config, comparable, accelerator, model, processor, base, lora, device, source, validator, balance,
                schedule, optimizer, scheduler, state, started, n_trainable, n_total)


def _save_last(run: _Run) -> None:
    """Everything a resumed run needs, in ``last/`` (main process only)."""
    if not run.main:
        return
    with atomic_dir(run.out / "last") as tmp:
        run.plain_model().save_pretrained(tmp)
        torch.save({"config": run.comparable, "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(), "rng": _rng_state(),
                    "state": run.state.saved(time.perf_counter() - run.started)}, tmp / STATE_FILE)
        _write_json(tmp / "history.json", run.state.history)


def _next_indices(run: _Run) -> list[int]:
    """This process's examples for the next micro step, moving on to the next epoch when one is used up."""
    state, schedule = run.state, run.schedule
    if state.micro >= schedule.micro_per_epoch:
        state.epoch += 1
        state.micro = 0
    epoch = state.epoch
    if epoch not in run.orders:
        run.orders.clear()
        rng = np.random.default_rng([run.config.seed, epoch])
        run.orders[epoch] = (balanced_order(run.balance["labels"], rng) if run.balance["applied"] == "sampler"
                             else rng.permutation(schedule.n))
    size, world = schedule.batch_size, schedule.world
    start = state.micro * size * world + schedule.rank * size
    if world == 1:
        chosen = run.orders[epoch][start:start + size]
    else:  # every process needs a batch: the last one of an epoch is filled from the epoch's start
        chosen = run.orders[epoch][np.arange(start, start + size) % schedule.n]
    state.micro += 1
    return [int(i) for i in chosen]


def _micro_step(run: _Run, last: bool) -> float:
    """Forward and backward on one micro batch; its loss (averaged over processes)."""
    state, accelerator = run.state, run.accelerator
    indices = _next_indices(run)
    batch = run.source.batch(indices, state.epoch).to(run.device)
    weights = None if run.balance["weights"] is None else torch.as_tensor(run.balance["weights"][indices])
    # gradients are synchronised across processes on the last micro step only
    with nullcontext() if last else accelerator.no_sync(run.model):
        loss = answer_loss(answer_log_probs(run.model, batch), weights)
        accelerator.backward(loss / run.schedule.grad_accum)
    state.answer_tokens += sum(len(ids) for ids in batch.answer_ids)
    state.answer_examples += len(indices)
    for i in indices:
        label = run.balance["labels"][i]
        state.drawn[label] = state.drawn.get(label, 0) + 1
    return float(loss.detach() if run.schedule.world == 1 else accelerator.reduce(loss.detach(), "mean"))


def _optimizer_step(run: _Run) -> float:
    """One optimizer step over ``grad_accum`` micro batches; its mean training loss."""
    config, grad_accum = run.config, run.schedule.grad_accum
    run.optimizer.zero_grad(set_to_none=True)
    step_loss = 0.0
    for micro in range(grad_accum):
        step_loss += _micro_step(run, last=micro == grad_accum - 1) / grad_accum
    if config.max_grad_norm is not None:  # after unscaling fp16 gradients
        run.accelerator.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    state = run.state
    state.step += 1
    state.window_loss += step_loss
    state.step_losses.append(step_loss)
    state.window_steps += 1
    return step_loss


def _validate(run: _Run, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the validation figures; keeps the best checkpoint and decides on stopping early."""
    from accelerate.utils import broadcast_object_list

    state = run.state
    record = {**record, **run.validator(run.plain_model())}
    if run.schedule.world > 1:  # every process decides on the main process's figures (best step, stopping)
        record = broadcast_object_list([record])[0]
    if record["val_loss"] < state.best_val:
        state.best_val, state.best_step, state.bad_evals = record["val_loss"], state.step, 0
        if run.main:
            _save_weights(run.plain_model(), run.processor, run.out / "best", run.lora)
    else:
        state.bad_evals += 1
        patience = run.config.patience
        if patience is not None and state.bad_evals >= patience and state.step < run.schedule.total:
            state.stopped_early = True
    return record


def _evaluate(run: _Run) -> dict[str, Any]:
    """The history record of this step: the training loss since the last one, and validation when there is one."""
    state = run.state
    record: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "lr": run.scheduler.get_last_lr()[0],
                              "train_loss": state.window_loss / max(1, state.window_steps)}
    state.window_loss, state.window_steps = 0.0, 0
    if run.validator is not None:
        record = _validate(run, record)
    state.history.append(record)
    if run.config.report_to != "none":
        run.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=state.step)
    if run.main:
        _write_json(run.out / "history.json", state.history)
    return record


def _train_loop(run: _Run, progress: bool, stop_after: int | None, console: Console) -> bool:
    """Optimizer steps until the schedule ends or patience runs out; whether ``stop_after`` interrupted it."""
    state, total = run.state, run.schedule.total
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}", markup=False),
                  console=console, disable=not (progress and run.main)) as bar:
        job = bar.add_task(f"training {run.config.name} ({'lora' if run.lora else 'full'})", total=total,
                           completed=state.step, info="")
        while state.step < total and not state.stopped_early:
            if stop_after is not None and state.step >= stop_after:
                _save_last(run)
                return True
            step_loss = _optimizer_step(run)
            bar.update(job, advance=1, info=f"loss {step_loss:.4f}")
            if state.step % run.config.eval_every == 0 or state.step == total:
                record = _evaluate(run)
                bar.update(job, info=_progress_info(record, run.validator is not None))
                _save_last(run)
    return False


# ----- after the loop ---------------------------------------------------------------------------------------
def _final_model(run: _Run) -> tuple[Any, Path | None]:
    """(the final model, LoRA merged in, eval mode; the adapter folder): the best validation checkpoint, else the
    last weights. The trained model is taken off the run, so it is freed before a checkpoint is loaded."""
    config, lora, base, device = run.config, run.lora, run.base, run.device
    model, run.model = run.model, None
    best_dir, adapter_dir = run.out / "best", (run.out / "adapter" if lora else None)
    best_is_current = run.state.best_step is None or run.state.best_step == run.state.step
    run.optimizer.state.clear()  # free the optimizer moments before the final model is assembled
    if lora and config.lora.quantize is not None:  # merge into the base at model.dtype, not the rounded one
        from peft import PeftModel

        if best_is_current:
            _save_weights(model, run.processor, adapter_dir, lora=True)
        else:
            with atomic_dir(adapter_dir) as tmp:
                shutil.copytree(best_dir, tmp, dirs_exist_ok=True)
        del model
        model = PeftModel.from_pretrained(_load_model(base, config, device), str(adapter_dir)).merge_and_unload()
    elif best_is_current:
        if lora:
            _save_weights(model, run.processor, adapter_dir, lora=True)
            model = model.merge_and_unload()
    else:
        del model
        if lora:
            from peft import PeftModel

            with atomic_dir(adapter_dir) as tmp:
                shutil.copytree(best_dir, tmp, dirs_exist_ok=True)
            model = PeftModel.from_pretrained(_load_model(base, config, device), str(best_dir)).merge_and_unload()
        else:
            model = _load_model(str(best_dir), config, device)
    model.eval()
    return model, adapter_dir


def _train_summary(run: _Run, summary_extra: dict[str, Any], seconds: float, adapter_dir: Path | None
                   ) -> dict[str, Any]:
    """``train_summary.json``: what was trained on, how, how long, and the best step."""
    config, state, balance, schedule = run.config, run.state, run.balance, run.schedule
    best_record = next((r for r in state.history if r["step"] == state.best_step), None)
    return {
        "name": config.name, "mode": "lora" if run.lora else "full", "base_model": run.base,
        "trainable_parameters": run.n_trainable, "total_parameters": run.n_total,
        **run.source.summary(), **summary_extra,
        "steps": state.step, "total_steps": schedule.total, "epochs_started": state.epoch + 1,
        "steps_per_epoch": schedule.steps_per_epoch, "best_step": state.best_step, "best": best_record,
        "stopped_early": state.stopped_early, "seconds": seconds,
        "engine": {"processes": schedule.world, "mixed_precision": config.mixed_precision,
                   "gradient_checkpointing": config.gradient_checkpointing},
        "class_balance": {**{k: v for k, v in balance.items() if k not in ("labels", "weights")},
                          "drawn_label_counts": dict(sorted(state.drawn.items()))},
        "training_flags": {"flat_loss": _flat_loss(state, balance)},
        "checkpoint": str(run.out / "final"), "adapter": str(adapter_dir) if adapter_dir else None,
        "config": config.model_dump(mode="json"),
        "environment": environment_record(),  # weights depend on the thread count and library versions
    }


def _fit_locked(config: SFTSettings, comparable: dict[str, Any], saved: dict[str, Any] | None,
                make_data: Callable[[Any], tuple[ExampleSource, Callable | None]], tiny_texts: list[str] | None,
                summary_extra: dict[str, Any], progress: bool, stop_after: int | None,
                console: Console | None, accelerator) -> TrainResult:
    """:func:`_fit` once the output folder is this run's: start or resume, loop, then the final model and summary."""
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    started = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if saved is None and accelerator.is_main_process:
        _clear_outputs(out)
    accelerator.wait_for_everyone()
    run = _start_run(config, comparable, saved, make_data, tiny_texts, accelerator, started)
    interrupted = _train_loop(run, progress, stop_after, console or Console(stderr=True))

    state, mode = run.state, "lora" if run.lora else "full"
    seconds = state.seconds + time.perf_counter() - started
    accelerator.wait_for_everyone()
    if config.report_to != "none":
        accelerator.end_training()
    run.model = accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)  # the plain model (no autocast wrapper)
    accelerator.free_memory()
    if interrupted or not run.main:  # the other processes leave the final model to the main process
        return TrainResult(out / "last" if interrupted else out / "final", out, state.history, run.source.ids,
                           seconds, state.step, state.best_step, False if interrupted else state.stopped_early, mode)

    model, adapter_dir = _final_model(run)
    provenance = {"base_model": run.base, "mode": mode, "tiny": _is_tiny(run.base),
                  "step": state.best_step if state.best_step is not None else state.step, "config_name": config.name}
    _save_weights(model, run.processor, out / "final", lora=False, extra={"seeinpairs_sft.json": provenance})
    summary = _train_summary(run, summary_extra, seconds, adapter_dir)
    _write_json(out / "train_summary.json", summary)
    return TrainResult(out / "final", out, state.history, run.source.ids, seconds, state.step, state.best_step,
                       state.stopped_early, mode, adapter_dir, summary, model, run.processor)
