"""A self-contained HTML report of single-vs-paired experiments.

The flow: :mod:`.analysis` reads the numbers (sample efficiency, each model's comparison),
:mod:`.findings` words them one claim at a time, :mod:`.tables`/:mod:`.plots` lay them out
and :mod:`.html` renders the page from one :class:`ReportInputs`; :mod:`.format` writes every
number the same way throughout.
"""

from importlib import import_module
from typing import Any

#: public name -> submodule; loaded on first use so that a caller of the numbers alone
#: (:mod:`.analysis`, :mod:`.tables`) does not import matplotlib and Jinja2
_EXPORTS = {
    "ModelComparison": "analysis", "SampleEfficiency": "analysis", "aggregate_curves": "analysis",
    "aggregate_seeds": "analysis", "baselines_from_tests": "analysis", "compare_model": "analysis",
    "sample_efficiency": "analysis", "sample_efficiency_ratio": "analysis",
    "DEFAULT_LIMITATIONS": "findings", "efficiency_findings": "findings", "findings_from": "findings",
    "model_findings": "findings",
    "ci_cell": "format", "fmt": "format", "fmt_ci": "format", "fmt_delta": "format", "fmt_p": "format",
    "ReportInputs": "html", "ReportSection": "html", "examples_from_records": "html", "render_fragment": "html",
    "render_report": "html", "write_report": "html",
    "metric_by_k_figure": "plots", "plot_example": "plots", "plot_learning_curves": "plots",
    "plot_metric_by_k": "plots", "png_data_uri": "plots",
    "anchor_metrics_text": "tables", "metrics_table": "tables", "paired_table": "tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
