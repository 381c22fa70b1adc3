"""The one-file HTML report of a single-vs-paired experiment, rendered from one :class:`ReportInputs`.

:func:`write_report` renders ``templates/report.html.j2`` (Jinja2, autoescaped)
with the metrics and paired-test tables (:mod:`.tables`), figures embedded as base64 PNG
data URIs (:mod:`.plots`), learning curves, example panels and the findings
(:mod:`.findings`, from the numbers of :mod:`.analysis`). Every section renders "not run"
when its input is missing or empty, so a partial experiment still gives a report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..atomic import atomic_write_text
from .analysis import SampleEfficiency, baselines_from_tests, coerce_efficiency, is_empty
from .findings import DEFAULT_LIMITATIONS, efficiency_findings, findings_from
from .format import format_probabilities
from .plots import (
    learning_curve_caption,
    metric_by_k_caption,
    plot_example,
    plot_learning_curves,
    plot_metric_by_k,
    png_data_uri,
)
from .tables import anchor_text, learning_curve_table, metrics_table, paired_table

TEMPLATES = Path(__file__).resolve().parent / "templates"


# ------------------------------------------------------------------- examples
def examples_from_records(
    records: Sequence[Mapping[str, Any]],
    cases: Any,
    n: int = 4,
    title: str | None = None,
) -> list[dict[str, Any]]:
    """Example specs for :class:`ReportInputs` from one condition's prediction records.

    ``cases`` is a :class:`~seeinpairs.cases.CaseTable` or a mapping case id ->
    :class:`~seeinpairs.cases.Case`. Alternates wrong and right predictions
    (in record order) so the panels show both; unknown case ids are skipped.
    """
    def lookup(case_id: str):
        try:
            return cases.get(case_id) if hasattr(cases, "get") else cases[case_id]
        except Exception:  # noqa: BLE001 - an unknown id only drops that example
            return None

    wrong = [r for r in records if r.get("gold") is not None and r.get("predicted") != r.get("gold")]
    right = [r for r in records if r.get("gold") is not None and r.get("predicted") == r.get("gold")]
    ordered = [r for pair in zip(wrong, right) for r in pair] + wrong[len(right):] + right[len(wrong):]
    out = []
    for record in ordered:
        if len(out) >= n:
            break
        query = lookup(str(record.get("case_id")))
        if query is None:
            continue
        refs = [lookup(str(i)) for i in record.get("reference_ids") or []]
        out.append({
            "query": query.image,
            "references": [r.image if r is not None else None for r in refs],
            "reference_labels": [str(i) for i in record.get("reference_ids") or []],
            "gold": record.get("gold"), "predicted": record.get("predicted"),
            "probabilities": record.get("probabilities"), "options": record.get("options"),
            "title": f"{title + ': ' if title else ''}case {record.get('case_id')}",
        })
    return out


def _render_example(spec: Any) -> dict[str, str] | None:
    if isinstance(spec, (bytes, bytearray)):
        return {"uri": png_data_uri(bytes(spec)), "caption": ""}
    if not isinstance(spec, Mapping):
        return None
    if "png" in spec:
        return {"uri": png_data_uri(bytes(spec["png"])), "caption": str(spec.get("caption", ""))}
    png = plot_example(spec.get("query"), spec.get("references") or [], title=spec.get("title"),
                       gold=spec.get("gold"), predicted=spec.get("predicted"),
                       probabilities=spec.get("probabilities"), options=spec.get("options"),
                       reference_labels=spec.get("reference_labels"))
    caption = spec.get("caption")
    if caption is None:
        parts = []
        if spec.get("title"):
            parts.append(str(spec["title"]))
        if spec.get("gold") is not None:
            parts.append(f"gold {spec['gold']}")
        if spec.get("predicted") is not None:
            parts.append(f"predicted {spec['predicted']}")
        probs = format_probabilities(spec.get("probabilities"), spec.get("options"))
        if probs:
            parts.append(f"probabilities: {probs}")
        caption = "; ".join(parts)
    return {"uri": png_data_uri(png), "caption": str(caption)}


# ------------------------------------------------------------------- header and sections
def _metadata_items(metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    items = []
    for key, value in (metadata or {}).items():
        if isinstance(value, (Mapping, list, tuple)):
            text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
            items.append({"key": str(key), "value": text, "block": True})
        else:
            text = "" if value is None else str(value)
            items.append({"key": str(key), "value": text, "block": "\n" in text})
    return items


@dataclass(frozen=True)
class ReportSection:
    """An extra report section contributed by a feature (attribution, multi-image QA, set differences...).

    ``html`` is the section body, rendered by the feature's own autoescaped
    template via :func:`render_fragment`; sections appear after the examples, in
    the order given, each under an ``<h2>`` with ``title`` and anchor ``anchor``.
    """

    anchor: str
    title: str
    html: str


def render_fragment(template: str, **context: Any) -> str:
    """Render a section body from ``report/templates/<template>`` (autoescaped, strict) for a :class:`ReportSection`."""
    return _environment().get_template(template).render(**context)


def _environment() -> Environment:
    # autoescape on for every template, whatever its name: all text in the report is data
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


# ------------------------------------------------------------------- the page
@dataclass(frozen=True)
class ReportInputs:
    """Everything a report page is rendered from; every field but ``title`` may be left empty ("not run").

    ``summary``/``paired_tests``: :class:`~seeinpairs.evaluation.runner.ExperimentResult`
    frames. ``learning_curves``: columns ``mode``, ``n_train``, ``seed`` and
    metrics (optionally ``<m>_lo``/``<m>_hi``). ``sample_efficiency``: a
    :class:`~.analysis.SampleEfficiency`, its dict or a bare ratio; computed from
    ``learning_curves`` when omitted. ``examples``: dicts with ``query``,
    ``references`` (paths, arrays or PIL images), ``gold``, ``predicted``,
    ``probabilities``, ``options``, ``title``, ``caption`` (see
    :func:`examples_from_records`), or PNG bytes. ``findings``: sentences;
    generated by :func:`~.findings.findings_from` when omitted. ``metadata``: shown in the
    header (data set, model, date, config...); dict/list values as JSON.
    ``limitations``: text for "What this can and cannot show" (a default
    otherwise). ``sections``: extra :class:`ReportSection` bodies placed after the
    examples. ``core=False`` leaves out the single-experiment sections (metrics, paired
    tests, by k, sample efficiency, examples) for pages made of ``sections`` only (a
    suite of studies). ``anchor``: a published figure shown under the metrics table.
    """

    title: str
    summary: pd.DataFrame | None = None
    paired_tests: pd.DataFrame | None = None
    learning_curves: pd.DataFrame | None = None
    sample_efficiency: Any = None
    examples: Sequence[Any] | None = None
    findings: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    limitations: str | Sequence[str] | None = None
    metric: str = "auroc"
    sections: Sequence[ReportSection] = ()
    core: bool = True
    anchor: Mapping[str, Any] | None = None


def _efficiency(inputs: ReportInputs) -> SampleEfficiency | float | None:
    """The sample efficiency given, else the one the learning curves show."""
    efficiency = coerce_efficiency(inputs.sample_efficiency, inputs.metric)
    if efficiency is None and not is_empty(inputs.learning_curves):
        efficiency = coerce_efficiency(inputs.learning_curves, inputs.metric)
    return efficiency


def _metric_plot(inputs: ReportInputs) -> dict[str, str] | None:
    if is_empty(inputs.summary):
        return None
    png = plot_metric_by_k(inputs.summary, baselines=baselines_from_tests(inputs.paired_tests))
    return {"uri": png_data_uri(png), "caption": metric_by_k_caption(inputs.summary)} if png else None


def _curve_plot(inputs: ReportInputs) -> dict[str, str] | None:
    curves = inputs.learning_curves
    if is_empty(curves):
        return None
    png = plot_learning_curves(curves)
    metric = inputs.metric if inputs.metric in curves.columns else "accuracy"
    return {"uri": png_data_uri(png), "caption": learning_curve_caption(curves, metric)} if png else None


def _limitations(inputs: ReportInputs) -> list[str]:
    limitations = inputs.limitations
    if isinstance(limitations, str):
        return [limitations]
    return list(limitations) if limitations else list(DEFAULT_LIMITATIONS)


def _context(inputs: ReportInputs) -> dict[str, Any]:
    """The template's variables: every table, figure and sentence of the page as display data."""
    efficiency = _efficiency(inputs)
    findings = inputs.findings
    if findings is None:
        findings = findings_from(inputs.summary, inputs.paired_tests, efficiency, metric=inputs.metric)
    metric_plot, curve_plot = _metric_plot(inputs), _curve_plot(inputs)
    return {
        "title": inputs.title,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "metadata": _metadata_items(inputs.metadata),
        "findings": [str(f) for f in findings],
        "metrics_table": metrics_table(inputs.summary),
        "anchor": anchor_text(inputs.anchor),
        "paired_table": paired_table(inputs.paired_tests),
        "metric_plot": metric_plot,
        "curve_plot": curve_plot,
        "curve_table": learning_curve_table(inputs.learning_curves),
        "efficiency": efficiency_findings(efficiency) if efficiency is not None else [],
        "examples": [e for e in (_render_example(spec) for spec in (inputs.examples or [])) if e is not None],
        "limitations": _limitations(inputs),
        "sections": [{"anchor": x.anchor, "title": x.title, "html": Markup(x.html)} for x in inputs.sections],
        "core": inputs.core,
    }


def render_report(inputs: ReportInputs) -> str:
    """The report as one HTML string; see :func:`write_report`."""
    if not isinstance(inputs, ReportInputs):
        raise TypeError(f"render_report takes a ReportInputs, not {type(inputs).__name__}")
    return _environment().get_template("report.html.j2").render(**_context(inputs))


def write_report(out_path: str | Path, inputs: ReportInputs) -> Path:
    """Write a self-contained HTML report (figures as data URIs) of ``inputs`` and return its path."""
    return atomic_write_text(out_path, render_report(inputs))
