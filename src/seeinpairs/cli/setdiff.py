"""``seeinpairs setdiff``: describe what distinguishes two image sets, and the offline benchmark.

* ``setdiff run FILE`` -- RadDiffBench / VisDiffBench pairs (or ``--manifest`` with
  ``--set1``/``--set2`` filters): propose, rank, judge; writes outcomes, summary and report.
* ``setdiff benchmark`` -- the generated benchmark with a tiny VLM ranker trained offline,
  against random ranking and ranking by ground-truth attributes.
* ``setdiff list`` -- the registered proposers, rankers and judges.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..errors import ConfigError
from .console import make_console

setdiff_app = typer.Typer(add_completion=False, no_args_is_help=False,
                          help="Describe what distinguishes image set 1 from set 2 (RadDiff/VisDiff protocol).")
console = make_console()


def _summary_table(frame, title: str) -> Table:
    table = Table(title=title)
    metrics = [c for c in frame.columns if c.startswith("acc@") and not c.endswith(("_lo", "_hi"))]
    for column in ["method", "difficulty", "pairs", *metrics]:
        table.add_column(column)
    for _, row in frame.iterrows():
        table.add_row(str(row["method"]), str(row["difficulty"]), str(int(row["n_pairs"])),
                      *[f"{row[m]:.3f} [{row[m + '_lo']:.2f}, {row[m + '_hi']:.2f}]" for m in metrics])
    return table


def _backend(kind: str, model: str | None, device: str, base_url: str | None, role: str) -> Any:
    from ..backends import create_backend

    if not model:
        hint = (" (or --ranker dual_encoder --ranker-model open_clip:<name>, or --ranker random for chance)"
                if role == "ranker-model" else "")
        raise ConfigError(f"option '--{role}': needed by the chosen {role.replace('-model', '')} (a folder, hub id "
                          f"or served model name){hint}")
    options = {"base_url": base_url} if base_url and kind != "hf" else {}
    return create_backend({"backend": kind, "name": model, "device": device, "options": options})


@setdiff_app.command("run")
def run_command(
    benchmark: Path | None = typer.Argument(None, help="RadDiffBench JSONL, VisDiffBench JSONL or CSV."),
    image_root: Path | None = typer.Option(None, help="Folder that image paths are relative to."),
    difficulty_csv: Path | None = typer.Option(None, help="RadDiffBench's row-aligned difficulty CSV."),
    fmt: str = typer.Option("auto", "--format", help="auto, raddiff, visdiff or visdiff_csv."),
    manifest: Path | None = typer.Option(None, help="A case table instead of a benchmark file."),
    set1: str | None = typer.Option(None, help="Filter for set 1, e.g. 'label == pneumonia'."),
    set2: str | None = typer.Option(None, help="Filter for set 2, e.g. 'label == normal'."),
    proposer: str = typer.Option("concept_vocabulary", help="concept_vocabulary, captions_lm, image_grid, "
                                 "reports_lm or report_contrast (the last two need --reports)."),
    reports: str | None = typer.Option(None, help="Clinical reports: 'mimic' (sXXXXXXXX.txt beside each study "
                                       "folder), 'mimic:FOLDER' (a files folder of reports), 'csv:FILE' (columns "
                                       "image or study, and report) or 'column:NAME' (a --manifest column)."),
    rounds: int = typer.Option(1, min=1, help="Refinement rounds of reports_lm/report_contrast: round r+1 sees "
                               "round r's top hypotheses, their AUROC and counter-examples."),
    report_budget: int = typer.Option(400, min=50, help="Characters kept of each report's findings and "
                                      "impression (reports_lm)."),
    concepts: Path | None = typer.Option(None, help="YAML vocabulary for concept_vocabulary."),
    zoom: bool = typer.Option(False, help="Second iteration: zoom-in refinement by --proposer-model."),
    proposer_model: str | None = typer.Option(None, help="Generating model for captions_lm/image_grid/zoom."),
    ranker: str = typer.Option("vlm", help="vlm, dual_encoder or random."),
    ranker_model: str | None = typer.Option(None, help="VLM (vlm) or CLIP-style model (dual_encoder: "
                                                         "hf:<id|folder> or open_clip:<name>[@pretrained])."),
    judge: str = typer.Option("embedding", help="embedding (offline) or lm."),
    judge_model: str | None = typer.Option(None, help="Generating model for the lm judge."),
    backend: str = typer.Option("hf", help="Backend of the generating/scoring models (hf, openai_compat)."),
    base_url: str | None = typer.Option(None, help="openai_compat endpoint."),
    device: str = typer.Option("auto", help="Device for local models."),
    max_pairs: int | None = typer.Option(None, min=1, help="Only the first N pairs."),
    seed: int = typer.Option(0, min=0),
    output: Path = typer.Option(Path("runs/setdiff"), file_okay=False, help="Where outcomes, summary and report go."),
) -> None:
    """Propose, rank and judge differences between image sets; print acc@k when ground truth is known."""
    from ..cases import CaseTable
    from ..setdiff import (
        create_judge,
        create_proposer,
        create_ranker,
        load_pairs,
        pair_from_table,
    )
    from ..setdiff.pipeline import run_setdiff
    from ..setdiff.report import setdiff_section, write_setdiff_report

    if (benchmark is None) == (manifest is None):
        raise ConfigError("give a benchmark file or --manifest with --set1 and --set2 (exactly one of them)")
    if manifest is not None:
        if not set1 or not set2:
            raise ConfigError("option '--set1'/'--set2': both filters are needed with --manifest")
        pairs = [pair_from_table(CaseTable.load(manifest, image_root=image_root), set1, set2)]
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pairs = load_pairs(benchmark, image_root, difficulty_csv, fmt)
        for warning in caught:  # one line each (dropped non-image paths), not Python's two-line format
            console.print(f"warning: {warning.message}", highlight=False, soft_wrap=True, markup=False)
    if proposer == "concept_vocabulary" and concepts is None and not _radiology(benchmark, fmt):
        console.print("warning: the default concept vocabulary holds chest-radiograph findings; for other images "
                      "give --concepts FILE or use --proposer captions_lm", highlight=False, soft_wrap=True)
    pairs = pairs[:max_pairs]
    coverage = _attach_reports(pairs, reports, image_root) if reports else None
    if proposer in ("reports_lm", "report_contrast") and coverage is None:
        raise ConfigError(f"option '--reports': proposer '{proposer}' needs reports (mimic, mimic:FOLDER, "
                          "csv:FILE or column:NAME)")
    generator = (_backend(backend, proposer_model, device, base_url, "proposer-model")
                 if proposer not in ("concept_vocabulary", "report_contrast") or zoom else None)
    if proposer == "concept_vocabulary":
        chosen_proposer = create_proposer(proposer, concepts=concepts)
    elif proposer == "report_contrast":
        chosen_proposer = create_proposer(proposer)
    elif proposer == "reports_lm":
        if backend != "hf":
            console.print(f"note: report text (findings and impression) is sent to the {backend} server "
                          f"{base_url or '(default endpoint)'}", highlight=False, soft_wrap=True, markup=False)
        chosen_proposer = create_proposer(proposer, model=generator, budget=report_budget)
    elif proposer == "captions_lm":
        chosen_proposer = create_proposer(proposer, captioner=generator)
    else:
        chosen_proposer = create_proposer(proposer, model=generator)
    refiner = create_proposer("zoom", model=generator, base=chosen_proposer) if zoom else None
    if ranker == "vlm":
        chosen_ranker = create_ranker("vlm", backend=_backend(backend, ranker_model, device, base_url, "ranker-model"))
    elif ranker == "dual_encoder":
        if not ranker_model:
            raise ConfigError("option '--ranker-model': dual_encoder needs a model (hf:<id|folder> or open_clip:<name>)")
        chosen_ranker = create_ranker("dual_encoder", model=ranker_model, device="cpu" if device == "auto" else device)
    else:
        chosen_ranker = create_ranker(ranker, seed=seed) if ranker == "random" else create_ranker(ranker)
    judged = any(p.truth is not None for p in pairs)
    chosen_judge = (create_judge("lm", backend=_backend(backend, judge_model, device, base_url, "judge-model"))
                    if judge == "lm" else create_judge(judge))
    if not judged:
        chosen_judge = _NoTruthJudge()
    run = run_setdiff(pairs, chosen_proposer, {ranker: chosen_ranker}, chosen_judge, refiner=refiner, seed=seed,
                      rounds=rounds)
    if coverage is not None:
        run.settings["reports"] = coverage.to_dict()  # counts and image paths only, never report text
    run.write(output)
    report = write_setdiff_report(output / "report.html", setdiff_section(run, pairs))
    for outcome in run.outcomes[:5]:
        top = ", ".join(f"{r.text} ({r.auroc:.2f})" for r in outcome.ranked[:5])
        console.print(f"{outcome.pair_id}: {top}")
    if judged:
        console.print(_summary_table(run.summary(), "acc@k (95% bootstrap CI over pairs)"))
        if rounds > 1:
            console.print(_rounds_table(run.round_summary(), "acc@k per refinement round (95% bootstrap CI)"))
    console.print(f"outcomes, summary and report in {output} ({report.name})")


def _attach_reports(pairs, spec: str, image_root: Path | None):
    """Join reports to the pairs' images; print how many were found (never their text)."""
    from ..setdiff.reports import attach_reports, load_report_source

    kind, _, location = spec.partition(":")
    source = load_report_source(kind, location or None, image_root)
    coverage = attach_reports(pairs, source)
    console.print(coverage.describe(), highlight=False, soft_wrap=True, markup=False)
    return coverage


def _rounds_table(frame, title: str) -> Table:
    table = Table(title=title)
    metrics = [c for c in frame.columns if c.startswith("acc@") and not c.endswith(("_lo", "_hi"))]
    lead = [c for c in ("condition", "method", "round") if c in frame.columns]
    for column in [*lead, "pairs", "hypotheses", *metrics]:
        table.add_column(column)
    for _, row in frame.iterrows():
        table.add_row(*[str(row[c]) for c in lead], str(int(row["n_pairs"])), f"{row['mean_hypotheses']:.1f}",
                      *[f"{row[m]:.2f} [{row[m + '_lo']:.2f}, {row[m + '_hi']:.2f}]" for m in metrics])
    return table


def _radiology(benchmark: Path | None, fmt: str) -> bool:
    """Whether the input is RadDiffBench-format (the default vocabulary's domain) or a case table."""
    if benchmark is None:
        return True  # a case table: the user's own medical images
    from ..setdiff.inputs import benchmark_format

    return benchmark_format(benchmark, fmt) == "raddiff"


@setdiff_app.command("validate")
def validate_command(
    benchmark: Path = typer.Argument(..., help="RadDiffBench JSONL, VisDiffBench JSONL or CSV."),
    image_root: Path | None = typer.Option(None, help="Folder that image paths are relative to "
                                                      "(default: the benchmark file's folder)."),
    difficulty_csv: Path | None = typer.Option(None, help="RadDiffBench's row-aligned difficulty CSV."),
    fmt: str = typer.Option("auto", "--format", help="auto, raddiff, visdiff or visdiff_csv."),
    structure_only: bool = typer.Option(False, help="Count missing images instead of listing each as a problem "
                                                    "(to inspect a file without its images)."),
) -> None:
    """Check a benchmark file: pairs, difficulties, images referenced and missing; every problem one line."""
    from ..setdiff import load_pairs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = load_pairs(benchmark, image_root, difficulty_csv, fmt)
    problems = [f"warning: {w.message}" for w in caught]
    levels: dict[str, int] = {}
    referenced = missing = 0
    for pair in pairs:
        levels[pair.difficulty or "unknown"] = levels.get(pair.difficulty or "unknown", 0) + 1
        for side in (pair.set1, pair.set2):
            for image in side.images:
                referenced += 1
                if not Path(image).is_file():
                    missing += 1
                    if not structure_only:
                        problems.append(f"{pair.pair_id} set '{side.name}': image not found: {image}")
    console.print(f"{benchmark.name}: {len(pairs)} pairs ({', '.join(f'{k} {v}' for k, v in sorted(levels.items()))}); "
                  f"{referenced} images referenced, {missing} missing", markup=False, highlight=False)
    for problem in problems:
        console.print(problem, markup=False, highlight=False, soft_wrap=True)
    if any(not p.startswith("warning:") for p in problems):
        raise ConfigError(f"{benchmark}: {sum(not p.startswith('warning:') for p in problems)} problem(s) "
                          "(listed above)")
    console.print("OK" + (" (images not required: --structure-only)" if structure_only else ""))


class _NoTruthJudge:
    """Stands in when no pair has a ground truth (case-table filters): every score is 0, unjudged."""

    name = "none"

    def judge(self, hypotheses, pair):
        from ..setdiff.judges import Judgement

        return [Judgement(h, 0, True, "no ground truth") for h in hypotheses]

    def describe(self) -> str:
        return "none (no ground truth given)"


@setdiff_app.command("benchmark")
def benchmark_command(
    output: Path = typer.Option(Path("runs/setdiff_benchmark"), file_okay=False,
                                help="Where data, model, results and report go."),
    images_per_set: int = typer.Option(20, min=4, help="Images in each set of each pair."),
    train_images: int = typer.Option(800, min=40, help="Generated images the VLM ranker is trained on."),
    train_steps: int = typer.Option(2400, min=1, help="Optimizer steps of the VLM ranker."),
    seed: int = typer.Option(0, min=0),
    progress: bool = typer.Option(True, help="Show the training progress bar."),
    reports: bool = typer.Option(False, help="Measure report guidance instead: concept vocabulary (no reports) vs "
                                 "report_contrast on noisy and on clean generated reports, per round."),
    rounds: int = typer.Option(3, min=1, help="Refinement rounds of the report conditions (with --reports)."),
    ranker: str = typer.Option("attributes", help="With --reports: attributes (ground truth, no training) or vlm "
                               "(the tiny VLM, trained with --train-images/--train-steps)."),
) -> None:
    """The offline benchmark: 24 generated set pairs, VLM ranker vs random vs ground-truth attributes."""
    from ..setdiff.benchmark import run_setdiff_benchmark

    if reports:
        from ..setdiff.report_benchmark import RANKER_NAMES, run_report_benchmark

        if ranker not in RANKER_NAMES:
            raise ConfigError(f"option '--ranker': '{ranker}' (use {' or '.join(RANKER_NAMES)})")
        table = run_report_benchmark(output, images_per_set=images_per_set, rounds=rounds, seed=seed, ranker=ranker,
                                     train_images=train_images, train_steps=train_steps)
        console.print(_rounds_table(table, f"acc@k with and without reports, per round (ranker: "
                                           f"{RANKER_NAMES[ranker]}; 95% bootstrap CI over pairs)"))
        console.print(f"results in {output} (report_rounds.csv)")
        return

    result, _ = run_setdiff_benchmark(output, images_per_set=images_per_set, train_images=train_images,
                                      train_steps=train_steps, seed=seed, progress=progress)
    console.print(_summary_table(result.summary(), "acc@k by ranking method (95% bootstrap CI over pairs)"))
    console.print(f"judge: {result.run.judge}")
    console.print(f"report: {result.report} ({result.seconds['total']:.0f} s)")


@setdiff_app.command("list")
def list_command() -> None:
    """The registered proposers, rankers and judges."""
    from ..setdiff import list_judges, list_proposers, list_rankers

    console.print("proposers: " + ", ".join(list_proposers()))
    console.print("rankers: " + ", ".join(list_rankers()))
    console.print("judges: " + ", ".join(list_judges()))
