"""The evidence section of the HTML report: tables with intervals, layer curves, overlays, findings."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..report import ReportSection, ci_cell, fmt, render_fragment
from ..report.plots import png_data_uri
from .evidence import EvidenceResult
from .overlay import METHOD_TITLES

LAYER_METRICS = (("probe_accuracy", "linear-probe accuracy"), ("cosine_margin", "cosine margin (gold - other class)"),
                 ("cka", "linear CKA with gold-class text"))


def _method(name: str) -> str:
    return METHOD_TITLES.get(name, name)


def _table(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"columns": columns, "rows": rows}


def _excludes_zero(lo: float, hi: float) -> bool:
    return np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0)


def layer_plot(layers: pd.DataFrame) -> bytes:
    """Probe accuracy, cosine margin and CKA per layer, single vs paired."""
    fig = Figure(figsize=(9, 2.8), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(LAYER_METRICS))
    for ax, (metric, title) in zip(axes, LAYER_METRICS):
        for model, group in layers.groupby("model", sort=False):
            ax.plot(group["layer"], group[metric], marker="o", label=model)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def evidence_findings(result: EvidenceResult) -> list[str]:
    """Plain sentences from the numbers, whichever way they point."""
    lines = []
    for _, row in result.localization_delta.iterrows():
        if row["metric"] != "energy_inside":
            continue
        verdict = ("the interval excludes 0" if _excludes_zero(row["delta_lo"], row["delta_hi"])
                   else "the interval includes 0, so no difference is shown")
        lines.append(f"{_method(row['method'])}: energy inside the lesion mask, paired minus single = "
                     f"{row['delta']:+.3f} [{row['delta_lo']:+.3f}, {row['delta_hi']:+.3f}] over {row['n']} cases; {verdict}.")
    summary = result.localization_summary
    for _, row in summary.iterrows():
        if row["energy_inside_lo"] <= row["chance"] <= row["energy_inside_hi"]:
            lines.append(f"{row['model']} model, {_method(row['method'])}: energy inside the mask "
                         f"({row['energy_inside']:.3f}) is not distinguishable from a uniform map ({row['chance']:.3f}).")
    for _, row in result.reference_share.iterrows():
        lines.append(f"{_method(row['method'])}: {row['reference_share']:.0%} of the paired model's attribution "
                     f"falls on the reference images.")
    swaps = result.swap_summary
    for _, row in swaps[swaps["swap"] == "abnormal"].iterrows():
        moved = _excludes_zero(row["delta_p_healthy_lo"], row["delta_p_healthy_hi"])
        lines.append(f"Abnormal references instead of healthy ones changed P(healthy) for {row['gold']} queries by "
                     f"{row['delta_p_healthy']:+.3f} [{row['delta_p_healthy_lo']:+.3f}, {row['delta_p_healthy_hi']:+.3f}]"
                     + ("" if moved else ": no reliable change, the references are not measurably used")
                     + f"; the answer changed for {row['answer_changed']:.0%} of them.")
    return lines


def evidence_section(result: EvidenceResult, title: str = "Evidence: attribution, localization, reference use") -> ReportSection:
    """The report section for an :class:`EvidenceResult`."""
    cfg = result.config
    loc = result.localization_summary
    localization = _table(
        ["model", "method", "n", "pointing game [95% CI]", "energy inside mask [95% CI]", "chance (mask area)"],
        [[r["model"], _method(r["method"]), int(r["n"]),
          ci_cell(r["pointing_game"], r["pointing_game_lo"], r["pointing_game_hi"]),
          ci_cell(r["energy_inside"], r["energy_inside_lo"], r["energy_inside_hi"]), fmt(r["chance"])]
         for _, r in loc.iterrows()]) if not loc.empty else None
    delta = _table(["method", "score", "n", "paired - single [95% paired bootstrap CI]"],
                   [[_method(r["method"]), r["metric"].replace("_", " "), int(r["n"]),
                     f"{r['delta']:+.3f} [{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}]"]
                    for _, r in result.localization_delta.iterrows()]) if not result.localization_delta.empty else None
    share = _table(["method", "n", "share of attribution on references [95% CI]"],
                   [[_method(r["method"]), int(r["n"]), ci_cell(r["reference_share"], r["reference_share_lo"],
                                                                 r["reference_share_hi"])]
                    for _, r in result.reference_share.iterrows()]) if not result.reference_share.empty else None
    swaps = _table(["references swapped for", "query gold", "n", "change in P(healthy) [95% CI]", "answer changed"],
                   [[r["swap"].replace("_", " "), r["gold"], int(r["n"]),
                     f"{r['delta_p_healthy']:+.3f} [{r['delta_p_healthy_lo']:+.3f}, {r['delta_p_healthy_hi']:+.3f}]",
                     f"{r['answer_changed']:.0%}"] for _, r in result.swap_summary.iterrows()]) \
        if not result.swap_summary.empty else None
    layers = None
    plot = None
    if not result.layers.empty:
        wide = result.layers
        layers = _table(["model", "layer", "probe accuracy", "cosine to gold text", "cosine margin", "CKA"],
                        [[r["model"], int(r["layer"]), fmt(r["probe_accuracy"]), fmt(r["cosine_gold"]),
                          fmt(r["cosine_margin"]), fmt(r["cka"])] for _, r in wide.iterrows()])
        plot = {"uri": png_data_uri(layer_plot(wide)),
                "caption": "Per layer of the language model, the query image's mean hidden state: 5-fold linear-probe "
                           "accuracy of the label, cosine margin to the class-description text states, and linear CKA "
                           "with the gold class's text state; single-image vs paired prompt on the same cases."}
    intro = (f"Maps toward the gold class for {cfg.get('n_localization')} abnormal cases with lesion masks (split "
             f"'{cfg.get('split')}'); the paired model sees k={cfg.get('k')} reference(s) chosen by "
             f"'{cfg.get('selector')}'. Scores use absolute attribution; a uniform map scores the mask's area fraction "
             "(chance). Intervals are 95% bootstrap intervals (BCa) over cases.")
    overlays = [{"uri": png_data_uri(png), "caption": f"Case {case_id}: one row per image (the references, then the "
                 "query), the image itself then each method's map over it for the paired and the single model; colour: "
                 "absolute attribution scaled 0-1 within each image, so compare shapes, not intensities across cells; "
                 "the lesion mask is outlined in cyan on the query."} for case_id, png in result.overlays]
    body = render_fragment("evidence.html.j2", intro=intro, findings=evidence_findings(result),
                           localization=localization, delta=delta, share=share, swaps=swaps, layer_plot=plot,
                           layers=layers, overlays=overlays)
    return ReportSection("evidence", title, body)
