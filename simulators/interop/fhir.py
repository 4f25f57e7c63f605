"""A thin FHIR R4/R5 layer: structure with fhir.resources, plus the French rules the
Ségur flows rely on (FR Core patient with INS, practitioner with RPPS, document
references of the DMP/MSS "partage de documents" FHIR profile).
"""

from __future__ import annotations

import json
from typing import Any

from simulators.interop.cda.valuesets import INS_OIDS
from simulators.interop.engine import ValidationOptions
from simulators.interop.report import Severity, SubReport, ValidationReport, input_error_report

VALIDATOR_ID = "segur-sim FHIR (structure + FR Core rules)"
INS_SYSTEMS = {f"urn:oid:{oid}" for oid in INS_OIDS}
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
MAX_FHIR_BYTES = 16 * 1024 * 1024


def _structure(resource: dict[str, Any], sub: SubReport) -> bool:
    from fhir.resources import get_fhir_model_class

    rtype = str(resource.get("resourceType", ""))
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError):
        sub.fail("FHIR-STRUCT-01", f"unknown resourceType {rtype!r}")
        return False
    try:
        model.model_validate(resource)
    except Exception as exc:  # pydantic ValidationError and friends
        for line in str(exc).splitlines()[:20]:
            sub.fail("FHIR-STRUCT-02", f"{rtype}: {line.strip()}")
        return False
    sub.check("FHIR-STRUCT-02", True, f"{rtype} is structurally valid (fhir.resources)")
    return True


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    ids = resource.get("identifier") or []
    return [i for i in ids if isinstance(i, dict)]


def _fr_rules(resource: dict[str, Any], sub: SubReport, path: str) -> None:
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        ins = [i for i in _identifiers(resource) if i.get("system") in INS_SYSTEMS]
        sub.check(
            "FR-FHIR-PAT-01",
            bool(ins),
            f"{path}: a Patient exchanged in a Ségur flow SHOULD carry its INS "
            "(identifier.system urn:oid:1.2.250.1.213.1.4.8/9/10/11)",
            severity=Severity.WARNING,
        )
        for ident in ins:
            value = str(ident.get("value") or "")
            sub.check(
                "FR-FHIR-PAT-02",
                len(value) == 15 and value[:13].isdigit(),
                f"{path}: INS value SHALL be 15 characters (got {value!r})",
            )
        if ins:
            sub.check(
                "FR-FHIR-PAT-03",
                bool(resource.get("birthDate"))
                and bool(resource.get("gender"))
                and bool(resource.get("name")),
                f"{path}: with an INS, name, gender and birthDate SHALL be present",
            )
    elif rtype == "Practitioner":
        ids = _identifiers(resource)
        rpps = [i for i in ids if i.get("system") == RPPS_SYSTEM]
        sub.check(
            "FR-FHIR-PRA-01",
            bool(rpps),
            f"{path}: a Practitioner SHALL carry its IdNat_PS (system {RPPS_SYSTEM})",
        )
        for ident in rpps:
            value = str(ident.get("value") or "")
            sub.check(
                "FR-FHIR-PRA-02",
                value.isdigit() and value.startswith("8") and len(value) == 12,
                f"{path}: IdNat_PS SHOULD be '8' + RPPS (got {value!r})",
                severity=Severity.WARNING,
            )
    elif rtype == "DocumentReference":
        sub.check(
            "FR-FHIR-DOC-01",
            bool((resource.get("type") or {}).get("coding")),
            f"{path}: DocumentReference.type (JDV_J07 typeCode) SHALL be coded",
        )
        sub.check(
            "FR-FHIR-DOC-02",
            bool(resource.get("subject")),
            f"{path}: DocumentReference.subject (the patient) SHALL be present",
        )
    elif rtype == "Bundle":
        for i, entry in enumerate(resource.get("entry") or []):
            inner = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(inner, dict):
                _fr_rules(inner, sub, f"{path}.entry[{i}].resource")


class FhirValidator:
    kind = "fhir"
    validator_id = VALIDATOR_ID

    def validate(
        self, content: bytes, *, name: str, options: ValidationOptions
    ) -> ValidationReport:
        if len(content) > MAX_FHIR_BYTES:
            return input_error_report(
                content,
                name=name,
                kind="fhir",
                validator_id=VALIDATOR_ID,
                message="FHIR resource too large",
                constraint_id="INPUT-FHIR-01",
            )
        try:
            resource = json.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # too deep
            return input_error_report(
                content,
                name=name,
                kind="fhir",
                validator_id=VALIDATOR_ID,
                message=f"not UTF-8 JSON: {exc}",
                constraint_id="INPUT-FHIR-01",
            )
        report = ValidationReport.for_content(
            content,
            validator_id=VALIDATOR_ID,
            service_name="FHIR validator (segur-sim)",
            object_name=name,
            kind="fhir",
        )
        if not isinstance(resource, dict) or "resourceType" not in resource:
            report.add("Structure").fail("FHIR-STRUCT-01", "JSON object with resourceType expected")
            return report
        _structure(resource, report.add("Structure"))
        _fr_rules(resource, report.add("French profile rules"), str(resource["resourceType"]))
        return report
