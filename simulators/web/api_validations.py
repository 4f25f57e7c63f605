"""Validation by file upload, for the console and for CI (``POST /api/validations``).

This delegates to the interop engine and keeps each report in the EVS router's
repository, so a validation made here is also at
``/evs/rest/validations/{oid}/report`` (Gazelle XML or JSON), and the other way round.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from simulators.interop.api import (
    OID_ROOT,
    StoredValidation,
    ValidationRepository,
    get_options,
    get_repository,
)
from simulators.interop.engine import KINDS, ValidationOptions
from simulators.interop.report import ValidationReport
from simulators.web.api_mss import ERRORS, safe_download_name
from simulators.web.security import REPORT_CSP

PREFIX = "/api/validations"
SERVICE_NAME = "segur-sim upload"


class CountersOut(BaseModel):
    constraints: int
    errors: int
    warnings: int
    infos: int


class ValidationOut(BaseModel):
    oid: str
    result: str = Field(examples=["PASSED", "FAILED"])
    kind: str
    validator: str
    object_name: str
    sha256: str
    counters: CountersOut
    report_url: str = Field(description="Gazelle XML report (Accept: application/json for JSON)")
    html_url: str
    report: dict[str, Any] = Field(description="The full report (interop JSON form)")


async def run_validation(
    content: bytes,
    name: str,
    kind: str,
    repository: ValidationRepository,
    options: ValidationOptions,
) -> tuple[str, ValidationReport]:
    """Validate off the event loop and keep the report. Never raises on bad input."""
    # in a worker process (simulators.interop.pool): Saxon keeps the GIL, a thread would not do
    from simulators.interop.pool import validate_off_loop

    report = await validate_off_loop(content, name=name or "upload", kind=kind, options=options)
    oid = f"{OID_ROOT}.{uuid.uuid4().int % 10**12}"
    validator = "auto" if kind == "auto" else kind
    repository.save(StoredValidation(oid, report, SERVICE_NAME, validator))
    return oid, report


def describe(oid: str, report: ValidationReport) -> dict[str, Any]:
    counters = report.counters.to_dict()
    return {
        "oid": oid,
        "result": report.result.value,
        "kind": report.kind,
        "validator": report.validator_id,
        "object_name": report.object_name,
        "sha256": report.object_sha256,
        "counters": {k: counters.get(k, 0) for k in ("constraints", "errors", "warnings", "infos")},
        "report_url": f"/evs/rest/validations/{oid}/report",
        "html_url": f"{PREFIX}/{oid}/report.html",
        "report": report.to_dict(),
    }


def _multipart_schema() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "kind": {
                                "type": "string",
                                "enum": ["auto", "cda", "hl7v2", "xds", "xdm", "fhir"],
                                "default": "auto",
                            },
                        },
                        "required": ["file"],
                    }
                }
            },
        }
    }


def build_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["validations"], responses=ERRORS)

    @router.post(
        "",
        status_code=201,
        response_model=ValidationOut,
        openapi_extra=_multipart_schema(),
        summary="Validate an uploaded file (multipart: file, kind)",
    )
    async def validate_upload(
        request: Request,
        repository: Annotated[ValidationRepository, Depends(get_repository)],
        options: Annotated[ValidationOptions, Depends(get_options)],
    ) -> Any:
        """CDA, HL7 v2, XDS metadata, IHE_XDM.ZIP or FHIR; the kind is detected unless
        given. The answer holds the whole report; it stays at ``report_url``."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise HTTPException(422, "send the file as multipart/form-data field 'file'")
        try:
            form = await request.form()
        except HTTPException:
            raise
        except Exception:
            raise HTTPException(422, "unreadable multipart body") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "send the file as multipart/form-data field 'file'")
        kind = form.get("kind") or "auto"
        if not isinstance(kind, str) or kind not in ("auto", *KINDS):
            raise HTTPException(422, f"kind must be one of auto, {', '.join(KINDS)}")
        content = await upload.read()
        oid, report = await run_validation(
            content, upload.filename or "upload", kind, repository, options
        )
        return describe(oid, report)

    @router.get("/{oid}", response_model=ValidationOut, summary="A kept validation")
    def get_validation(
        oid: str, repository: Annotated[ValidationRepository, Depends(get_repository)]
    ) -> Any:
        item = repository.get(oid)
        if item is None:
            raise HTTPException(404, f"no validation {oid}")
        return describe(oid, item.report)

    @router.get(
        "/{oid}/report.html",
        response_class=Response,
        responses={200: {"content": {"text/html": {}}}},
        summary="The report as a standalone HTML page",
    )
    def get_validation_html(
        oid: str, repository: Annotated[ValidationRepository, Depends(get_repository)]
    ) -> Response:
        item = repository.get(oid)
        if item is None:
            raise HTTPException(404, f"no validation {oid}")
        name = safe_download_name(item.report.object_name)
        return Response(
            item.report.to_html(),
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": REPORT_CSP,
                "Content-Disposition": f'inline; filename="{name}.report.html"',
            },
        )

    return router
