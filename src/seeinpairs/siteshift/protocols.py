"""Leave-one-site-out splits and the two reference banks a held-out site is evaluated with.

The question is whether a few healthy references from a *new* site recover the
accuracy lost to its acquisition shift. That needs a split in which the model
never trains on the new site (train and val from the other sites, test from the
held-out one only) and two banks to draw references from: healthy cases of the
new site, and healthy training cases of the other sites.

Where the new site's references come from (a decision): a few healthy patients
of the held-out site can be *reserved* (``site_references=n``): they get the
split :data:`SITE_REFERENCE_SPLIT`, not ``test``, so the references are never
queries, and the recalibration control (:mod:`.recalibration`) calibrates on
exactly the same images the paired model is shown. That is how a deployment
would look (a handful of healthy images collected at the new site before use),
and it is the default for :func:`site_reference_banks`. Without reserved
references, the bank can be built from the healthy *test* cases of the held-out
site (``new_site_split="test"``); selectors then still never return the query
itself or any case of the query's patient (the selector contract of
:mod:`seeinpairs.references.selectors`), but a healthy query may serve as
another query's reference. Either bank plugs into an experiment config as
``bank: {split: site_reference}`` (or ``test``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..cases import Case, CaseTable
from ..errors import ConfigError
from ..references.bank import ReferenceBank
from ..tasks import Task

__all__ = ["SITE_REFERENCE_SPLIT", "SiteReferenceBanks", "leave_one_site_out", "site_reference_banks", "sites_of"]

#: the split of the held-out site's reserved healthy references (neither train, val nor test)
SITE_REFERENCE_SPLIT = "site_reference"


def _rank(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:loso:{text}".encode()).hexdigest()


def sites_of(table: Sequence[Case]) -> dict[str, int]:
    """Case counts per site (cases without a site are not counted)."""
    counts: dict[str, int] = defaultdict(int)
    for case in table:
        if case.site is not None:
            counts[case.site] += 1
    return dict(sorted(counts.items()))


def leave_one_site_out(table: Sequence[Case], held_out_site: str, val_fraction: float = 0.1, seed: int = 0, *,
                       site_references: int = 0, healthy_label: str | None = None,
                       missing_site: str = "error") -> CaseTable:
    """Train/val from the other sites, test from ``held_out_site`` only.

    * Train and val are split by patient (a patient's cases stay together), ``val_fraction`` of the
      other sites' patients to val in a seeded hash order; the table's own splits are ignored (kept
      in ``extra["original_split"]``), so every case of the other sites is used for training.
    * A patient with cases at the held-out site *and* elsewhere would carry the new site's patient
      into training: their other-site cases are left out of the returned table.
    * ``site_references=n`` reserves whole healthy-only patients of the held-out site, in seeded
      order, until at least n cases are reserved, as split :data:`SITE_REFERENCE_SPLIT` (needs
      ``healthy_label``); they are removed from test.
    * Cases without a site: an error (``missing_site="error"``), since they might come from the
      held-out site; ``"drop"`` leaves them out.
    """
    if held_out_site is None or not str(held_out_site).strip():
        raise ConfigError("leave_one_site_out: held_out_site is empty")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"leave_one_site_out: val_fraction must be within [0, 1) (got {val_fraction})")
    if missing_site not in ("error", "drop"):
        raise ConfigError(f"leave_one_site_out: missing_site must be 'error' or 'drop' (got '{missing_site}')")
    if site_references < 0:
        raise ConfigError(f"leave_one_site_out: site_references must be >= 0 (got {site_references})")
    if site_references and healthy_label is None:
        raise ConfigError("leave_one_site_out: site_references needs healthy_label (the task's healthy class)")
    cases = list(table)
    no_site = [c for c in cases if c.site is None]
    if no_site and missing_site == "error":
        raise ConfigError(f"leave_one_site_out: {len(no_site)} case(s) have no site (first '{no_site[0].case_id}'); "
                          "use missing_site='drop' to leave them out")
    cases = [c for c in cases if c.site is not None]
    counts = sites_of(cases)
    if held_out_site not in counts:
        known = ", ".join(counts) or "none"
        raise ConfigError(f"leave_one_site_out: unknown site '{held_out_site}' (sites: {known})")
    held_patients = {c.patient for c in cases if c.site == held_out_site}
    others = [c for c in cases if c.site != held_out_site and c.patient not in held_patients]
    if not others:
        raise ConfigError(f"leave_one_site_out: no case from a site other than '{held_out_site}' to train on")

    patients = sorted({c.patient for c in others}, key=lambda p: (_rank(seed, p), p))
    n_val = round(val_fraction * len(patients))
    val = set(patients[:n_val])

    reserved: set[str] = set()
    if site_references:
        labels: dict[str, set[str | None]] = defaultdict(set)
        sizes: dict[str, int] = defaultdict(int)
        for case in cases:
            if case.site == held_out_site:
                labels[case.patient].add(case.label)
                sizes[case.patient] += 1
        healthy = sorted((p for p, found in labels.items() if found == {healthy_label}),
                         key=lambda p: (_rank(seed, "reference:" + p), p))
        total = 0
        for patient in healthy:
            if total >= site_references:
                break
            reserved.add(patient)
            total += sizes[patient]
        if total < site_references:
            raise ConfigError(f"leave_one_site_out: site_references={site_references} but site '{held_out_site}' "
                              f"has only {total} case(s) of healthy-only patients labelled '{healthy_label}'")

    result = []
    for case in cases:
        if case.site == held_out_site:
            split = SITE_REFERENCE_SPLIT if case.patient in reserved else "test"
        elif case.patient in held_patients:
            continue
        else:
            split = "val" if case.patient in val else "train"
        extra = dict(case.extra)
        if case.split is not None:
            extra["original_split"] = case.split
        result.append(replace(case, split=split, extra=extra))
    source = getattr(table, "source", "<table>")
    return CaseTable(result, source=f"{source} (leave out site '{held_out_site}')")


@dataclass
class SiteReferenceBanks:
    """The two banks for one held-out site: references from the new site vs from the training sites."""

    held_out_site: str
    new_site: ReferenceBank
    training_sites: ReferenceBank


def site_reference_banks(table: Sequence[Case], task: Task, held_out_site: str,
                         new_site_split: str = SITE_REFERENCE_SPLIT, training_split: str = "train",
                         **bank_options) -> SiteReferenceBanks:
    """Healthy cases of ``held_out_site`` in ``new_site_split`` (default: the reserved references;
    ``"test"``: healthy test cases of other patients) vs healthy cases of ``training_split`` at the
    other sites. ``bank_options`` go to :class:`ReferenceBank` (e.g. ``cache_dir``).

    Selectors over either bank never return the query or its patient (the selector contract).
    """
    counts = sites_of(table)
    if not held_out_site or held_out_site not in counts:
        raise ConfigError(f"site_reference_banks: unknown site '{held_out_site}' (sites: {', '.join(counts) or 'none'})")
    new = [c for c in table if c.site == held_out_site and c.split == new_site_split and c.label == task.healthy_class]
    if not new:
        hint = (" (reserve some with leave_one_site_out(..., site_references=n), or use new_site_split='test')"
                if new_site_split == SITE_REFERENCE_SPLIT else "")
        raise ConfigError(f"site_reference_banks: no healthy '{task.healthy_class}' case of site '{held_out_site}' "
                          f"in split '{new_site_split}'{hint}")
    old = [c for c in table if c.site not in (None, held_out_site) and c.split == training_split
           and c.label == task.healthy_class]
    if not old:
        raise ConfigError(f"site_reference_banks: no healthy '{task.healthy_class}' case in split "
                          f"'{training_split}' at a site other than '{held_out_site}'")
    return SiteReferenceBanks(
        held_out_site,
        ReferenceBank(new, description=f"new-site references ('{held_out_site}', split '{new_site_split}')",
                      **bank_options),
        ReferenceBank(old, description=f"training-site references (split '{training_split}', "
                                       f"sites other than '{held_out_site}')", **bank_options),
    )
