"""The multi-image QA report section: per-ability accuracy against chance, before and after
multi-image SFT, the single-image ablation, generate-and-parse, and open-ended metrics.

Findings are written from the numbers as measured: an after-SFT accuracy is
called above chance only when its interval excludes chance, and the ablation
gap is reported whatever its sign.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..report import ReportSection, fmt_ci, fmt_delta, png_data_uri, render_fragment

ANCHOR = "multi-image-qa"
TITLE = "Multi-image QA (Med-MIM format)"


def _lookup(summary: pd.DataFrame | None, level: str, group: str) -> dict[str, Any]:
    if summary is None or summary.empty:
        return {}
    rows = summary[(summary["level"] == level) & (summary["group"] == group)]
    return rows.iloc[0].to_dict() if len(rows) else {}


def _acc(row: Mapping[str, Any]) -> str:
    if not row or not row.get("n"):
        return "NA"
    return fmt_ci(row.get("accuracy"), row.get("accuracy_lo"), row.get("accuracy_hi"))


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def ability_table(conditions: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Rows per (level, group) of the first condition: n, chance and each condition's accuracy [CI]."""
    first = next(iter(conditions.values()))
    keys = [(r["level"], r["group"]) for _, r in first.iterrows() if r["level"] in ("subset", "split", "macro")]
    order = {"subset": 0, "split": 1, "macro": 2}
    keys.sort(key=lambda k: (order[k[0]], k[1]))
    columns = ["group", "n", "chance", *conditions]
    rows = []
    for level, group in keys:
        base = _lookup(first, level, group)
        label = {"subset": group, "split": f"{group} (all items)", "macro": f"{group} (mean of abilities)"}[level]
        cells = [label, str(int(base.get("n", 0))), f"{_num(base.get('chance')):.3f}"]
        for summary in conditions.values():
            row = _lookup(summary, level, group)
            cells.append(_acc(row) if level != "macro" else (f"{_num(row.get('accuracy')):.3f}" if row else "NA"))
        rows.append(cells)
    return {"columns": columns, "rows": rows}


def open_table(summary: pd.DataFrame | None) -> dict[str, Any] | None:
    if summary is None or summary.empty or "n_open" not in summary or not summary["n_open"].fillna(0).any():
        return None
    metrics = [c for c in summary.columns if c.startswith("open_") and not c.endswith(("_lo", "_hi"))]
    rows = []
    for _, row in summary[summary["level"].isin(["subset", "all"])].iterrows():
        if not row.get("n_open"):
            continue
        rows.append([row["group"], str(int(row["n_open"]))] + [fmt_ci(row.get(m), row.get(f"{m}_lo"), row.get(f"{m}_hi"))
                                                              for m in metrics])
    return {"columns": ["group", "n open-ended", *[m.removeprefix("open_") for m in metrics]], "rows": rows}


def accuracy_plot(conditions: Mapping[str, pd.DataFrame]) -> bytes | None:
    """Grouped bars: per ability, each condition's accuracy with its CI, and chance as a tick."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first = next(iter(conditions.values()))
    groups = sorted(first[first["level"] == "subset"]["group"])
    if not groups:
        return None
    width = 0.8 / len(conditions)
    fig = Figure(figsize=(1.6 + 1.3 * len(groups), 3.2), dpi=110)
    FigureCanvasAgg(fig)  # its own canvas: no pyplot state
    ax = fig.subplots()
    x = np.arange(len(groups))
    for i, (name, summary) in enumerate(conditions.items()):
        rows = [_lookup(summary, "subset", g) for g in groups]
        acc = np.array([_num(r.get("accuracy")) for r in rows])
        lo = np.array([_num(r.get("accuracy_lo")) for r in rows])
        hi = np.array([_num(r.get("accuracy_hi")) for r in rows])
        ax.bar(x + (i - (len(conditions) - 1) / 2) * width, acc, width, label=name,
               yerr=np.vstack([acc - lo, hi - acc]), capsize=2)
    chance = [_num(_lookup(first, "subset", g).get("chance")) for g in groups]
    ax.scatter(x, chance, marker="_", s=900, color="black", label="chance", zorder=3)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (multiple choice)")
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def findings(conditions: Mapping[str, pd.DataFrame], before: str, after: str, ablation: str | None,
             gaps: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences from the numbers: above chance or not, the SFT change, the ablation gap."""
    out: list[str] = []
    after_summary = conditions.get(after)
    before_summary = conditions.get(before)
    if after_summary is None:
        return out
    groups = sorted(after_summary[after_summary["level"] == "subset"]["group"])
    above = [g for g in groups if _num(_lookup(after_summary, "subset", g).get("accuracy_lo"))
             > _num(_lookup(after_summary, "subset", g).get("chance"))]
    not_above = [g for g in groups if g not in above]
    if above:
        out.append(f"After multi-image SFT, accuracy is above chance (95% interval excludes it) for: {', '.join(above)}.")
    if not_above:
        out.append(f"After multi-image SFT, accuracy is not distinguishable from chance (or below) for: "
                   f"{', '.join(not_above)}.")
    if before_summary is not None:
        b, a = _lookup(before_summary, "split", "held_in"), _lookup(after_summary, "split", "held_in")
        if b and a:
            out.append(f"Held-in accuracy over all items: {_num(b.get('accuracy')):.3f} before SFT, "
                       f"{_num(a.get('accuracy')):.3f} after (chance {_num(a.get('chance')):.3f}).")
    if gaps is not None and not gaps.empty:
        rows = gaps[gaps["level"] == "subset"]
        text = ", ".join(f"{r['group']} {fmt_delta(r['delta'], r['delta_lo'], r['delta_hi'], digits=2)}"
                         for _, r in rows.iterrows())
        clear = [r["group"] for _, r in rows.iterrows() if _num(r["delta_lo"]) > 0]
        out.append("All images minus only the first image, after SFT, on the same items (paired 95% interval; "
                   "positive: the answers depend on seeing the images together): " + text + ".")
        out.append(("The interval excludes 0 for: " + ", ".join(clear) + ".") if clear else
                   "For no ability does the paired interval exclude 0.")
    elif ablation is not None and ablation in conditions:
        deltas = []
        for g in groups:
            full, single = _lookup(after_summary, "subset", g), _lookup(conditions[ablation], "subset", g)
            if full and single:
                deltas.append(f"{g} {_num(full.get('accuracy')) - _num(single.get('accuracy')):+.3f}")
        if deltas:
            out.append("All images minus only the first image, after SFT (positive: the answers depend on seeing the "
                       "images together): " + ", ".join(deltas) + ".")
    return out


def mim_section(conditions: Mapping[str, pd.DataFrame], before: str = "before SFT", after: str = "after SFT",
                ablation: str | None = "after SFT, first image only", generate: pd.DataFrame | None = None,
                training: Mapping[str, Any] | None = None, notes: Sequence[str] = (),
                gaps: pd.DataFrame | None = None) -> ReportSection:
    """The report section from per-condition summaries (``evaluate(...).summary`` frames by name);
    ``gaps``: :func:`~.metrics.paired_difference` of the full and the single-image predictions."""
    conditions = {k: v for k, v in conditions.items() if v is not None and not v.empty}
    if not conditions:
        return ReportSection(ANCHOR, TITLE, render_fragment("mim.html.j2", empty=True, findings=[], table=None,
                                                            plot=None, generate=None, open_table=None,
                                                            training=None, notes=list(notes)))
    plot = accuracy_plot(conditions)
    generate_row = _lookup(generate, "split", "held_in") if generate is not None else {}
    generate_info = None
    if generate_row:
        generate_info = {"accuracy": _acc(generate_row), "parse": f"{_num(generate_row.get('parse_failure_rate')):.3f}",
                         "n": int(generate_row.get("n", 0)),
                         "mismatch": f"{_num(generate_row.get('letter_text_mismatch_rate')):.3f}"}
    html = render_fragment(
        "mim.html.j2", empty=False, findings=findings(conditions, before, after, ablation, gaps),
        table=ability_table(conditions), plot=png_data_uri(plot) if plot else None, generate=generate_info,
        open_table=open_table(conditions.get(after)), training=dict(training or {}), notes=list(notes))
    return ReportSection(ANCHOR, TITLE, html)
