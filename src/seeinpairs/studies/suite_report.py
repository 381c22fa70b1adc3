"""The suite's one HTML page: the headline per data set, then a section per data set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..report import (DEFAULT_LIMITATIONS, ReportInputs, ReportSection, anchor_metrics_text, ci_cell, findings_from,
                      fmt, fmt_ci, metrics_table, paired_table, render_fragment, sample_efficiency, write_report)
from ..report.plots import learning_curve_caption, plot_learning_curves, png_data_uri
from ..siteshift.experiment import CONTROLS, NEW_SITE, ON_TRAINING_SITES, SINGLE


def _table(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"columns": columns, "rows": [[fmt(v) if isinstance(v, float) else v for v in row] for row in rows]}


def _study_summary(metrics: pd.DataFrame, study: str) -> pd.DataFrame:
    return metrics[metrics["study"] == study].drop(columns=["study", "selection_seed"], errors="ignore")


def _headline_table(headline: pd.DataFrame) -> dict[str, Any]:
    rows = []
    for _, r in headline.iterrows():
        paired = f"{r.get('best_selector', 'none')} k={r.get('best_k', '-')}" if isinstance(r.get("best_selector"), str) \
            else "not run"
        rows.append([r["study"], int(r["seeds"]), fmt(r.get("single_auroc")), fmt(r.get("single_accuracy")), paired,
                     fmt(r.get("paired_auroc")), fmt(r.get("paired_accuracy")),
                     r.get("delta_auroc_per_seed", ""), r.get("mcnemar_p_per_seed", "")])
    return _table(["data set", "training seeds", "single AUROC", "single accuracy", "best paired condition",
                   "paired AUROC", "paired accuracy", "Δ AUROC per seed [95% CI]", "McNemar p per seed"], rows)


def _baselines_table(baselines: pd.DataFrame) -> dict[str, Any] | None:
    if baselines.empty:
        return None
    rows = []
    for _, r in baselines.iterrows():
        anchor = anchor_metrics_text(json.loads(r["anchor"])) if r.get("anchor") else "none"
        rows.append([r["study"], r["baseline"], ci_cell(r["auroc"], r["auroc_lo"], r["auroc_hi"]),
                     ci_cell(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
                     f"{r['anchor_source']}: {anchor}" if r.get("anchor_source") else anchor, r.get("anchor_note", "")])
    return _table(["data set", "baseline (same splits)", "AUROC [95% CI]", "accuracy [95% CI]", "published anchor",
                   "note"], rows)


def _study_section(study: str, metrics: pd.DataFrame, tests: pd.DataFrame, leakage: pd.DataFrame,
                   baselines: pd.DataFrame, curves: pd.DataFrame, results: dict) -> ReportSection:
    summary = _study_summary(metrics, study)
    study_tests = tests[tests["study"] == study].drop(columns=["study", "selection_seed"], errors="ignore") \
        if not tests.empty else None
    study_curves = curves[curves["study"] == study] if not curves.empty else pd.DataFrame()
    efficiency = sample_efficiency(study_curves) if not study_curves.empty else None
    findings = findings_from(summary, study_tests, efficiency)
    audit = leakage[leakage["study"] == study]
    base = baselines[baselines["study"] == study]
    checks = [["paired predictions audited", int(audit["predictions"].sum())],
              ["references checked", int(audit["references"].sum())],
              ["references from the query's own patient or the query itself (must be 0)",
               int(audit["violations"].sum())]]
    for _, b in base.iterrows():
        scores = (f"{fmt_ci(b['auroc'], b['auroc_lo'], b['auroc_hi'])} / "
                  f"{fmt_ci(b['accuracy'], b['accuracy_lo'], b['accuracy_hi'])}")
        checks.append([b["baseline"] + " AUROC / accuracy", scores])
    curve = None
    png = plot_learning_curves(study_curves) if not study_curves.empty else None
    if png:
        curve = {"uri": png_data_uri(png), "caption": learning_curve_caption(study_curves)}
    seeds = sorted(results.get(study, {}))
    reports = ", ".join(str(results[study][s].report) for s in seeds)
    swaps = []
    for seed in seeds:
        evidence = results[study][seed].evidence
        if evidence is not None and not evidence.swap_summary.empty:
            for _, r in evidence.swap_summary.iterrows():
                swaps.append([seed, r["swap"].replace("_", " "), r["gold"], int(r["n"]),
                              f"{r['delta_p_healthy']:+.3f} [{r['delta_p_healthy_lo']:+.3f}, {r['delta_p_healthy_hi']:+.3f}]",
                              f"{r['answer_changed']:.0%}"])
    swap_table = _table(["training seed", "references swapped for", "query gold", "n", "change in P(healthy) [95% CI]",
                         "answer changed"], swaps) if swaps else None
    intro = (f"Training seeds {seeds}; each seed trains a single-image and a comparative model from scratch on the "
             f"same cases. One report per seed: {reports}.")
    body = render_fragment("suite_study.html.j2", intro=intro, findings=findings, metrics=metrics_table(summary),
                           paired=paired_table(study_tests), checks=_table(["check", "value"], checks), curve=curve,
                           swaps=swap_table)
    return ReportSection(f"study-{study}", f"Data set: {study}", body)


def _delta(row: pd.Series, metric: str) -> str:
    value = row.get(f"delta_{metric}_vs_single")
    if value is None or pd.isna(value):
        return ""
    return f"{value:+.3f} [{row[f'delta_{metric}_lo']:+.3f}, {row[f'delta_{metric}_hi']:+.3f}]"


def _first(rows: pd.DataFrame) -> pd.Series | None:
    return rows.iloc[0] if not rows.empty else None


def site_shift_findings(frame: pd.DataFrame) -> list[str]:
    """Per experiment: what the shift cost, and which condition recovered accuracy and AUROC, as measured."""
    lines = []
    for name, part in frame.groupby("experiment", sort=False):
        base = _first(part[(part["model"] == SINGLE) & (part["evaluated_on"] == NEW_SITE)])
        home = _first(part[part["evaluated_on"] == ON_TRAINING_SITES])
        if base is None:
            continue
        held = part["held_out"].iloc[0]
        text = f"{name} (new site {held}): single accuracy {base['accuracy']:.3f}, AUROC {base['auroc']:.3f}"
        if home is not None:
            text += f" (on the training sites {home['accuracy']:.3f} / {home['auroc']:.3f})"
        new_site = part[part["evaluated_on"] == NEW_SITE]
        best_acc = new_site.loc[new_site["accuracy"].idxmax()]
        best_auc = new_site.loc[new_site["auroc"].idxmax()] if new_site["auroc"].notna().any() else None
        text += (f". Best accuracy: {best_acc['model']} ({best_acc['references']}) {best_acc['accuracy']:.3f}")
        if best_auc is not None:
            text += f"; best AUROC: {best_auc['model']} ({best_auc['references']}) {best_auc['auroc']:.3f}"
        paired_new = new_site[new_site["reference_site"] == NEW_SITE]
        controls = new_site[new_site["model"].isin(CONTROLS)]
        if not paired_new.empty and not controls.empty:
            beats = bool(paired_new["accuracy"].max() > controls["accuracy"].max()
                         and paired_new["auroc"].max() > controls["auroc"].max())
            text += (". Paired prompting with new-site references beats both controls (recalibrated and augmented "
                     "single) on accuracy and AUROC" if beats else
                     ". Paired prompting with new-site references does not beat both controls on both accuracy and "
                     "AUROC, so the references cannot be said to do more than calibrate here")
        lines.append(text + ".")
    return lines


def site_shift_section(frame: pd.DataFrame) -> ReportSection:
    rows = [[r["experiment"], r["model"], r["evaluated_on"], r["references"], int(r["n"]),
             ci_cell(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
             ci_cell(r["auroc"], r["auroc_lo"], r["auroc_hi"]),
             _delta(r, "accuracy"), _delta(r, "auroc"),
             "" if pd.isna(r.get("mcnemar_p_vs_single")) else fmt(r.get("mcnemar_p_vs_single"))]
            for _, r in frame.iterrows()]
    table = _table(["experiment", "model", "evaluated on", "references", "n", "accuracy [95% CI]", "AUROC [95% CI]",
                    "Δ accuracy vs single", "Δ AUROC vs single", "McNemar p"], rows)
    intro = ("Models trained on the other sites only, evaluated on the held-out site. Controls without references at "
             "inference: the single-image model recalibrated on the new site's healthy reference images (healthy-option "
             "bias set so they are called healthy at the rate the model calls the training sites' healthy validation "
             "cases healthy), and a single-image model trained with acquisition augmentation. Deltas are against the "
             "single model on the same new-site cases (paired bootstrap 95% CI).")
    body = render_fragment("suite_site_shift.html.j2", intro=intro, findings=site_shift_findings(frame), table=table)
    return ReportSection("site-shift", "Site shift: a new acquisition site", body)


def write_suite_report(out_path: Path, config, profile: str, metrics: pd.DataFrame, tests: pd.DataFrame,
                       headline: pd.DataFrame, leakage: pd.DataFrame, baselines: pd.DataFrame, curves: pd.DataFrame,
                       results: dict, seconds: float, extra_sections: list[ReportSection] | None = None,
                       site_shift: pd.DataFrame | None = None) -> Path:
    intro = ("Per data set, the single-image model against the comparative condition with the highest mean AUROC "
             "over training seeds (chosen after the fact: read it as the most favourable case for references, "
             "not as a pre-registered comparison). Intervals are per seed; the spread between seeds shows how much "
             "a tiny model trained from scratch varies.")
    headline_section = ReportSection("headline", "Headline: single vs best paired, per data set",
                                     render_fragment("suite_headline.html.j2", intro=intro,
                                                     headline=_headline_table(headline),
                                                     baselines=_baselines_table(baselines)))
    sections = [headline_section] + [_study_section(s, metrics, tests, leakage, baselines, curves, results)
                                     for s in headline["study"]]
    if site_shift is not None and not site_shift.empty:
        sections.append(site_shift_section(site_shift))
    sections += list(extra_sections or [])
    findings = []
    for _, row in headline.iterrows():
        if isinstance(row.get("best_selector"), str):
            findings.append(f"{row['study']}: single AUROC {row['single_auroc']:.3f}, best paired "
                            f"({row['best_selector']} k={row['best_k']}) {row['paired_auroc']:.3f}; "
                            f"Δ AUROC per seed {row['delta_auroc_per_seed']}.")
    total = int(leakage["violations"].sum()) if not leakage.empty else 0
    findings.append(f"Leakage audit: {total} references from the query's own patient over "
                    f"{int(leakage['references'].sum()) if not leakage.empty else 0} references checked.")
    metadata = {"suite": config.name, "profile": profile, "studies": list(headline["study"]),
                "seconds": round(seconds, 1)}
    limitations = [*DEFAULT_LIMITATIONS,
                   ("Tiny models trained from scratch on small subsets: the figures describe what references do for "
                    "such models on these images, not what they do for a pretrained medical VLM."),
                   "None of these subsets is an official split; published anchors are printed for orientation only."]
    return write_report(out_path, ReportInputs(title=f"seeinpairs suite: {config.name} ({profile})",
                                               findings=findings, metadata=metadata, limitations=limitations,
                                               sections=sections, core=False))
