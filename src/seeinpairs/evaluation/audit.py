"""Leakage audit of stored predictions: did any reference come from the query's own patient?

Selectors check their contract on every call; the audit re-checks the
predictions *as stored*, against the case table, so a study can print a count
of violations that must be 0 (and would catch a mislabelled patient id, a
changed manifest, or records produced by another tool).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..cases import CaseTable


@dataclass
class LeakageAudit:
    predictions: int = 0
    references: int = 0
    same_patient: int = 0
    same_case: int = 0
    unknown_reference: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return self.same_patient + self.same_case

    def as_dict(self) -> dict[str, int]:
        return {"predictions": self.predictions, "references": self.references, "violations": self.violations,
                "same_patient": self.same_patient, "same_case": self.same_case,
                "unknown_reference": self.unknown_reference}


def audit_references(records: Iterable[dict], table: CaseTable, modes: tuple[str, ...] = ("paired",)) -> LeakageAudit:
    """Count references that are the query itself or share its patient, over records of ``modes``
    (``prior`` is the deliberate same-patient mode and is not audited)."""
    cases = {c.case_id: c for c in table}
    audit = LeakageAudit()
    for record in records:
        if record.get("mode", "paired") not in modes:
            continue
        audit.predictions += 1
        query = cases.get(str(record["case_id"]))
        for reference_id in record.get("reference_ids") or []:
            audit.references += 1
            reference = cases.get(str(reference_id))
            if reference is None or query is None:
                audit.unknown_reference += 1
                continue
            if reference.case_id == query.case_id:
                audit.same_case += 1
            elif reference.patient == query.patient:
                audit.same_patient += 1
            else:
                continue
            if len(audit.examples) < 5:
                audit.examples.append(f"{query.case_id} <- {reference.case_id} (patient {query.patient})")
    return audit
