"""The ``seeinpairs`` command line: eval, demo, build-tiny, validate, check-model, list.

Every user-facing error (bad manifest, config, image, impossible request) and
every usage error (unknown command or option, a missing argument, a count below
its minimum) is printed as one ``error:`` line and exits with status 2; a Ctrl-C
leaves the already stored predictions intact and says how to resume. Configs are
read and validated before torch is imported, so a bad one fails in about a second.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

try:  # recent typer bundles its own click, whose usage errors are not ``click``'s classes
    from typer._click.exceptions import (
        BadParameter,
        ClickException,
        NoSuchOption,
        UsageError,
    )
except ImportError:  # older typer runs on click itself
    from click.exceptions import BadParameter, ClickException, NoSuchOption, UsageError

from ..errors import SeeInPairsError
from ..stages import lines_wanted, stage_lines
from .console import make_console
from .explain import register as register_explain

app = typer.Typer(add_completion=True, no_args_is_help=False,
                  help="Reference-guided comparative diagnosis with vision-language models.")
console = make_console()
err_console = make_console(stderr=True)


LOG_LEVELS = ("debug", "info", "warning", "error")


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        console.print(f"seeinpairs {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, envvar="SEEINPAIRS_THREADS", show_envvar=True,
        help="CPU threads for torch (default: the cores this process may use, from its affinity and cgroup "
             "quota). Results record it: figures can differ between thread counts."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="More log lines: -v for info (e.g. which scoring path a backend takes), "
                                     "-vv for debug."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors in the log."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help=f"One of {', '.join(LOG_LEVELS)} "
                                                                      "(overrides -v/-q)."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Reference-guided comparative diagnosis with vision-language models."""
    from ..runtime import configure_threads

    if log_level is not None and log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"'{log_level}' is not one of {', '.join(LOG_LEVELS)}", param_hint="'--log-level'")
    level = log_level.lower() if log_level else ("error" if quiet else LOG_LEVELS[max(0, 2 - verbose)])
    logging.getLogger().setLevel(level.upper())
    configure_threads(threads)


def _fmt(value, digits: int = 3) -> str:
    try:
        if value != value:  # NaN
            return "NA"
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def print_summary(result) -> None:
    """Metrics per condition (with 95% bootstrap CIs) and paired-vs-single tests."""
    summary = result.summary
    table = Table(title="Metrics (95% bootstrap CI)")
    for column in ("model", "mode", "selector", "k", "seed", "n"):
        table.add_column(column)
    metrics = [c for c in summary.columns if f"{c}_lo" in summary.columns]
    for metric in metrics:
        table.add_column(metric, justify="right")
    for _, row in summary.iterrows():
        cells = [str(row[c]) for c in ("model", "mode", "selector", "k", "seed", "n")]
        cells += [f"{_fmt(row[m])} [{_fmt(row[m + '_lo'], 2)}, {_fmt(row[m + '_hi'], 2)}]" for m in metrics]
        table.add_row(*cells)
    console.print(table)
    if "degenerate" in summary.columns:
        for _, row in summary[summary["degenerate"].fillna("").astype(str) != ""].iterrows():
            console.print(f"FAILED TRAINING (not a finding): {row['model']} {row['selector']} k={row['k']} "
                          f"seed {row['seed']}: {row['degenerate']}", markup=False, highlight=False)
    tests = result.paired_tests
    if tests is not None and not tests.empty:
        paired = Table(title="Paired vs single on the same cases (McNemar; delta = paired - single)")
        for column in ("model", "selector", "k", "seed", "n", "single right/paired wrong",
                       "single wrong/paired right", "McNemar p", "delta accuracy", "delta AUROC"):
            paired.add_column(column)
        for _, row in tests.iterrows():
            paired.add_row(
                str(row["model"]), str(row["selector"]), str(row["k"]), str(row["seed"]), str(row["n"]),
                str(row["single_right_paired_wrong"]), str(row["single_wrong_paired_right"]),
                _fmt(row["mcnemar_p"]),
                f"{_fmt(row['delta_accuracy'])} [{_fmt(row['delta_accuracy_lo'], 2)}, {_fmt(row['delta_accuracy_hi'], 2)}]",
                f"{_fmt(row['delta_auroc'])} [{_fmt(row['delta_auroc_lo'], 2)}, {_fmt(row['delta_auroc_hi'], 2)}]",
            )
        console.print(paired)
    if result.output_dir is not None:
        console.print(f"tables and predictions in {result.output_dir}")


@app.command("eval")
def eval_command(
    config: Path = typer.Argument(..., help="Experiment YAML."),
    output: Optional[Path] = typer.Option(None, file_okay=False, help="Override the config's output_dir."),
    max_cases: Optional[int] = typer.Option(None, min=1, help="Evaluate at most this many cases per condition."),
    progress: bool = typer.Option(True, help="Show progress bars; without them (or when output is not a terminal) "
                                              "one line per finished stage."),
) -> None:
    """Run (or resume) an experiment and print single vs paired metrics.

    Under 'torchrun --nproc_per_node N' (or 'accelerate launch') the cases are
    sharded across the N processes; rank 0 writes the tables and prints.
    """
    from ..evaluation.config import ExperimentConfig

    cfg = ExperimentConfig.from_yaml(config)  # before the runner's torch import: config errors come fast
    from ..evaluation.runner import run_experiment

    updates = {}
    if output is not None:
        updates["output_dir"] = output
    if max_cases is not None:
        updates["eval"] = cfg.eval.model_copy(update={"max_cases": max_cases})
    cfg = cfg.model_copy(update=updates)
    with stage_lines(lines_wanted(progress)):
        result = run_experiment(cfg, progress=progress, distributed=True)
    if result is not None:  # None: a non-zero rank of a data-parallel launch
        print_summary(result)


def print_study(result) -> None:
    print_summary(result.evaluation)
    curves = result.learning_curves
    if curves is not None and not curves.empty:
        table = Table(title="Sample efficiency (test AUROC / accuracy by training cases)")
        for column in ("mode", "n_train", "seed", "auroc", "accuracy"):
            table.add_column(column)
        for _, row in curves.sort_values(["mode", "n_train"]).iterrows():
            table.add_row(str(row["mode"]), str(row["n_train"]), str(row["seed"]),
                          f"{_fmt(row['auroc'])} [{_fmt(row['auroc_lo'], 2)}, {_fmt(row['auroc_hi'], 2)}]",
                          f"{_fmt(row['accuracy'])} [{_fmt(row['accuracy_lo'], 2)}, {_fmt(row['accuracy_hi'], 2)}]")
        console.print(table)
    if result.anchor is not None:
        figures = ", ".join(f"{k} {v:.3f}" for k, v in result.anchor.metrics.items())
        console.print(f"published anchor ({result.anchor.source}): {figures}. {result.anchor.note}")
    console.print(f"report: {result.report} ({result.seconds:.0f} s)")


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo"), file_okay=False, help="Where data, models and results go."),
    family: str = typer.Option("qwen2_vl", help="Tiny model family (qwen2_vl, idefics3)."),
    patients: Optional[int] = typer.Option(None, min=1, help="Patients in the generated data set (default 300)."),
    progress: bool = typer.Option(True, help="Show progress bars; without them (or when output is not a terminal) "
                                              "one line per finished stage."),
) -> None:
    """The embedded study: generated benchmark, tiny VLMs trained single vs paired, report."""
    from ..studies.demo import run_demo

    with stage_lines(lines_wanted(progress)):
        result = run_demo(output, family=family, patients=patients, progress=progress)
    print_study(result)


@app.command()
def study(
    config: Path = typer.Argument(..., help="Study YAML (task, data, model, training, evaluation, sweep)."),
    progress: bool = typer.Option(True, help="Show progress bars; without them (or when output is not a terminal) "
                                              "one line per finished stage."),
) -> None:
    """Train single-image and comparative models, evaluate across selectors and k, write the report."""
    from ..studies.study import StudyConfig, run_study

    cfg = StudyConfig.from_yaml(config)
    with stage_lines(lines_wanted(progress)):
        result = run_study(cfg, progress=progress)
    print_study(result)


@app.command()
def suite(
    config: Path = typer.Argument(..., help="Suite YAML: several study configs and budget profiles."),
    profile: Optional[str] = typer.Option(None, help="Budget profile (e.g. quick, full; default: the config's)."),
    only: Optional[list[str]] = typer.Option(None, help="Run only these studies (repeatable)."),
    progress: bool = typer.Option(True, help="Show progress bars; without them (or when output is not a terminal) "
                                              "one line per finished stage."),
) -> None:
    """Several comparative studies over training seeds: leakage audit, image-only baseline, one report."""
    from ..studies.suite import StudySuiteConfig, run_suite, violations

    cfg = StudySuiteConfig.from_yaml(config)
    with stage_lines(lines_wanted(progress)):
        result = run_suite(cfg, profile=profile, progress=progress, only=only)
    for _, row in result.headline.iterrows():
        best = f"{row['best_selector']} k={row['best_k']}" if isinstance(row.get("best_selector"), str) else "none"
        console.print(f"{row['study']}: single AUROC {_fmt(row.get('single_auroc'))}, best paired ({best}) "
                      f"{_fmt(row.get('paired_auroc'))}; Δ AUROC per seed {row.get('delta_auroc_per_seed', '')}")
    console.print(f"leakage violations: {violations(result)}; report: {result.report} ({result.seconds:.0f} s)")


@app.command()
def train(
    config: Path = typer.Argument(..., help="Training YAML."),
    resume: bool = typer.Option(True, help="Continue from the last checkpoint when one exists."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Comparative supervised fine-tuning (k=0: single-image) with full training or LoRA."""
    from ..training.config import TrainConfig
    from ..training.sft import train as run_training

    result = run_training(TrainConfig.from_yaml(config), progress=progress, resume=resume)
    console.print(f"checkpoint: {result.checkpoint} ({result.steps} steps, {result.seconds:.0f} s)")
    balance = result.summary.get("class_balance") or {}
    if balance:
        counts = ", ".join(f"{label} {n}" for label, n in (balance.get("label_counts") or {}).items())
        console.print(f"class balance: {balance['applied']} (class_balance: {balance['mode']}; "
                      f"training cases: {counts})")
    flat = (result.summary.get("training_flags") or {}).get("flat_loss") or {}
    if flat.get("flagged"):
        console.print(f"warning: failed training: {flat['why']}; the model learned no more than the class shares "
                      "(try class_balance: sampler or a lower lr)", style="yellow")


@app.command("build-tiny")
def build_tiny(
    family: str = typer.Argument(..., help="A tiny model family (seeinpairs list names them)."),
    output: Path = typer.Argument(..., file_okay=False, help="Folder to write the model to."),
    text: list[str] = typer.Option([], help="Extra words for the tokenizer (class names, questions)."),
    seed: int = typer.Option(0, min=0),
) -> None:
    """Build a tiny randomly initialised VLM of a real architecture, offline."""
    from ..backends.tiny import build_tiny_vlm

    console.print(f"saved {build_tiny_vlm(family, output, texts=text, seed=seed)}")


@app.command()
def validate(
    manifest: Path = typer.Argument(..., help="CSV, TSV, Parquet or JSONL manifest."),
    task: Optional[Path] = typer.Option(None, help="Task YAML; labels are checked against its classes."),
    image_root: Optional[Path] = typer.Option(None, help="Folder that relative image paths start from."),
    quick: bool = typer.Option(False, "--quick", help="Only check that the images exist; do not decode them."),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root",
                                            help="Accept image paths outside the manifest folder and image root."),
) -> None:
    """Check a manifest as eval will use it: every row and field, and every image decoded.

    All problems are listed (one per line, with row and file) before the one-line error.
    """
    from ..cases import check_manifest
    from ..errors import ManifestError
    from ..tasks import Task

    classes = Task.from_yaml(task).classes if task is not None else None
    check = check_manifest(manifest, image_root=image_root, classes=classes, decode=not quick,
                           allow_outside_root=allow_outside_root)
    images = len(check.parsed.images)
    cost = (f"{images} image(s) found, not decoded (--quick)" if quick
            else f"{check.decoded} of {images} image(s) decoded") + f" in {check.seconds:.1f} s"
    problems = check.problems
    if problems:
        for problem in problems:
            console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        shown = 8
        more = f"; and {len(problems) - shown} more (all listed above)" if len(problems) > shown else ""
        raise ManifestError(f"{manifest}: {len(problems)} problem(s) in {check.parsed.rows} row(s) ({cost}): "
                            + "; ".join(problems[:shown]) + more)
    table = check.parsed.cases
    counts: dict[tuple, int] = {}
    for case in table:
        counts[(case.split, case.label)] = counts.get((case.split, case.label), 0) + 1
    console.print(f"{manifest}: {len(table)} cases, {cost}, OK", markup=False, highlight=False)
    for (split, label), n in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        console.print(f"  split={split} label={label}: {n}", markup=False, highlight=False)


@app.command()
def serve(
    config: Path = typer.Argument(..., help="Serve YAML: task, data manifest, bank, selector, k, model."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port."),
    token: Optional[str] = typer.Option(None, envvar="SEEINPAIRS_API_TOKEN", show_envvar=True,
                                        help="Bearer token required on /v1 endpoints."),
) -> None:
    """Serve the diagnosis API, an OpenAI-compatible chat endpoint and the web page for one model."""
    from ..serve.schemas import ServeConfig

    cfg = ServeConfig.from_yaml(config)  # before the app's torch import: config errors come fast
    import uvicorn

    from ..serve.app import create_app

    if token:
        cfg = cfg.model_copy(update={"auth_token": token})
    console.print(f"serving {cfg.model.label or cfg.model.name} on http://{host}:{port}/ "
                  f"({'bearer token required' if cfg.auth_token else 'no auth'})")
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning", access_log=False)


@app.command("check-model")
def check_model_command(
    model: str = typer.Argument(..., help="Hub id or checkpoint folder of a vision-language model."),
    device: str = typer.Option("auto", help="cpu, cuda, mps or auto."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16 (the fast-path tolerance is for "
                                              "float32)."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit)."),
    local_files_only: bool = typer.Option(False, "--local-files-only", help="Never download."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the checkpoint's own code."),
    as_json: bool = typer.Option(False, "--json", help="Print the row as JSON."),
) -> None:
    """Load a checkpoint and run a few requests on generated images: prints one row (load, one- and
    multi-token scoring, shared prompt, generation, prefix and vision cache, attribution layout, LoRA
    targets) with timings; exits 2 with a one-line reason when loading or a check fails."""
    import json

    from ..studies.check_model import check_model, raise_on_failure

    result = check_model(model, device=device, dtype=dtype, revision=revision, local_files_only=local_files_only,
                         trust_remote_code=trust_remote_code)
    if as_json:
        console.out(json.dumps(result.to_dict(), indent=2), highlight=False)
    else:
        console.print(result.row(), soft_wrap=True, highlight=False)
        for line in result.notes():
            console.print(line, soft_wrap=True, highlight=False)
    raise_on_failure(result)


@app.command("list")
def list_components() -> None:
    """List every registry (backends, selectors, metrics, data set adapters, ...) with its entries and
    what each is, the tiny model families not supported, and the class names each data set adapter gives."""
    from ..backends.tiny_families import UNSUPPORTED_FAMILIES
    from ..datasets.registry import dataset_classes, list_datasets
    from ..registry import registries

    for registry in registries():
        console.print(f"{registry.kind} ({len(registry.list_names())}):", markup=False, highlight=False)
        for name in registry.list_names():
            console.print(f"  {name}: {registry.describe(name)}", markup=False, highlight=False)
        if registry.kind == "tiny model family":
            for family, reason in sorted(UNSUPPORTED_FAMILIES.items()):
                console.print(f"  not supported: {family}: {reason}", markup=False)
    console.print("data set adapters and the class names they give (a config with data.dataset may leave "
                  "task.classes and task.healthy_class out to use them):")
    for name in list_datasets():
        for setting, classes in dataset_classes(name).items():
            console.print(f"  {name}{' ' + setting if setting else ''}: {classes}")


register_explain(app, console)
from .setdiff import setdiff_app  # noqa: E402  (the setdiff command group)

app.add_typer(setdiff_app, name="setdiff")
from .mim import app as mim_app  # noqa: E402  (multi-image QA commands)

app.add_typer(mim_app, name="mim")


def usage_message(exc: UsageError) -> str:
    """A command-line mistake as one line: what is wrong, the commands where a command was
    expected (no arguments, an unknown command), and where the help is.

    Click's own layout (a usage line, a hint, then the error) is folded into this one line.
    """
    message = " ".join(exc.format_message().split())
    ctx = exc.ctx
    if ctx is None:
        return message
    group = ctx.command
    if hasattr(group, "list_commands") and ctx.invoked_subcommand is None \
            and not isinstance(exc, (NoSuchOption, BadParameter)):
        message += f" Commands: {', '.join(group.list_commands(ctx))}."
    return f"{message} (see '{ctx.command_path} --help')"


def print_error(message: str) -> None:
    """The ``error:`` line on stderr, the message printed as given (never read as markup)."""
    err_console.print(Text("error:", style="red"), message, highlight=False, soft_wrap=True)


def configure_logging() -> None:
    """One handler for every log line, ``LEVEL logger: message``. huggingface_hub attaches its own handler and
    still propagates to the root one, so each of its lines (e.g. every retry of an unreachable hub) came twice."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("huggingface_hub").propagate = False


def main() -> None:
    """The console entry point: user errors and usage errors are one ``error:`` line and exit status 2."""
    configure_logging()
    try:
        status = app(standalone_mode=False)
    except SeeInPairsError as exc:
        print_error(str(exc))
        sys.exit(2)
    except UsageError as exc:
        print_error(usage_message(exc))
        sys.exit(2)
    except ClickException as exc:  # e.g. a file that click could not open
        print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: predictions computed so far are stored; run the same command to resume")
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(status, int) and status:  # without standalone mode click returns an explicit Exit's code
        sys.exit(status)

