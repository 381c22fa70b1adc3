"""A self-contained HTML report of single-vs-paired experiments: tables, figures, findings."""

from .html import (
    DEFAULT_LIMITATIONS,
    ReportSection,
    SampleEfficiency,
    examples_from_records,
    findings_from,
    fmt_ci,
    fmt_delta,
    fmt_p,
    render_fragment,
    render_report,
    sample_efficiency,
    sample_efficiency_ratio,
    write_report,
)
from .plots import (
    aggregate_curves,
    aggregate_seeds,
    plot_example,
    plot_learning_curves,
    plot_metric_by_k,
    png_data_uri,
)

__all__ = [
    "DEFAULT_LIMITATIONS",
    "ReportSection",
    "SampleEfficiency",
    "aggregate_curves",
    "aggregate_seeds",
    "examples_from_records",
    "findings_from",
    "fmt_ci",
    "fmt_delta",
    "fmt_p",
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
