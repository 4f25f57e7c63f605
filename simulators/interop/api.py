"""A Gazelle EVS-compatible REST endpoint, so scripts written for Gazelle can point here.

``POST /evs/rest/validations`` takes ``<validation xmlns="http://evsobjects.gazelle.ihe.net/">``
(or the same shape in JSON), answers 201 with ``X-Validation-Report-Redirect``;
``GET /evs/rest/validations/{oid}/report`` returns the gvr XML (or JSON).
Validations are kept by an injectable repository (in memory by default).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from simulators.interop.engine import ValidationOptions, detect_kind, validate_bytes
from simulators.interop.report import ValidationReport
from simulators.interop.safe_xml import UnsafeOrInvalidXml, parse_xml

EVS_NS = "http://evsobjects.gazelle.ihe.net/"
MAX_BODY = 64 * 1024 * 1024
OID_ROOT = "1.2.250.1.213.1.1.9.99.1"  # segur-sim simulated validation OIDs


@dataclass
class StoredValidation:
    oid: str
    report: ValidationReport
    service_name: str
    validator: str


class ValidationRepository(Protocol):
    def save(self, item: StoredValidation) -> None: ...

    def get(self, oid: str) -> StoredValidation | None: ...


class InMemoryValidationRepository:
    def __init__(self) -> None:
        self._items: dict[str, StoredValidation] = {}
        self._lock = threading.Lock()

    def save(self, item: StoredValidation) -> None:
        with self._lock:
            self._items[item.oid] = item

    def get(self, oid: str) -> StoredValidation | None:
        with self._lock:
            return self._items.get(oid)


_default_repository = InMemoryValidationRepository()
_default_options = ValidationOptions()


def get_repository() -> ValidationRepository:
    """Override with ``app.dependency_overrides[get_repository]``."""
    return _default_repository


def get_options() -> ValidationOptions:
    """Override to give a rules directory or a cache directory."""
    return _default_options


def kind_for_validator(service: str, validator: str, content: bytes, name: str) -> str:
    """Map Gazelle service/validator names onto our validator kinds."""
    text = f"{service} {validator}".lower()
    if (
        "1.3.6.1.4.1.12559.11.36.8.3" in text
        or "2.16.840.1.113883.2.8.3.1.1" in text
        or "hl7v2" in text
        or "hl7 v2" in text
    ):
        return "hl7v2"
    if "xdm" in text or "xds" in text:
        return "xdm" if content[:4] == b"PK\x03\x04" else "xds"
    if "fhir" in text:
        return "fhir"
    if "cda" in text or "structuration" in text:
        return "cda"
    return detect_kind(content, name) or "cda"


def _parse_request(body: bytes, content_type: str) -> tuple[str, str, str, bytes]:
    if "json" in content_type:
        try:
            data: Any = json.loads(body)
            service = data.get("validationService") or {}
            obj = data.get("object") or (data.get("objects") or [{}])[0]
            encoded = obj.get("content") or ""
            name = obj.get("originalFileName") or "object"
            return (
                str(service.get("name", "")),
                str(service.get("validator", "")),
                str(name),
                base64.b64decode(encoded, validate=True),
            )
        except (ValueError, AttributeError, TypeError, IndexError, binascii.Error) as exc:
            raise HTTPException(400, f"bad JSON validation request: {exc}") from None
    try:
        root = parse_xml(body).getroot()
    except UnsafeOrInvalidXml as exc:
        raise HTTPException(400, f"bad validation request: {exc}") from None
    ns = {"e": EVS_NS}
    service_el = root.find("e:validationService", ns)
    obj = root.find("e:object", ns)
    content_el = obj.find("e:content", ns) if obj is not None else None
    if service_el is None or content_el is None or obj is None:
        raise HTTPException(400, "validation request needs validationService and object/content")
    try:
        content = base64.b64decode((content_el.text or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "object/content is not base64") from None
    return (
        service_el.get("name") or "",
        service_el.get("validator") or "",
        obj.get("originalFileName") or "object",
        content,
    )


router = APIRouter(prefix="/evs/rest", tags=["interop"])


@router.post("/validations", status_code=201)
async def create_validation(
    request: Request,
    repository: Annotated[ValidationRepository, Depends(get_repository)],
    options: Annotated[ValidationOptions, Depends(get_options)],
) -> Response:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, "request too large")
    service, validator, name, content = _parse_request(
        body, request.headers.get("content-type", "application/xml")
    )
    kind = kind_for_validator(service, validator, content, name)
    report = validate_bytes(content, name=name, kind=kind, options=options)
    oid = f"{OID_ROOT}.{uuid.uuid4().int % 10**12}"
    repository.save(StoredValidation(oid, report, service, validator))
    link = str(request.url_for("get_validation_report", oid=oid))
    return Response(
        status_code=201,
        headers={"X-Validation-Report-Redirect": link, "Location": link},
        content=json.dumps({"oid": oid, "status": "DONE", "result": report.result.value}),
        media_type="application/json",
    )


@router.get("/validations/{oid}/report", name="get_validation_report")
def get_validation_report(
    oid: str,
    request: Request,
    repository: Annotated[ValidationRepository, Depends(get_repository)],
    severityThreshold: str | None = None,
) -> Response:
    item = repository.get(oid)
    if item is None:
        raise HTTPException(404, f"no validation {oid}")
    accept = request.headers.get("accept", "application/xml")
    if "json" in accept and "xml" not in accept:
        return Response(item.report.to_json_bytes(), media_type="application/json")
    return Response(item.report.to_gvr_bytes(), media_type="application/xml")


@router.get("/validations/{oid}")
def get_validation_status(
    oid: str, repository: Annotated[ValidationRepository, Depends(get_repository)]
) -> dict[str, str]:
    item = repository.get(oid)
    if item is None:
        raise HTTPException(404, f"no validation {oid}")
    return {
        "oid": oid,
        "status": "DONE",
        "result": item.report.result.value,
        "validationService": item.service_name,
        "validator": item.validator,
    }
