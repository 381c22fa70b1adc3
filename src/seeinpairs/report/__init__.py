"""A self-contained HTML report of single-vs-paired experiments.

The flow: :mod:`.analysis` reads the numbers (sample efficiency, each model's comparison),
:mod:`.findings` words them one claim at a time, :mod:`.tables`/:mod:`.plots` lay them out
and :mod:`.html` renders the page from one :class:`ReportInputs`; :mod:`.format` writes every
number the same way throughout.
"""

from .analysis import (
    ModelComparison,
    SampleEfficiency,
    compare_model,
    sample_efficiency,
    sample_efficiency_ratio,
)
from .findings import DEFAULT_LIMITATIONS, efficiency_findings, findings_from, model_findings
from .format import ci_cell, fmt, fmt_ci, fmt_delta, fmt_p
from .html import ReportInputs, ReportSection, examples_from_records, render_fragment, render_report, write_report
from .plots import (
    aggregate_curves,
    aggregate_seeds,
    baselines_from_tests,
    metric_by_k_figure,
    plot_example,
    plot_learning_curves,
    plot_metric_by_k,
    png_data_uri,
)
from .tables import anchor_metrics_text, metrics_table, paired_table

__all__ = [
    "DEFAULT_LIMITATIONS",
    "ModelComparison",
    "ReportInputs",
    "ReportSection",
    "SampleEfficiency",
    "aggregate_curves",
    "aggregate_seeds",
    "anchor_metrics_text",
    "baselines_from_tests",
    "ci_cell",
    "compare_model",
    "efficiency_findings",
    "examples_from_records",
    "findings_from",
    "fmt",
    "fmt_ci",
    "fmt_delta",
    "fmt_p",
    "metric_by_k_figure",
    "metrics_table",
    "model_findings",
    "paired_table",
    "plot_example",
    "plot_learning_curves",
    "plot_metric_by_k",
    "png_data_uri",
    "render_fragment",
    "render_report",
    "sample_efficiency",
    "sample_efficiency_ratio",
    "write_report",
]
