"""The evidence analysis of a single-image and a comparative model on the same cases.

It answers three questions with numbers and intervals:

* **Where does the evidence sit?** Attribution maps of the query toward its gold
  (abnormal) class, scored against lesion masks (pointing game, energy inside
  the mask, each beside its chance level), single vs paired with a paired
  bootstrap interval of the difference.
* **Does the paired model use its references?** The share of attribution mass
  on the reference images, and the reference swap test (random healthy or
  abnormal references in place of the selected ones).
* **How does the query's representation change through the layers?** Cosine
  and CKA alignment with the class-description text states and a linear probe
  per layer, single vs paired.

:func:`evidence_section` turns the result into a report section.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..atomic import FileSet
from ..runtime import environment_record
from ..backends.base import Backend
from ..cases import Case, CaseTable, case_rng
from ..evaluation.stats import bootstrap_mean_ci, bootstrap_mean_delta_ci
from ..imaging import load_image
from ..prompts import PromptBuilder
from ..references.bank import ReferenceBank
from ..references.selectors import create_selector
from ..tasks import Task
from .attribution import Explanation, RequestExplainer
from .counterfactual import reference_swap_test
from .localization import chance_energy, energy_inside, load_mask, pointing_game
from .overlay import METHOD_TITLES, overlay_png
from .representation import layer_alignment, query_states, text_states


class EvidenceConfig(BaseModel):
    """What the evidence analysis computes, and on how many cases."""

    model_config = ConfigDict(extra="forbid")

    split: str = "test"
    #: abnormal cases with a mask scored for localization (per model)
    n_localization: int = Field(40, ge=1)
    #: cases for the swap test and the representation analysis (balanced over labels where possible)
    n_cases: int = Field(80, ge=2)
    methods: list[str] = Field(default_factory=lambda: ["grad_x_input", "attention"])
    ig_steps: int = Field(16, ge=1)
    selector: str = "random"
    selector_params: dict[str, Any] = Field(default_factory=dict)
    k: int = Field(1, ge=1)
    #: the ``extra`` field of a case that holds its lesion mask path (relative paths: against ``mask_root``)
    mask_field: str = "mask"
    n_overlays: int = Field(3, ge=0)
    n_boot: int = Field(1000, ge=1)
    seed: int = 0


@dataclass
class EvidenceResult:
    localization: pd.DataFrame          # per (model, method, case): pointing, energy, chance
    localization_summary: pd.DataFrame  # per (model, method): means with CIs
    localization_delta: pd.DataFrame    # per method: paired - single, paired bootstrap CI
    reference_share: pd.DataFrame       # per method: share of attribution on the references
    swaps: pd.DataFrame                 # per (case, swap)
    swap_summary: pd.DataFrame          # per (swap, gold)
    layers: pd.DataFrame                # per (model, layer)
    overlays: list[tuple[str, bytes]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        """Tables as CSV, overlays as PNG, the config and where it was computed as JSON under ``out_dir``."""
        out = Path(out_dir)
        with FileSet(out, "evidence") as files:  # a kill leaves the old evidence or the new, never a mixture
            for name in ("localization", "localization_summary", "localization_delta", "reference_share", "swaps",
                         "swap_summary", "layers"):
                getattr(self, name).to_csv(files.path(f"{name}.csv"), index=False)
            for index, (_, png) in enumerate(self.overlays):
                files.path(f"overlay_{index}.png").write_bytes(png)
            for earlier in out.glob("overlay_*.png"):  # an earlier, longer run's overlays are not this run's
                files.remove(earlier.name)
            files.path("evidence_config.json").write_text(json.dumps(self.config, indent=2, default=str))
            files.path("environment.json").write_text(json.dumps(environment_record(), indent=2))
        return out


def _mask_path(case: Case, field_name: str, mask_root: Path | None) -> Path | None:
    value = case.extra.get(field_name)
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() or mask_root is None else mask_root / path


def _balanced(cases: Sequence[Case], n: int, classes: Sequence[str], seed: int) -> list[Case]:
    """Up to ``n`` cases, interleaving the classes, in a seeded order."""
    rng = np.random.default_rng(seed)
    pools = {c: [x for x in cases if x.label == c] for c in classes}
    for pool in pools.values():
        rng.shuffle(pool)
    chosen: list[Case] = []
    while len(chosen) < n and any(pools.values()):
        for c in classes:
            if pools[c] and len(chosen) < n:
                chosen.append(pools[c].pop())
    return chosen


def _paired_delta(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float, int]:
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    delta, lo, hi = bootstrap_mean_delta_ci(a, b, n_boot=n_boot, seed=seed)
    return delta, lo, hi, int(a.size)


class EvidenceRunner:
    """Runs the analysis for a single-image and a paired HF model on one case table."""

    def __init__(self, single: Backend, paired: Backend, table: CaseTable, task: Task, bank: ReferenceBank,
                 config: EvidenceConfig, mask_root: str | Path | None = None) -> None:
        self.single, self.paired = single, paired
        self.table, self.task, self.bank, self.config = table, task, bank, config
        self.mask_root = Path(mask_root) if mask_root is not None else None
        self.loader = load_image
        self.prompts = PromptBuilder(task, image_loader=self.loader)
        self.selector = create_selector(config.selector, bank, **config.selector_params)

    def _select(self, case: Case):
        return self.selector.select(case, self.config.k, case_rng(self.config.seed, case.case_id))

    def _explain(self, backend: Backend, case: Case, paired: bool, option: str | None) -> Explanation:
        explainer = RequestExplainer.from_backend(backend, ig_steps=self.config.ig_steps)
        references = self._select(case).references if paired else []
        return explainer.explain(self.prompts.build(case, references), option=option, methods=self.config.methods)

    def localization(self) -> tuple[pd.DataFrame, list[tuple[str, bytes]]]:
        cfg = self.config
        abnormal = [c for c in self.table if c.split == cfg.split and c.label is not None
                    and c.label != self.task.healthy_class and _mask_path(c, cfg.mask_field, self.mask_root)]
        cases = sorted(abnormal, key=lambda c: case_rng(cfg.seed, c.case_id).random())[:cfg.n_localization]
        rows, overlays = [], []
        for number, case in enumerate(cases):
            query = self.loader(case.image)
            mask = load_mask(_mask_path(case, cfg.mask_field, self.mask_root), (query.height, query.width))
            explained = {}
            for label, backend, paired in (("single", self.single, False), ("paired", self.paired, True)):
                explanation = self._explain(backend, case, paired, option=str(case.label))
                explained[label] = explanation
                for method in cfg.methods:
                    values = explanation.maps[method][-1]
                    rows.append({"model": label, "method": method, "case_id": case.case_id,
                                 "pointing_game": pointing_game(values, mask), "energy_inside": energy_inside(values, mask),
                                 "chance": chance_energy(mask),
                                 "p_gold": explanation.probabilities[explanation.options.index(str(case.label))],
                                 "reference_share": explanation.reference_share(method) if paired else float("nan")})
            if number < cfg.n_overlays:
                overlays.append((case.case_id, self._overlay(case, explained, mask)))
        return pd.DataFrame(rows), overlays

    def _overlay(self, case: Case, explained: dict[str, Explanation], mask: np.ndarray) -> bytes:
        paired = explained["paired"]
        images = [self.loader(c.image) for c in self._select(case).references] + [self.loader(case.image)]
        titles = [f"reference {i + 1}" for i in range(len(images) - 1)] + ["query"]
        rows = [(f"paired: {METHOD_TITLES.get(m, m)}", paired.maps[m]) for m in self.config.methods]
        rows += [(f"single: {METHOD_TITLES.get(m, m)}", [None] * (len(images) - 1) + [explained["single"].maps[m][-1]])
                 for m in self.config.methods]
        probs = ", ".join(f"P({o})={p:.2f}" for o, p in zip(paired.options, paired.probabilities))
        return overlay_png(images, rows, titles, mask=mask,
                           caption=f"{case.case_id} (gold {case.label}); paired model {probs}; maps toward '{case.label}'")

    def _cases(self) -> list[Case]:
        pool = [c for c in self.table if c.split == self.config.split and c.label is not None]
        return _balanced(pool, self.config.n_cases, self.task.classes, self.config.seed)

    def swaps(self, cases: Sequence[Case]) -> pd.DataFrame:
        bank_split = self.bank_split()
        abnormal_pool = [c for c in self.table if c.label is not None and c.label != self.task.healthy_class
                         and (bank_split is None or c.split == bank_split)]
        return reference_swap_test(self.paired, self.prompts, cases, self._select, list(self.bank), abnormal_pool,
                                   seed=self.config.seed)

    def bank_split(self) -> str | None:
        splits = {c.split for c in self.bank}
        return splits.pop() if len(splits) == 1 else None

    def layers(self, cases: Sequence[Case]) -> pd.DataFrame:
        descriptions = [f"{c}: {self.task.descriptions[c]}" if c in self.task.descriptions else c
                        for c in self.task.classes]
        frames = []
        labels = [str(c.label) for c in cases]
        for label, backend, paired in (("single", self.single, False), ("paired", self.paired, True)):
            requests = [self.prompts.build(c, self._select(c).references if paired else []) for c in cases]
            queries = query_states(backend.model, backend.processor, requests)
            classes = text_states(backend.model, backend.processor, descriptions)
            frame = layer_alignment(queries, classes, self.task.classes, labels, seed=self.config.seed)
            frame.insert(0, "model", label)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def run(self) -> EvidenceResult:
        cfg = self.config
        localization, overlays = self.localization()
        cases = self._cases()
        swaps = self.swaps(cases)
        layers = self.layers(cases)
        return EvidenceResult(localization, summarise_localization(localization, cfg.n_boot, cfg.seed),
                              localization_delta(localization, cfg.n_boot, cfg.seed),
                              summarise_reference_share(localization, cfg.n_boot, cfg.seed),
                              swaps, summarise_swaps(swaps, cfg.n_boot, cfg.seed), layers, overlays,
                              cfg.model_dump())


# ----- summaries -----------------------------------------------------------------------------------
def summarise_localization(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    rows = []
    if frame.empty:
        return pd.DataFrame(rows)
    for (model, method), group in frame.groupby(["model", "method"], sort=False):
        row: dict[str, Any] = {"model": model, "method": method, "n": len(group)}
        for metric in ("pointing_game", "energy_inside", "chance"):
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_mean_ci(group[metric], n_boot, seed=seed)
        rows.append(row)
    return pd.DataFrame(rows)


def localization_delta(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method and score: paired minus single on the same cases, paired bootstrap 95% CI."""
    rows = []
    if frame.empty:
        return pd.DataFrame(rows)
    for method, group in frame.groupby("method", sort=False):
        wide = group.pivot_table(index="case_id", columns="model", values=["pointing_game", "energy_inside"])
        if "single" not in wide["energy_inside"] or "paired" not in wide["energy_inside"]:
            continue
        for metric in ("pointing_game", "energy_inside"):
            delta, lo, hi, n = _paired_delta(wide[metric]["single"].to_numpy(float),
                                             wide[metric]["paired"].to_numpy(float), n_boot, seed)
            rows.append({"method": method, "metric": metric, "n": n, "delta": delta, "delta_lo": lo, "delta_hi": hi})
    return pd.DataFrame(rows)


def summarise_reference_share(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    rows = []
    if frame.empty:
        return pd.DataFrame(rows)
    paired = frame[frame["model"] == "paired"]
    for method, group in paired.groupby("method", sort=False):
        share, lo, hi = bootstrap_mean_ci(group["reference_share"], n_boot, seed=seed)
        rows.append({"method": method, "n": len(group), "reference_share": share, "reference_share_lo": lo,
                     "reference_share_hi": hi})
    return pd.DataFrame(rows)


def summarise_swaps(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    rows = []
    if frame.empty:
        return pd.DataFrame(rows)
    for (swap, gold), group in frame.groupby(["swap", "gold"], sort=False):
        delta, lo, hi = bootstrap_mean_ci(group["delta_p_healthy"], n_boot, seed=seed)
        rows.append({"swap": swap, "gold": gold, "n": len(group), "delta_p_healthy": delta,
                     "delta_p_healthy_lo": lo, "delta_p_healthy_hi": hi,
                     "answer_changed": float(group["answer_changed"].mean())})
    return pd.DataFrame(rows)
