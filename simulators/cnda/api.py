"""REST API of the CNDA mock, for the editor and the CNDA agent roles.

This API is our own design. CNDA publishes no API, and this one does not claim to
mirror anything real. The simulator has no login: the caller states its role in the
``X-Segur-Sim-Role`` header (``editor`` or ``agent``), and each write checks that
the role may do it (403 otherwise). Errors are JSON ``{"detail": ...}``: 404 for an
unknown ID, 409 for an action the dossier's state does not allow, 422 for bad input
(including a proof bundle that does not verify).

Mount it in another app with ``app.include_router(build_router(service))``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from simulators import DISCLAIMER, __version__
from simulators.cnda.attestation import (
    ATTESTATION_HTML,
    ATTESTATION_JSON,
    ATTESTATION_SIG,
    verify_attestation,
)
from simulators.cnda.automation import AgentRules
from simulators.cnda.errors import CndaError, ProofRefusedError
from simulators.cnda.pages import status_page
from simulators.cnda.repository import Dossier, Event, Software
from simulators.cnda.service import CndaService
from simulators.cnda.states import Role
from simulators.core.config import DataDir
from simulators.core.proof import utc_now_iso
from simulators.core.store.database import Database

PREFIX = "/api/cnda"
ROLE_HEADER = "X-Segur-Sim-Role"
MAX_UPLOAD = 200 * 1024 * 1024
T = TypeVar("T")


# ---- models -----------------------------------------------------------------------------
class EditorIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Éditeur Exemple SAS"])
    contact_email: str = Field(default="", max_length=200)


class EditorOut(BaseModel):
    nie: str = Field(examples=["SIMU-NIE-7KQ2MZ"])
    name: str
    contact_email: str
    created_at: str


class SoftwareIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=200)


class SoftwareOut(BaseModel):
    nil: str = Field(examples=["SIMU-NIL-4TX9PB"])
    nie: str
    name: str
    version: str
    parent_nil: str | None
    created_at: str
    components: list[str] = []


class RequestIn(BaseModel):
    nie: str
    nil: str
    service: str = Field(examples=["DMP"])
    perimeter: dict[str, list[str]] = Field(
        examples=[{"profiles": ["alimentation"], "auth_modes": ["psc"]}]
    )
    components: list[str] | None = Field(
        default=None, description="NILs of the software's components; default: all of them"
    )


class TransitionIn(BaseModel):
    reason: str | None = None
    exam_date: str | None = Field(default=None, examples=["2025-04-10"])
    exam_mode: str | None = Field(default=None, examples=["remote", "in_person"])


class AgentRulesIn(BaseModel):
    send_test_plan: bool = True
    validate_passed_bundles: bool = True
    refuse_failed_bundles: bool = True
    schedule_exam: bool = True
    exam_in_days: int = Field(default=7, ge=0, le=365)
    exam_mode: str = "remote"
    pass_exam: bool = True
    finalise: bool = True
    complete: bool = True


class EventOut(BaseModel):
    seq: int
    at: str
    role: str
    actor: str
    action: str
    from_state: str | None
    to_state: str
    reason: str | None
    evidence_sha256: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AutomationOut(BaseModel):
    done: list[EventOut]
    waiting_for: list[str]
    status: dict[str, Any]


class ChainOut(BaseModel):
    ok: bool
    problems: list[str]


# ---- helpers ----------------------------------------------------------------------------
RoleHeader = Annotated[
    Role,
    Header(
        alias=ROLE_HEADER,
        description="The simulator has no login: say which role you act as.",
    ),
]


def _call(fn: Callable[[], T]) -> T:
    """Run a service call; CNDA errors become JSON HTTP errors with a ``detail``."""
    try:
        return fn()
    except ProofRefusedError as exc:
        raise HTTPException(exc.status_code, f"{exc.message}: {'; '.join(exc.problems)}") from exc
    except CndaError as exc:
        raise HTTPException(exc.status_code, exc.message) from exc


def _require(role: Role, wanted: Role) -> None:
    if role is not wanted:
        raise HTTPException(403, f"this operation is for the {wanted.value} role")


def _event(event: Event) -> EventOut:
    return EventOut(**{k: v for k, v in event.__dict__.items() if k != "request_id"})


def _software(service: CndaService, software: Software) -> SoftwareOut:
    components = [c.nil for c in service.repo.components_of(software.nil)]
    return SoftwareOut(**software.__dict__, components=components)


async def _upload(request: Request) -> tuple[str, bytes, dict[str, list[str]]]:
    """The single uploaded file of a multipart request, and the other form fields."""
    form = await request.form(max_part_size=MAX_UPLOAD)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(422, "send the file as multipart form field 'file'")
    content = await upload.read()
    fields: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value)
    return upload.filename or "upload", content, fields


def _case_ids(fields: dict[str, list[str]]) -> list[str]:
    """``cases`` form fields: repeated, comma-separated, or both."""
    return [c.strip() for v in fields.get("cases", []) for c in v.split(",") if c.strip()]


# ---- router -----------------------------------------------------------------------------
def build_router(service: CndaService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["cnda (simulation)"])

    def status_of(dossier: Dossier) -> dict[str, Any]:
        return service.status(dossier.id)

    @router.get("/services", summary="Services and perimeter axes (catalogue data)")
    def services() -> list[dict[str, Any]]:
        return [
            {
                "id": s.id,
                "name": s.name,
                "referentiel": {"name": s.referentiel, "version": s.referentiel_version},
                "testPlan": {"name": s.test_plan, "version": s.test_plan_version},
                "dimensions": [
                    {"id": d.id, "label": d.label, "values": list(d.values), "required": d.required}
                    for d in s.dimensions
                ],
                "cases": len(s.cases),
            }
            for s in service.catalogue.services.values()
        ]

    @router.post("/editors", status_code=201, response_model=EditorOut)
    def register_editor(body: EditorIn, role: RoleHeader) -> Any:
        _require(role, Role.EDITOR)
        return _call(lambda: service.register_editor(body.name, body.contact_email))

    @router.get("/editors/{nie}", response_model=EditorOut)
    def get_editor(nie: str) -> Any:
        return _call(lambda: service.editor(nie))

    @router.get("/editors/{nie}/software", response_model=list[SoftwareOut])
    def list_software(nie: str) -> Any:
        _call(lambda: service.editor(nie))
        return [_software(service, s) for s in service.repo.software_of(nie)]

    @router.post("/editors/{nie}/software", status_code=201, response_model=SoftwareOut)
    def create_software(nie: str, body: SoftwareIn, role: RoleHeader) -> Any:
        _require(role, Role.EDITOR)
        software = _call(lambda: service.create_software(nie, body.name, body.version))
        return _software(service, software)

    @router.get("/software/{nil}", response_model=SoftwareOut)
    def get_software(nil: str) -> Any:
        return _software(service, _call(lambda: service.software(nil)))

    @router.post("/software/{nil}/components", status_code=201, response_model=SoftwareOut)
    def create_component(nil: str, body: SoftwareIn, role: RoleHeader) -> Any:
        _require(role, Role.EDITOR)
        parent = _call(lambda: service.software(nil))
        component = _call(
            lambda: service.create_software(
                parent.nie, body.name, body.version, component_of=parent.nil
            )
        )
        return _software(service, component)

    @router.post("/requests", status_code=201, summary="Open a homologation request")
    def open_request(body: RequestIn, role: RoleHeader) -> dict[str, Any]:
        _require(role, Role.EDITOR)
        dossier = _call(
            lambda: service.open_request(
                body.nie, body.nil, body.service, body.perimeter, components=body.components
            )
        )
        return status_of(dossier)

    @router.get("/requests", summary="Requests, optionally of one editor")
    def list_requests(nie: str | None = None) -> list[dict[str, Any]]:
        return [status_of(d) for d in service.repo.dossiers(nie)]

    @router.get("/requests/{request_id}", summary="Status of a request (JSON)")
    def get_request(request_id: str) -> dict[str, Any]:
        return _call(lambda: service.status(request_id))

    @router.get(
        "/requests/{request_id}/page",
        response_class=HTMLResponse,
        summary="Status page (stands in for the portal screenshot)",
    )
    def request_page(request_id: str) -> HTMLResponse:
        status = _call(lambda: service.status(request_id))
        page = status_page(status, service.events(request_id), captured_at=utc_now_iso())
        return HTMLResponse(page)

    @router.get("/requests/{request_id}/events", response_model=list[EventOut])
    def events(request_id: str) -> Any:
        return [_event(e) for e in _call(lambda: service.events(request_id))]

    @router.get("/requests/{request_id}/events/verify", response_model=ChainOut)
    def verify_events(request_id: str) -> Any:
        problems = _call(lambda: service.verify_events(request_id))
        return ChainOut(ok=not problems, problems=problems)

    @router.post(
        "/requests/{request_id}/documents",
        status_code=201,
        summary="Deposit a contractual document (multipart: doc_type, file)",
        openapi_extra=_multipart_schema(with_doc_type=True),
    )
    async def deposit_document(request_id: str, request: Request, role: RoleHeader) -> Any:
        _require(role, Role.EDITOR)
        filename, content, fields = await _upload(request)
        doc_type = (fields.get("doc_type") or [""])[-1]
        document = await _in_thread(
            lambda: service.deposit_document(request_id, doc_type, filename, content)
        )
        return document.__dict__

    @router.post(
        "/requests/{request_id}/proofs",
        status_code=201,
        summary="Deposit a test proof (multipart: file, cases; a .zip holding a bundle is "
        "verified)",
        openapi_extra=_multipart_schema(with_doc_type=False),
    )
    async def deposit_proof(request_id: str, request: Request, role: RoleHeader) -> Any:
        _require(role, Role.EDITOR)
        filename, content, fields = await _upload(request)
        cases = _case_ids(fields)
        proof = await _in_thread(
            lambda: service.deposit_proof_upload(request_id, filename, content, cases=cases)
        )
        return proof.__dict__

    @router.get(
        "/requests/{request_id}/coverage",
        summary="Which test-plan cases the current round's proofs cover",
    )
    def coverage(request_id: str) -> dict[str, Any]:
        return _call(lambda: service.coverage(request_id))

    @router.post(
        "/requests/{request_id}/actions/{action}",
        summary="Apply a lifecycle action (validate, refuse, schedule-exam, ...)",
    )
    def act(
        request_id: str, action: str, role: RoleHeader, body: TransitionIn | None = None
    ) -> dict[str, Any]:
        params = body or TransitionIn()
        dossier = _call(
            lambda: service.transition(
                request_id,
                action,
                role=role.value,
                reason=params.reason,
                exam_date=params.exam_date,
                exam_mode=params.exam_mode,
            )
        )
        return status_of(dossier)

    @router.post(
        "/requests/{request_id}/agent/run",
        response_model=AutomationOut,
        summary="Let the automated agent rules act until the dossier waits on someone",
    )
    def run_agent(request_id: str, role: RoleHeader, body: AgentRulesIn | None = None) -> Any:
        _require(role, Role.AGENT)
        rules = AgentRules(**(body or AgentRulesIn()).model_dump())
        report = _call(lambda: service.run_agent(request_id, rules))
        return AutomationOut(
            done=[_event(e) for e in report.done],
            waiting_for=report.waiting_for,
            status=service.status(request_id),
        )

    def attestation_file(request_id: str, name: str) -> Path:
        return _call(lambda: service.attestation_dir(request_id)) / name

    @router.get("/requests/{request_id}/attestation", summary="The attestation (signed JSON)")
    def attestation(request_id: str) -> FileResponse:
        return FileResponse(
            attestation_file(request_id, ATTESTATION_JSON), media_type="application/json"
        )

    @router.get("/requests/{request_id}/attestation.html", response_class=HTMLResponse)
    def attestation_html(request_id: str) -> FileResponse:
        return FileResponse(attestation_file(request_id, ATTESTATION_HTML), media_type="text/html")

    @router.get("/requests/{request_id}/attestation.p7s")
    def attestation_signature(request_id: str) -> FileResponse:
        path = attestation_file(request_id, ATTESTATION_SIG)
        return FileResponse(path, media_type="application/pkcs7-signature")

    @router.get("/requests/{request_id}/attestation/verify", response_model=ChainOut)
    def attestation_verify(request_id: str) -> Any:
        directory = _call(lambda: service.attestation_dir(request_id))
        check = verify_attestation(directory, ca_file=service.pki.root_cert_path)
        return ChainOut(ok=check.ok, problems=check.problems)

    return router


async def _in_thread(fn: Callable[[], T]) -> T:
    # Deposits copy, verify and fsync: keep that off the event loop.
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_call, fn)


def _multipart_schema(*, with_doc_type: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    required = ["file"]
    if not with_doc_type:
        properties["cases"] = {
            "type": "string",
            "description": "Test-plan case IDs this proof covers, as the editor declares "
            "them (comma-separated; the field may repeat). A bundle's own test lists "
            "are read whatever is declared.",
            "examples": ["0.1-210,0.2-100"],
        }
    if with_doc_type:
        properties["doc_type"] = {
            "type": "string",
            "enum": [
                "contract_request",
                "signed_conditions",
                "psc_maturity_attestation",
                "psc_habilitation_receipt",
                "satisfaction_questionnaire",
            ],
        }
        required.append("doc_type")
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": properties, "required": required}
                }
            },
        }
    }


# ---- standalone app ---------------------------------------------------------------------
def create_app(
    data_dir: Path | str | None = None, *, service: CndaService | None = None
) -> FastAPI:
    """A FastAPI app serving only the CNDA mock (tests, standalone use)."""
    owned_db: Database | None = None
    if service is None:
        data = DataDir.open(data_dir)
        owned_db = Database(data.db_path)
        service = CndaService(owned_db, data)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned_db is not None:
            owned_db.close()

    app = FastAPI(
        title="segur-sim CNDA mock (SIMULATION)",
        version=__version__,
        description=(
            f"{DISCLAIMER}\n\nOur own design: CNDA publishes no API and this one mirrors "
            f"none. No login: send `{ROLE_HEADER}: editor|agent`. Every identifier is "
            "prefixed SIMU-."
        ),
        lifespan=lifespan,
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable(exc.errors())}, status_code=422)

    app.include_router(build_router(service))
    app.state.cnda_service = service
    return app


def jsonable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(value)
