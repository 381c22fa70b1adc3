"""``seeinpairs explain`` (maps for one case) and ``seeinpairs evidence`` (the analysis over a split)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from ..errors import ConfigError


def _runner(config: Path):
    from ..evaluation.config import ExperimentConfig

    experiment = ExperimentConfig.from_yaml(config)  # before the runner's torch import: config errors come fast
    from ..evaluation.runner import ExperimentRunner

    return ExperimentRunner(experiment, progress=False)


def _model(runner, label: str | None):
    models = runner.config.models
    if label is None:
        return models[0]
    for model in models:
        if model.display == label:
            return model
    raise ConfigError(f"--model '{label}' is not a model label of the config ({', '.join(m.display for m in models)})")


def _local_backend(runner, model):
    """The model's backend with its weights here (attribution needs gradients). The caches are left out:
    they tune scoring speed (a vision cache would even block the gradients); where the weights come from
    (revision, cache folder, offline, remote code) is kept."""
    from ..backends import local_backend

    options = {key: value for key, value in model.options.items() if key not in SCORING_CACHES}
    return local_backend(runner.concrete_model(model).model_copy(update={"options": options}), "attribution")


#: backend options that only speed scoring up, left out when a model is explained
SCORING_CACHES = ("vision_cache_mb", "prefix_cache")


def register(app: typer.Typer, console: Console) -> None:
    """Add the evidence commands to the main CLI."""

    @app.command()
    def explain(
        config: Path = typer.Argument(..., help="Experiment YAML (task, data, bank, models)."),
        case_id: str = typer.Option(..., "--case-id", help="The query case to explain."),
        model: str | None = typer.Option(None, help="Model label in the config (default: the first)."),
        selector: str = typer.Option("random", help="Reference selector (k=0 explains the single-image prompt)."),
        k: int = typer.Option(1, min=0, help="Number of references."),
        seed: int = typer.Option(0, min=0, help="Selection seed (the evaluation's seed gives the same references)."),
        option: str | None = typer.Option(None, help="Option to explain (default: the predicted one)."),
        method: list[str] = typer.Option(["grad_x_input", "attention"], help="grad_x_input, integrated_gradients, "
                                         "attention, rollout (repeatable)."),
        ig_steps: int = typer.Option(16, min=1, help="Integrated-gradients steps."),
        output: Path = typer.Option(Path("runs/explain"), file_okay=False,
                                    help="Folder for the overlay PNG and the maps."),
    ) -> None:
        """Attribution maps of every image in one case's prompt (references and query) toward an option."""
        runner = _runner(config)
        from ..cases import case_rng
        from ..explain.attribution import RequestExplainer
        from ..explain.overlay import METHOD_TITLES, overlay_png
        from ..references.selectors import create_selector

        cases = {c.case_id: c for c in runner.table}
        if case_id not in cases:
            raise ConfigError(f"--case-id '{case_id}' is not in {runner.config.data.manifest}")
        case = cases[case_id]
        chosen = create_selector(selector if k else "none", runner.bank if k else None)
        references = chosen.select(case, k, case_rng(seed, case.case_id)).references
        backend = _local_backend(runner, _model(runner, model))
        request = runner.builder.build(case, references)
        explanation = RequestExplainer.from_backend(backend, ig_steps=ig_steps).explain(request, option, method)
        output.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(output / f"{case_id}_maps.npz", **{f"{m}_{i}_{image_id}": values
                                                              for m, maps in explanation.maps.items()
                                                              for i, (image_id, values) in
                                                              enumerate(zip(explanation.image_ids, maps))})
        titles = [f"reference {i + 1}" for i in range(len(references))] + ["query"]
        png = overlay_png(request.images, [(METHOD_TITLES.get(m, m), explanation.maps[m]) for m in method], titles,
                          caption=f"{case_id}: maps toward '{explanation.option}'")
        (output / f"{case_id}_overlay.png").write_bytes(png)
        summary = {"case_id": case_id, "option": explanation.option, "options": explanation.options,
                   "probabilities": explanation.probabilities, "image_ids": explanation.image_ids,
                   "image_mass": explanation.image_mass}
        (output / f"{case_id}_explanation.json").write_text(json.dumps(summary, indent=2))
        probs = ", ".join(f"{o} {p:.3f}" for o, p in zip(explanation.options, explanation.probabilities))
        console.print(f"{case_id}: {probs}; maps toward '{explanation.option}'")
        for m in method:
            shares = ", ".join(f"{t} {s:.0%}" for t, s in zip(titles, explanation.image_mass[m]))
            console.print(f"  {METHOD_TITLES.get(m, m)}: attribution share {shares}")
        console.print(f"overlay and maps in {output}")

    @app.command()
    def evidence(
        config: Path = typer.Argument(..., help="Experiment YAML with the single-image and the paired model."),
        single: str = typer.Option(..., help="Label of the single-image model."),
        paired: str = typer.Option(..., help="Label of the paired (comparative) model."),
        selector: str = typer.Option("random", help="Reference selector for the paired prompts."),
        k: int = typer.Option(1, min=1, help="Number of references."),
        n_localization: int = typer.Option(40, min=1, help="Abnormal cases with masks to score."),
        n_cases: int = typer.Option(80, min=2, help="Cases for the swap test and the layer analysis."),
        method: list[str] = typer.Option(["grad_x_input", "attention"], help="Attribution methods (repeatable)."),
        mask_field: str = typer.Option("mask", help="Manifest column with the lesion mask path."),
        mask_root: Path | None = typer.Option(None, file_okay=False, help="Folder that relative mask paths start from "
                                                 "(default: the data's image root or the manifest's folder)."),
        output: Path = typer.Option(Path("runs/evidence"), file_okay=False,
                                    help="Folder for tables, overlays and report.html."),
    ) -> None:
        """Localization (pointing game, energy in mask), reference use and layer analysis, single vs paired."""
        runner = _runner(config)
        from ..explain.evidence import EvidenceConfig, EvidenceRunner
        from ..explain.report import evidence_section
        from ..report import ReportInputs, write_report

        evidence_config = EvidenceConfig(split=runner.config.eval.split, n_localization=n_localization,
                                         n_cases=n_cases, methods=method, selector=selector, k=k,
                                         mask_field=mask_field)
        data = runner.config.data
        root = mask_root or data.image_root or Path(data.manifest).parent
        single_backend, paired_backend = (_local_backend(runner, _model(runner, m)) for m in (single, paired))
        result = EvidenceRunner(single_backend, paired_backend, runner.table, runner.task, runner.bank,
                                evidence_config, mask_root=root).run()
        result.save(output)
        report = write_report(output / "report.html", ReportInputs(
            title=f"seeinpairs evidence: {runner.config.name}", sections=[evidence_section(result)],
            metadata={"config": str(config), "single": single, "paired": paired}))
        from ..explain.report import evidence_findings

        for line in evidence_findings(result):
            console.print(line)
        console.print(f"tables and overlays in {output}; report: {report}")
