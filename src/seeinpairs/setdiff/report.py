"""The set-difference report section: acc@k per method (with CIs, per difficulty), and per pair the
ranked hypotheses with AUROC, effect size, Welch p and judge score, beside example images of each set.

The section is a :class:`~seeinpairs.report.ReportSection` for the main report;
:func:`write_setdiff_report` also writes it as a standalone page.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ImageError
from ..imaging import load_image
from ..report import ReportSection, fmt_ci, fmt_p, png_data_uri, render_fragment
from .inputs import SetPair
from .pipeline import SetDiffRun

THUMBNAIL = 64


def _thumbnail(path: str) -> str | None:
    try:
        image = load_image(path)
    except ImageError:  # a missing example image must not break the report; it is shown as absent
        return None
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return png_data_uri(buffer.getvalue())


def _num(value: Any, digits: int = 2) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "NA"
    if math.isnan(value):
        return "NA"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def summary_rows(run: SetDiffRun) -> tuple[list[str], list[list[str]]]:
    frame = run.summary()
    metrics = [c for c in frame.columns if c.startswith("acc@") and not c.endswith(("_lo", "_hi"))]
    columns = ["method", "difficulty", "pairs", *metrics, "hypotheses / pair", "judge parse failures"]
    rows = [[str(r["method"]), str(r["difficulty"]), str(int(r["n_pairs"])),
             *[fmt_ci(r[m], r[f"{m}_lo"], r[f"{m}_hi"], digits=2, ci_digits=2) for m in metrics],
             _num(r["mean_hypotheses"], 1), str(int(r["judge_parse_failures"]))] for _, r in frame.iterrows()]
    return columns, rows


def setdiff_section(run: SetDiffRun, pairs: Sequence[SetPair], primary: str | None = None, top: int = 5,
                    max_pairs: int | None = None, training: Mapping[str, Any] | None = None,
                    seconds: Mapping[str, float] | None = None, notes: Sequence[str] = ()) -> ReportSection:
    """The section for ``run``: the summary table for all methods, pair details for ``primary``;
    ``notes``: sentences shown under the table (what the methods are, caveats)."""
    primary = primary or run.methods[0]
    by_id = {p.pair_id: p for p in pairs}
    columns, rows = summary_rows(run)
    details = []
    for outcome in [o for o in run.outcomes if o.method == primary][:max_pairs]:
        pair = by_id.get(outcome.pair_id)
        hypotheses = [{"rank": i + 1, "text": r.text, "auroc": _num(r.auroc), "effect": _num(r.effect_size),
                       "difference": _num(r.mean_difference), "p": fmt_p(r.p_value), "score": j.score,
                       "parsed": j.parsed}
                      for i, (r, j) in enumerate(zip(outcome.ranked[:top], outcome.judgements[:top]))]
        examples = None
        if pair is not None and outcome.ranked:
            ex = outcome.ranked[0].examples
            examples = {key: [u for i in ex.get(key, []) if (u := _thumbnail(
                (pair.set1 if key.startswith("set1") else pair.set2).images[i])) is not None]
                for key in ("set1_most", "set1_least", "set2_most", "set2_least")}
        others = {o.method: o.acc(1) for o in run.outcomes if o.pair_id == outcome.pair_id}
        details.append({"pair_id": outcome.pair_id, "difficulty": outcome.difficulty or "",
                        "set1": (outcome.truth.get("set1") or outcome.truth.get("difference") or ""),
                        "set2": outcome.truth.get("set2") or "", "hypotheses": hypotheses, "examples": examples,
                        "acc1": {m: _num(v) for m, v in others.items()}, "acc5": _num(outcome.acc(5))})
    html = render_fragment("setdiff.html.j2", columns=columns, rows=rows, primary=primary, details=details,
                           notes=list(notes),
                           judge=run.judge, settings=run.settings, training=dict(training or {}),
                           seconds={k: _num(v, 0) for k, v in (seconds or {}).items()}, top=top)
    return ReportSection(anchor="setdiff", title="Set differences: what distinguishes set 1 from set 2", html=html)


def write_setdiff_report(path: str | Path, section: ReportSection, title: str = "Set-difference description") -> Path:
    """A standalone HTML page holding ``section`` (self-contained: images are data URIs)."""
    html = render_fragment("setdiff_page.html.j2", title=title, section=section,
                           generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
