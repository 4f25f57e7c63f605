"""A Gazelle EVS-compatible REST endpoint, so scripts written for Gazelle can point here.

``POST /evs/rest/validations`` takes ``<validation xmlns="http://evsobjects.gazelle.ihe.net/">``
(or the same shape in JSON), answers 201 with ``X-Validation-Report-Redirect``;
``GET /evs/rest/validations/{oid}/report`` returns the gvr XML (or JSON, HTML, text),
with Gazelle's ``severityThreshold``; ``GET /evs/rest/validations`` lists the kept
validations (newest first, paged) and ``GET /evs/rest/validations/{oid}`` gives one.
The validation itself runs in a worker process (``simulators.interop.pool``), never on
the event loop.

Validations are kept by a repository (``simulators.interop.store``): the application's
SQLite store when ``app.state.interop_repository`` is set (``serve`` does it), else
one in memory. Tests can still override ``get_repository``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from simulators.interop.engine import ValidationOptions, detect_kind
from simulators.interop.safe_xml import UnsafeOrInvalidXml, parse_xml
from simulators.interop.store import (
    OID_ROOT,
    InMemoryValidationRepository,
    StoredValidation,
    ValidationRepository,
    new_oid,
)

__all__ = [
    "OID_ROOT",
    "InMemoryValidationRepository",
    "StoredValidation",
    "ValidationRepository",
    "get_options",
    "get_repository",
    "kind_for_validator",
    "router",
]

EVS_NS = "http://evsobjects.gazelle.ihe.net/"
MAX_BODY = 64 * 1024 * 1024
MAX_PAGE = 500

_default_repository = InMemoryValidationRepository()
_default_options = ValidationOptions()


def get_repository(request: Request) -> ValidationRepository:
    """``app.state.interop_repository`` when the app has one (the SQLite store), else
    the process-wide in-memory repository. Override with
    ``app.dependency_overrides[get_repository]``."""
    repository: ValidationRepository | None = getattr(request.app.state, "interop_repository", None)
    return repository if repository is not None else _default_repository


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

_FORMATS = {
    "gvr": "application/xml",
    "xml": "application/xml",
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "text": "text/plain; charset=utf-8",
}


def _links(request: Request, oid: str) -> dict[str, str]:
    base = str(request.url_for("get_validation_report", oid=oid))
    return {"gvr": base, "json": f"{base}?format=json", "html": f"{base}?format=html"}


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it exceeds MAX_BODY (never buffered whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, "request too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413, "request too large")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/validations", status_code=201)
async def create_validation(
    request: Request,
    repository: Annotated[ValidationRepository, Depends(get_repository)],
    options: Annotated[ValidationOptions, Depends(get_options)],
) -> Response:
    body = await _read_body(request)
    service, validator, name, content = _parse_request(
        body, request.headers.get("content-type", "application/xml")
    )
    kind = kind_for_validator(service, validator, content, name)
    # in a worker process: saxonche keeps the GIL during a Saxon call (seconds for a
    # first StrucMin compilation), so a thread would still stop the event loop. The pool
    # module is imported by the first validation, not at start-up.
    from simulators.interop.pool import validate_off_loop

    report = await validate_off_loop(content, name=name, kind=kind, options=options)
    # the save waits for the store's commit: in a thread
    oid = new_oid()
    await run_in_threadpool(
        repository.save, StoredValidation(oid, report, service, validator, origin="api")
    )
    link = str(request.url_for("get_validation_report", oid=oid))
    return Response(
        status_code=201,
        headers={"X-Validation-Report-Redirect": link, "Location": link},
        content=json.dumps({"oid": oid, "status": "DONE", "result": report.result.value}),
        media_type="application/json",
    )


@router.get("/validations", name="list_validations")
def list_validations(
    request: Request,
    repository: Annotated[ValidationRepository, Depends(get_repository)],
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """The kept validations, newest first, ``limit`` from ``offset``."""
    items, total = repository.page(offset=offset, limit=limit)
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "items": [
            {**item.summary(), "status": "DONE", "links": _links(request, item.oid)}
            for item in items
        ],
    }


@router.get("/validations/{oid}/report", name="get_validation_report")
def get_validation_report(
    oid: str,
    request: Request,
    repository: Annotated[ValidationRepository, Depends(get_repository)],
    severityThreshold: str | None = None,
    format: str | None = None,
) -> Response:
    """The report: gvr XML by default, JSON with ``Accept: application/json`` or
    ``format=json``, ``format=html`` or ``format=text``. ``severityThreshold``
    (INFO, WARNING, ERROR) leaves out, and does not count, the constraints below it."""
    item = repository.get(oid)
    if item is None:
        raise HTTPException(404, f"no validation {oid}")
    try:
        report = item.report.filtered(severityThreshold or None)
    except ValueError as exc:
        raise HTTPException(400, f"severityThreshold: {exc}") from None
    fmt = (format or "").lower()
    if not fmt:
        accept = request.headers.get("accept", "application/xml")
        fmt = "json" if "json" in accept and "xml" not in accept else "gvr"
    if fmt not in _FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(_FORMATS)}")
    body: bytes
    if fmt == "json":
        body = report.to_json_bytes()
    elif fmt == "html":
        body = report.to_html().encode("utf-8")
    elif fmt == "text":
        body = report.to_text().encode("utf-8")
    else:
        body = report.to_gvr_bytes()
    return Response(body, media_type=_FORMATS[fmt])


@router.get("/validations/{oid}", name="get_validation")
def get_validation_status(
    oid: str,
    request: Request,
    repository: Annotated[ValidationRepository, Depends(get_repository)],
) -> dict[str, Any]:
    """One kept validation: status, result, counters, object, and its report links."""
    item = repository.get(oid)
    if item is None:
        raise HTTPException(404, f"no validation {oid}")
    return {**item.summary(), "status": "DONE", "links": _links(request, oid)}
