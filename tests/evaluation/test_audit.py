from seeinpairs.cases import Case, CaseTable
from seeinpairs.evaluation.audit import audit_references


def test_audit_counts_same_patient_and_self_references_but_not_the_prior_mode(tmp_path):
    cases = [Case("q", ("q.png",), "abnormal", patient_id="A"), Case("a2", ("a2.png",), "normal", patient_id="A"),
             Case("b1", ("b1.png",), "normal", patient_id="B")]
    table = CaseTable(cases, "mem")
    records = [
        {"case_id": "q", "mode": "paired", "reference_ids": ["b1"]},
        {"case_id": "q", "mode": "paired", "reference_ids": ["a2", "q", "b1"]},
        {"case_id": "q", "mode": "prior", "reference_ids": ["a2"]},  # deliberate: not audited
        {"case_id": "q", "mode": "single", "reference_ids": []},
        {"case_id": "q", "mode": "paired", "reference_ids": ["ghost"]},
    ]
    audit = audit_references(records, table)
    assert (audit.predictions, audit.references, audit.same_patient, audit.same_case, audit.unknown_reference) == \
        (3, 5, 1, 1, 1)
    assert audit.violations == 2 and "q <- a2 (patient A)" in audit.examples
