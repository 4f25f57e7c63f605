"""The thin FHIR layer: structure with fhir.resources plus French rules."""

from __future__ import annotations

import json

from simulators.interop.engine import validate_bytes

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "285057505612338"}],
    "name": [{"family": "SIMULO", "given": ["CAMILLE"]}],
    "gender": "female",
    "birthDate": "1985-05-12",
}


def _v(resource: dict[str, object]) -> set[str]:
    report = validate_bytes(json.dumps(resource).encode(), name="r.json")
    assert report.kind == "fhir"
    return report.failed_ids()


def test_valid_patient_passes_and_broken_structure_fails() -> None:
    assert _v(PATIENT) == set()
    assert _v({**PATIENT, "birthDate": "not-a-date"}) == {"FHIR-STRUCT-02"}
    assert _v({"resourceType": "NoSuchThing"}) == {"FHIR-STRUCT-01"}


def test_french_rules() -> None:
    assert _v(
        {**PATIENT, "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "123"}]}
    ) == {"FR-FHIR-PAT-02"}
    assert _v({k: v for k, v in PATIENT.items() if k != "birthDate"}) == {"FR-FHIR-PAT-03"}
    practitioner = {
        "resourceType": "Practitioner",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "801234567897"}],
    }
    assert _v(practitioner) == set()
    assert _v({**practitioner, "identifier": []}) == {"FR-FHIR-PRA-01"}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {**practitioner, "identifier": []}}],
    }
    assert _v(bundle) == {"FR-FHIR-PRA-01"}


def test_not_json_is_a_failed_report() -> None:
    report = validate_bytes(b"{not json", name="x.json", kind="fhir")
    assert report.failed_ids() == {"INPUT-FHIR-01"}
