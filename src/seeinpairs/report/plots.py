"""Figures for the HTML report: metric by selector and k, learning curves, example panels.

Every plotting function draws with matplotlib's non-interactive Agg backend and
returns the figure as PNG bytes (``None`` when there is nothing to draw), and
optionally writes the same bytes to ``path``. Figures are small (about 100 dpi)
because the report embeds them as base64 data URIs to stay one self-contained
file; :func:`png_data_uri` makes such a URI.

The numbers drawn come from :mod:`.analysis` (:func:`~.analysis.aggregate_seeds`,
:func:`~.analysis.aggregate_curves`), which the tables and captions share.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .analysis import aggregate_curves, aggregate_seeds, metric_name
from .format import finite, format_probabilities

DPI = 100
#: the metrics drawn by default, in panel order
PLOT_METRICS = ("auroc", "accuracy")
_THUMBNAIL = 256


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding PNG bytes in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(nrows: int, ncols: int, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A figure on its own Agg canvas (no pyplot state, so no global backend switch and no leaks)."""
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _finish(fig: Figure, path: str | Path | None) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    png = buffer.getvalue()
    if path is not None:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
    return png


# ------------------------------------------------------------------- metric by selector and k
def _present(frame: pd.DataFrame | None, metrics: Sequence[str]) -> list[str]:
    if frame is None or frame.empty:
        return []
    return [m for m in metrics if m in frame.columns and pd.to_numeric(frame[m], errors="coerce").notna().any()]


def metric_by_k_caption(summary: pd.DataFrame | None) -> str:
    """How :func:`plot_metric_by_k` aggregated, in words, for the figure caption."""
    seeds = int(summary["seed"].nunique()) if summary is not None and "seed" in getattr(summary, "columns", []) else 1
    base = ("x = number of healthy references k; the single-image baseline (k=0) is the dashed line with its "
            "shaded band; one line per reference selector. ")
    if seeds <= 1:
        return base + "Error bars: 95% bootstrap CI over cases (one seed)."
    return base + (f"Points: mean over {seeds} seeds; error bars and band: envelope of the per-seed 95% bootstrap "
                   "CIs (lowest lower to highest upper bound), covering case sampling and seed variation.")


def _panels(data: pd.DataFrame, baselines: Mapping[str, str]) -> list[tuple[str, str]]:
    """(model, baseline model) per row of panels: each model with paired rows, drawn against its k=0 run.

    The baseline is the one named in ``baselines``, else the model's own k=0 run, else the only model
    that has a k=0 run (a study's separately trained single-image model). A model that only serves as
    another's baseline gets no row of its own.
    """
    models = list(dict.fromkeys(data["model"]))
    with_single = [m for m in models if (data[(data["model"] == m)]["k"] == 0).any()]
    with_paired = [m for m in models if (data[(data["model"] == m)]["k"] > 0).any()]
    out = []
    for model in with_paired:
        baseline = baselines.get(model)
        if baseline not in with_single:
            baseline = model if model in with_single else (with_single[0] if len(with_single) == 1 else model)
        out.append((model, baseline))
    serving = {b for _, b in out}
    out += [(m, m) for m in with_single if m not in with_paired and m not in serving]
    return out


def _draw_single(ax: Any, single: pd.DataFrame, label: str) -> None:
    """The single-image value as a dashed line across the panel, with its interval as a shaded band."""
    if single.empty or not finite(single["value"].iloc[0]):
        return
    s = single.iloc[0]
    ax.axhline(s["value"], color="black", linestyle="--", linewidth=1.2, label=label)
    if finite(s["lo"]) and finite(s["hi"]):
        ax.axhspan(s["lo"], s["hi"], color="grey", alpha=0.18, linewidth=0, label="single-image 95% CI")
    ax.plot([0], [s["value"]], marker="s", color="black")


def _draw_selectors(ax: Any, paired: pd.DataFrame, ks: list[int]) -> None:
    """One line with error bars per selector, dodged sideways so that the bars do not hide each other."""
    selectors = list(dict.fromkeys(paired["selector"]))
    width = 0.06 * max(1, (max(ks) - min(ks)) if len(ks) > 1 else 1)
    for i, selector in enumerate(selectors):
        part = paired[paired["selector"] == selector].sort_values("k")
        part = part[np.isfinite(part["value"].to_numpy(dtype=float))]
        if part.empty:
            continue
        offset = (i - (len(selectors) - 1) / 2) * width
        x = part["k"].to_numpy(dtype=float) + offset
        y = part["value"].to_numpy(dtype=float)
        lo = part["lo"].to_numpy(dtype=float)
        hi = part["hi"].to_numpy(dtype=float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        err = np.vstack([np.where(ok, y - lo, 0.0), np.where(ok, hi - y, 0.0)]).clip(min=0)
        ax.errorbar(x, y, yerr=err, marker="o", markersize=4, capsize=3, linewidth=1.3, label=selector)


def metric_by_k_figure(
    summary: pd.DataFrame | None,
    metrics: Sequence[str] = PLOT_METRICS,
    baselines: Mapping[str, str] | None = None,
) -> Figure | None:
    """The figure of :func:`plot_metric_by_k` (for callers and tests that inspect it); ``None`` if empty."""
    metrics = _present(summary, metrics)
    if not metrics:
        return None
    aggregated = {m: aggregate_seeds(summary, m) for m in metrics}
    panels = _panels(aggregated[metrics[0]], baselines or {})
    fig, axes = _figure(len(panels), len(metrics), (4.4 * len(metrics) + 1.6, 3.3 * len(panels)))
    for row, (model, baseline) in enumerate(panels):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            data = aggregated[metric]
            single = data[(data["model"] == baseline) & (data["k"] == 0)]
            paired = data[(data["model"] == model) & (data["k"] > 0)]
            ks = sorted(set(paired["k"].tolist()) | {0})
            of = f", {baseline}" if baseline != model and baseline else ""
            _draw_single(ax, single, f"single-image (k=0{of})")
            _draw_selectors(ax, paired, ks)
            ax.set_xticks(ks)
            ax.set_xlabel("k (healthy references)")
            ax.set_ylabel(metric_name(metric))
            title = metric_name(metric) if len(panels) == 1 or not model else f"{model}: {metric_name(metric)}"
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            if col == len(metrics) - 1:
                ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot_metric_by_k(
    summary: pd.DataFrame | None,
    metrics: Sequence[str] = PLOT_METRICS,
    path: str | Path | None = None,
    baselines: Mapping[str, str] | None = None,
) -> bytes | None:
    """Panels of metric vs k, one column per metric and one row per model with paired conditions.

    Every panel carries the single-image (k=0) value as a dashed line with its CI band, that of the
    model named in ``baselines`` (see :func:`baselines_from_tests`) when the single-image model is a
    different one, and a legend naming each reference selector. ``None`` if nothing to draw.
    """
    fig = metric_by_k_figure(summary, metrics, baselines)
    return None if fig is None else _finish(fig, path)


# ------------------------------------------------------------------- learning curves
def learning_curve_caption(curves: pd.DataFrame | None, metric: str = "auroc") -> str:
    """How :func:`plot_learning_curves` drew its bands, in words."""
    agg = aggregate_curves(curves, metric)
    kinds = set(agg["band"]) if not agg.empty else set()
    parts = ["x = training-set size n (log2 scale); lines: mean over seeds per mode."]
    if kinds == {"seeds"}:
        parts.append("Bands: min-max over seeds.")
    elif kinds == {"bootstrap"}:
        parts.append("Bands: 95% bootstrap CI over evaluation cases (one seed).")
    elif kinds == {"none"} or not kinds:
        parts.append("No bands: one seed and no CI columns.")
    else:
        parts.append("Bands: min-max over seeds where there are several, the run's 95% bootstrap CI where there "
                     "is one seed (none where neither exists).")
    return " ".join(parts)


_MODE_COLOURS = {"single": "tab:blue", "paired": "tab:orange"}


def plot_learning_curves(
    curves: pd.DataFrame | None,
    metrics: Sequence[str] = PLOT_METRICS,
    path: str | Path | None = None,
) -> bytes | None:
    """Metric vs training-set size per mode (single/paired), one panel per metric; ``None`` if nothing to draw.

    Rows with ``n_train <= 0`` (e.g. zero-shot) cannot sit on a log axis and
    are drawn as dotted horizontal lines instead.
    """
    metrics = _present(curves, metrics)
    if not metrics or "n_train" not in curves.columns:
        return None
    fig, axes = _figure(1, len(metrics), (4.4 * len(metrics), 3.3))
    for col, metric in enumerate(metrics):
        ax = axes[0][col]
        agg = aggregate_curves(curves, metric)
        drew = False
        order = {"single": 0, "paired": 1}
        keys = sorted(agg.groupby(["model", "mode"], sort=False).groups,
                      key=lambda mm: (mm[0], order.get(mm[1], 2), mm[1]))
        for model, mode in keys:
            part = agg[(agg["model"] == model) & (agg["mode"] == mode)]
            label = mode if agg["model"].nunique() <= 1 or not model else f"{model} {mode}"
            colour = _MODE_COLOURS.get(mode) if agg["model"].nunique() <= 1 else None
            zero = part[part["n_train"] <= 0]
            part = part[(part["n_train"] > 0) & np.isfinite(part["value"].to_numpy(dtype=float))]
            if not part.empty:
                x = part["n_train"].to_numpy(dtype=float)
                line = ax.plot(x, part["value"], marker="o", markersize=4, label=label, color=colour)[0]
                lo, hi = part["lo"].to_numpy(dtype=float), part["hi"].to_numpy(dtype=float)
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any():
                    ax.fill_between(x[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, linewidth=0)
                drew = True
            for value in zero["value"]:
                if finite(value):
                    ax.axhline(value, linestyle=":", color=colour or "grey", label=f"{label} (n=0)")
        if drew:
            ax.set_xscale("log", base=2)
            ladder = sorted(v for v in agg["n_train"].unique() if v > 0)
            if len(ladder) <= 12:
                ax.set_xticks(ladder)
                ax.set_xticklabels([f"{v:g}" for v in ladder])
                ax.minorticks_off()
        ax.set_xlabel("training cases n")
        ax.set_ylabel(metric_name(metric))
        ax.set_title(metric_name(metric), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if col == len(metrics) - 1:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _finish(fig, path)


# ------------------------------------------------------------------- examples
def _as_image(source: Any) -> Image.Image | None:
    """A PIL image from a path, an array or an image; ``None`` when it cannot be opened."""
    from ..errors import SeeInPairsError
    from ..imaging import array_to_image, load_image

    try:
        if isinstance(source, Image.Image):
            image = source.convert("RGB")
        elif isinstance(source, np.ndarray):
            image = array_to_image(source)
        elif source is None:
            return None
        else:
            image = load_image(source)
    except (SeeInPairsError, OSError, ValueError):
        return None
    image = image.copy()
    image.thumbnail((_THUMBNAIL, _THUMBNAIL))
    return image


def plot_example(
    query: Any,
    references: Sequence[Any] = (),
    *,
    title: str | None = None,
    gold: str | None = None,
    predicted: str | None = None,
    probabilities: Any = None,
    options: Sequence[str] | None = None,
    reference_labels: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> bytes:
    """The references (left to right) then the query, with gold/predicted/probabilities in the title.

    Images are paths (any format :func:`seeinpairs.imaging.load_image` opens),
    arrays or PIL images; one that cannot be opened shows as a grey panel
    saying so instead of failing the report. The query is framed green when
    ``predicted == gold``, red when not, grey when either is unknown.
    """
    references = list(references or [])
    panels = [(ref, (reference_labels[i] if reference_labels and i < len(reference_labels) else f"reference {i + 1}"))
              for i, ref in enumerate(references)]
    panels.append((query, "query"))
    fig, axes = _figure(1, len(panels), (2.1 * len(panels), 2.6))
    if gold is not None and predicted is not None:
        frame_colour = "tab:green" if str(gold) == str(predicted) else "tab:red"
    else:
        frame_colour = "grey"
    for i, (source, label) in enumerate(panels):
        ax = axes[0][i]
        image = _as_image(source)
        if image is None:
            ax.imshow(np.full((8, 8, 3), 200, dtype=np.uint8))
            ax.text(0.5, 0.5, "image not\navailable", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        else:
            ax.imshow(np.asarray(image), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        is_query = i == len(panels) - 1
        ax.set_title(label, fontsize=8, fontweight="bold" if is_query else "normal")
        if is_query:
            for spine in ax.spines.values():
                spine.set_edgecolor(frame_colour)
                spine.set_linewidth(3)
    lines = [title] if title else []
    detail = []
    if gold is not None:
        detail.append(f"gold: {gold}")
    if predicted is not None:
        detail.append(f"predicted: {predicted}")
    probs = format_probabilities(probabilities, options)
    if probs:
        detail.append(f"p: {probs}")
    if detail:
        lines.append("  |  ".join(detail))
    if lines:
        fig.suptitle("\n".join(lines), fontsize=8)
    fig.tight_layout()
    return _finish(fig, path)
