"""``seeinpairs mim ...``: validate, generate, evaluate and demo multi-image QA in the Med-MIM layout.

Image roots are given per data set as ``--root NAME=FOLDER`` (``NAME`` is the
``source`` prefix, e.g. ``MS_CXR_T`` or ``VQA_ODIR``; ``*`` for any other).
Errors are :class:`~seeinpairs.errors.SeeInPairsError` lines, printed by the
main CLI without a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from ..errors import ConfigError
from ..mim.format import ABILITIES, DEFAULT_ROOT, KNOWN_DATASETS, FileKind, check_root_names
from .console import make_console

app = typer.Typer(add_completion=False, no_args_is_help=False,
                  help="Multi-image medical QA (Med-MIM layout): validate, generate, train, evaluate, demo.")
console = make_console()


ROOT_HELP = (f"Image root per data set: NAME=FOLDER (repeatable). NAME is the items' source prefix: "
             f"{', '.join(KNOWN_DATASETS)} in the Med-MIM release, a generated set's name, or '{DEFAULT_ROOT}' "
             f"for any data set; without one, images are looked up beside the JSON file.")
SPLIT_HELP = ("What the files hold when their names do not say it: held_in, held_out or train "
              "(default: from the file name, e.g. Med_MIM_benchmark_Held_in_Temporal.json).")
ABILITY_HELP = (f"With --split: the ability ({', '.join(ABILITIES)}) or, for held_out, the set's name "
                "(e.g. ODIR).")
STRICT_HELP = "Stop at the first malformed item (default: skip it, report it and count it)."


def parse_kind(split: str | None, ability: str | None) -> FileKind | None:
    """The file kind given on the command line (both or neither of --split and --ability)."""
    if split is None and ability is None:
        return None
    if split is None or ability is None:
        raise ConfigError("give --split and --ability together (or neither, to read them from the file names)")
    splits = ("held_in", "held_out", "train")
    if split not in splits:
        raise ConfigError(f"--split '{split}': expected one of {', '.join(splits)}")
    subset = ability.strip().lower()
    if split != "held_out" and subset not in ABILITIES:
        raise ConfigError(f"--ability '{ability}': expected one of {', '.join(ABILITIES)} for --split {split}")
    return FileKind(split, subset)  # type: ignore[arg-type]


def report_skipped(dataset) -> None:
    """One line per malformed item left out, then their count (nothing when none were)."""
    for item in dataset.skipped:
        console.print(f"skipped: {item.reason}", markup=False, highlight=False)
    if dataset.skipped:
        console.print(f"{len(dataset.skipped)} malformed item(s) skipped (--strict stops at the first)")


def parse_roots(values: list[str]) -> dict[str, Path]:
    """``["MS_CXR_T=/data/cxr", "*=/data"]`` -> roots by data set name."""
    roots: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--root '{value}': expected NAME=FOLDER (e.g. MS_CXR_T=/data/ms-cxr-t)")
        roots[name.strip()] = Path(folder).expanduser()
    return roots


def _fmt(value, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "NA"
    return "NA" if math.isnan(value) else f"{value:.{digits}f}"


def _count(value) -> str:
    """A count as an integer ("11", not "11.0"); "-" where the row has none (e.g. macro rows)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(value) else str(int(value))


def print_summary(summary, title: str) -> None:
    """Multiple-choice accuracy per group, then the open-ended scores (mean [95% CI]) where there are any."""
    open_metrics = [c for c in summary.columns if c.startswith("open_") and not c.endswith(("_lo", "_hi"))]
    table = Table(title=title)
    for column in ("level", "group", "n", "chance", "accuracy [95% CI]", "parse failures", "n open", *open_metrics):
        table.add_column(column.removeprefix("open_") if column in open_metrics else column)
    for _, row in summary.iterrows():
        table.add_row(str(row["level"]), str(row["group"]), _count(row.get("n")), _fmt(row.get("chance")),
                      f"{_fmt(row.get('accuracy'))} [{_fmt(row.get('accuracy_lo'), 2)}, {_fmt(row.get('accuracy_hi'), 2)}]",
                      _fmt(row.get("parse_failure_rate")), _count(row.get("n_open")),
                      *[f"{_fmt(row.get(m))} [{_fmt(row.get(m + '_lo'), 2)}, {_fmt(row.get(m + '_hi'), 2)}]"
                        if _fmt(row.get(m)) != "NA" else "-" for m in open_metrics])
    console.print(table)


@app.command()
def validate(
    files: list[Path] = typer.Argument(..., help="Med-MIM-format JSON files."),
    root: list[str] = typer.Option([], help=ROOT_HELP),
    open_images: bool = typer.Option(True, help="Decode every image (not only check that it exists)."),
    structure_only: bool = typer.Option(False, help="Check the files without their images: every item is read "
                                                    "and counted; missing images are counted, not errors."),
    split: str | None = typer.Option(None, help=SPLIT_HELP),
    ability: str | None = typer.Option(None, help=ABILITY_HELP),
) -> None:
    """Check files: structure, placeholders, options, images. Every problem is listed, one line each,
    with counts of items, abilities, sources, multiple-choice/open items and images."""
    from ..mim.format import MimDataset

    roots = parse_roots(root)
    dataset = MimDataset.load(files, roots, kind=parse_kind(split, ability), check_images="none", strict=False)
    check_root_names(roots, dataset)
    problems = [item.reason for item in dataset.skipped]
    referenced = sum(len(item.images) for item in dataset)
    missing = sum(not path.is_file() for item in dataset for path in dataset.image_paths(item))
    if not structure_only:
        problems += list(dataset.image_problems(opened=open_images))
    counts: dict[tuple[str, str, str], list[int]] = {}
    for item in dataset:
        entry = counts.setdefault((item.file, item.dataset, item.subset), [0, 0])
        entry[0 if item.multiple_choice else 1] += 1
    for (file, source, subset), (mc, opened) in sorted(counts.items()):
        console.print(f"{file}: {subset}, source {source}: {mc} multiple choice, {opened} open-ended",
                      markup=False, highlight=False)
    console.print(f"{len(dataset) + len(dataset.skipped)} items read: {len(dataset)} valid, "
                  f"{len(dataset.skipped)} malformed; {referenced} images referenced, {missing} missing"
                  + (" (not checked further: --structure-only)" if structure_only else ""))
    for problem in problems:
        console.print(f"problem: {problem}", markup=False, highlight=False)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in {len(files)} file(s) (listed above)")
    console.print(f"{len(dataset)} items OK")


@app.command()
def generate(
    manifest: Path = typer.Argument(..., help="Case table (CSV, TSV, Parquet, JSONL) with split, patient_id, label."),
    output: Path = typer.Argument(..., file_okay=False, help="Folder for the generated Med-MIM-format files."),
    image_root: Path | None = typer.Option(None, help="Folder relative image paths start from "
                                                          "(default: the manifest's folder)."),
    train: int = typer.Option(400, min=0, help="Items per ability from the train split."),
    val: int = typer.Option(40, min=0, help="Items per ability from the val split."),
    test: int = typer.Option(120, min=0, help="Items per ability from the test split."),
    dataset: str = typer.Option("SYNTH_SERIES", help="Data-set name: the source prefix and image-root key."),
    prefix: str = typer.Option("seeinpairs", help="File name prefix."),
    open_fraction: float = typer.Option(0.1, min=0.0, max=1.0, help="Share of open-ended items."),
    seed: int = typer.Option(0, min=0),
) -> None:
    """Generate multi-image questions (co-reference, comparison, temporal, reasoning) from a case table."""
    from ..cases import CaseTable
    from ..mim.generate import QAGenConfig, generate_qa

    table = CaseTable.load(manifest, image_root=image_root)
    config = QAGenConfig(n_items={"train": train, "val": val, "test": test}, dataset=dataset, prefix=prefix,
                         open_fraction=open_fraction, seed=seed)
    result = generate_qa(table, output, image_root or manifest.resolve().parent, config)
    for split, counts in result.counts.items():
        console.print(f"{split}: " + ", ".join(f"{ability} {n}" for ability, n in counts.items()))
    for split, reasons in result.skipped.items():
        for ability, why in reasons.items():
            console.print(f"skipped {split} {ability}: {why}")
    console.print(f"files in {output} (image root for --root {dataset}=...: {image_root or manifest.resolve().parent})")


@app.command()
def synthetic(
    output: Path = typer.Argument(..., file_okay=False,
                                  help="Folder for the longitudinal two-view images and manifest.csv."),
    patients: int = typer.Option(240, min=1, help="Patients (3 studies x 2 views each)."),
    seed: int = typer.Option(0, min=0),
) -> None:
    """Generate the longitudinal, two-view synthetic case table (input for 'mim generate')."""
    from ..datasets.synthetic_series import SeriesConfig, generate_series

    table = generate_series(output, SeriesConfig(n_patients=patients, seed=seed))
    console.print(f"{len(table)} images of {patients} patients: {output / 'manifest.csv'}")


@app.command()
def evaluate(
    files: list[Path] = typer.Argument(..., help="Med-MIM-format JSON files."),
    model: str = typer.Option(..., help="HF checkpoint folder or hub id."),
    root: list[str] = typer.Option([], help=ROOT_HELP),
    method: str = typer.Option("loglik", help="loglik (option log-likelihood) or generate (generate and parse)."),
    single_image: str | None = typer.Option(None, help="Ablation: show only this image (first, last or 0-based)."),
    output: Path = typer.Option(Path("runs/mim_eval"), file_okay=False, help="Where predictions and summaries go."),
    device: str = typer.Option("auto"),
    batch_size: int = typer.Option(16, min=1),
    judge: str | None = typer.Option(None, help="Judge model for open-ended answers (enables llm_judge)."),
    n_boot: int = typer.Option(1000, min=1),
    progress: bool = typer.Option(True),
    strict: bool = typer.Option(False, help=STRICT_HELP),
    split: str | None = typer.Option(None, help=SPLIT_HELP),
    ability: str | None = typer.Option(None, help=ABILITY_HELP),
) -> None:
    """Evaluate a model on Med-MIM-format files: accuracy per ability, source and split with 95% CIs.

    Malformed items are skipped (one line each, and skipped_<condition>.csv beside the results)."""
    from ..backends import create_backend
    from ..mim.evaluate import evaluate as run
    from ..mim.format import MimDataset

    roots = parse_roots(root)
    dataset = MimDataset.load(files, roots, kind=parse_kind(split, ability), check_images="none", strict=strict)
    check_root_names(roots, dataset)
    dataset.check_images()
    report_skipped(dataset)
    backend = create_backend({"name": model, "device": device, "batch_size": batch_size})
    judge_backend = create_backend({"name": judge, "device": device, "batch_size": batch_size}) if judge else None
    result = run(backend, dataset, method=method, keep=single_image, judge=judge_backend,  # type: ignore[arg-type]
                 n_boot=n_boot, batch_size=batch_size, progress=progress)
    paths = result.save(output)
    print_summary(result.summary, f"{result.condition}: multiple-choice accuracy (95% bootstrap CI)")
    console.print(f"predictions: {paths['predictions']}  summary: {paths['summary']}", markup=False)


@app.command()
def train(
    files: list[Path] = typer.Argument(..., help="Med-MIM-format training files (e.g. *_train_inherent_*.json)."),
    output: Path = typer.Option(Path("runs/mim_sft"), file_okay=False,
                                help="Output folder (final/ loads with --model)."),
    val: list[Path] = typer.Option([], help="Validation files (repeatable); best checkpoint by validation loss."),
    root: list[str] = typer.Option([], help=ROOT_HELP),
    model: str | None = typer.Option(None, help="Pretrained checkpoint (LoRA by default)."),
    tiny: str | None = typer.Option(None, help="Or a tiny model family trained in full (qwen2_vl, idefics3)."),
    steps: int = typer.Option(400, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(16, min=1),
    lr: float = typer.Option(2e-4, min=0.0, help="Learning rate (a tiny model from scratch wants about 3e-3)."),
    eval_every: int = typer.Option(200, min=1),
    end_of_turn: bool = typer.Option(True, help="Also train the end-of-sequence token after each answer, so "
                                                "that generated (open-ended) answers stop."),
    device: str = typer.Option("auto"),
    resume: bool = typer.Option(True, help="Continue from output/last when it exists."),
    progress: bool = typer.Option(True),
    strict: bool = typer.Option(False, help=STRICT_HELP),
) -> None:
    """Multi-image SFT on Med-MIM-format items (full training for tiny models, LoRA for pretrained ones)."""
    from ..mim.format import MimDataset
    from ..mim.train import train_mim
    from ..training import SFTSettings

    if (model is None) == (tiny is None):
        raise ConfigError("give exactly one of --model (a checkpoint) or --tiny (a tiny model family)")
    roots = parse_roots(root)
    settings = SFTSettings.from_dict({
        "name": "mim_sft", "model": {"name": model, "tiny": tiny, "device": device}, "batch_size": batch_size,
        "lr": lr, "max_steps": steps, "eval_every": eval_every, "end_of_turn": end_of_turn,
        "output_dir": str(output)}, source="mim train")
    train_set = MimDataset.load(files, roots, check_images="none", strict=strict)
    val_set = MimDataset.load(val, roots, check_images="none", strict=strict) if val else None
    check_root_names(roots, [*train_set, *(val_set or [])])
    for dataset in (train_set, val_set):
        if dataset is not None:
            dataset.check_images()
            report_skipped(dataset)
    result = train_mim(settings, train_set, val_set, progress=progress, resume=resume)
    console.print(f"checkpoint: {result.checkpoint} ({result.mode}, {result.steps} steps, {result.seconds:.0f} s)")


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/mim_demo"), file_okay=False, help="Where data, model and results go."),
    steps: int | None = typer.Option(None, min=1, help="SFT steps (default from MimDemoConfig)."),
    patients: int | None = typer.Option(None, min=1, help="Patients in the generated series."),
    progress: bool = typer.Option(True),
) -> None:
    """Offline: generate the multi-image benchmark, evaluate a tiny VLM, SFT it, evaluate again, ablate, report."""
    from ..mim.demo import MimDemoConfig, run_mim_demo

    overrides = {k: v for k, v in {"steps": steps, "patients": patients}.items() if v is not None}
    result, _ = run_mim_demo(output, MimDemoConfig(**overrides), progress=progress)
    table = result.accuracy_table()
    for condition, frame in table.groupby("condition", sort=False):
        view = frame.rename(columns={"group": "group"}).assign(level=frame["group"].map(
            lambda g: "split" if g in ("held_in", "held_out") else "subset"))
        print_summary(view, f"{condition}")
    console.print(f"report: {result.report} ({result.seconds:.0f} s)")
