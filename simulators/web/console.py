"""The web console: server-rendered pages (Jinja2) with a little vanilla JavaScript.

Pages: mailboxes, webmail, validators, CNDA (editor and agent views), and the MSS
conformance runs and coverage (``console_runs.py``). Every page shows the SIMULATION
disclaimer (``base.html``), is served with a strict CSP (no inline script), and every
form that changes state carries the per-session CSRF token (``security.py``). HTML from
mail content is only ever shown escaped, or in a ``sandbox=""`` iframe whose own response
forbids scripts.

The console is served on the HTTPS port only: a console page asked over plain HTTP is
redirected there (the CSRF cookie is ``Secure``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from simulators import DISCLAIMER, __version__
from simulators.cnda.errors import CndaError
from simulators.cnda.service import CndaService
from simulators.cnda.states import TRANSITIONS, Action, DocumentType, Role, State
from simulators.core.pki import P12_PASSWORD
from simulators.core.store.mail import MailboxType, MailStoreError
from simulators.interop.api import ValidationRepository, get_options, get_repository
from simulators.interop.engine import KINDS, ValidationOptions
from simulators.interop.report import ValidationReport
from simulators.mss.services import MssServices
from simulators.web import mailview
from simulators.web.api_mss import credentials, delete_mailbox
from simulators.web.api_validations import run_validation
from simulators.web.mailview import Attachment, MailViewError
from simulators.web.security import (
    CONSOLE_CSP,
    CSRF_FIELD,
    MAIL_HTML_CSP,
    check_csrf,
    csrf_token_of,
    set_csrf_cookie,
)

if TYPE_CHECKING:
    from jinja2 import Environment

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
MAX_COMPOSE_ATTACHMENTS = 10


def _env() -> Environment:
    # jinja2 is imported by the first page, not at start-up; templates compile on use.
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda value: quote(str(value), safe="@")
    return env


async def require_https(request: Request) -> None:
    """Console pages are on the HTTPS port; plain HTTP is redirected there."""
    if request.url.scheme == "https":
        return
    console = getattr(request.app.state, "console_url", None)
    target = console() if callable(console) else None
    if request.method in ("GET", "HEAD") and target:
        url = target.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        raise HTTPException(307, "the console is served over HTTPS", headers={"Location": url})
    raise HTTPException(403, "the console is served over HTTPS only")


Csrf = Depends(check_csrf)


class Console:
    def __init__(
        self,
        services: MssServices,
        endpoints: Callable[[], dict[str, Any]],
        cnda: CndaService,
    ) -> None:
        self.services = services
        self.endpoints = endpoints
        self.cnda = cnda
        # Filters and globals the other page modules add (console_runs.py).
        self.template_filters: dict[str, Callable[..., Any]] = {}
        self.template_globals: dict[str, Any] = {}
        self._jinja: Environment | None = None

    @property
    def env(self) -> Environment:
        """The template environment, made by the first page (two at once: one is kept)."""
        if self._jinja is None:
            env = _env()
            env.filters.update(self.template_filters)
            env.globals.update(self.template_globals)
            self._jinja = env
        return self._jinja

    # ---- rendering --------------------------------------------------------------------------
    def render(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        token = csrf_token_of(request)
        page = self.env.get_template(template).render(
            request=request,
            disclaimer=DISCLAIMER,
            version=__version__,
            csrf_field=CSRF_FIELD,
            csrf_token=token,
            nav=context.pop("nav", ""),
            **context,
        )
        response = HTMLResponse(page, status_code=status_code)
        response.headers["Content-Security-Policy"] = CONSOLE_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        set_csrf_cookie(request, response)
        return response

    # ---- helpers ------------------------------------------------------------------------------
    def mailbox(self, address: str) -> Any:
        box = self.services.store.get_mailbox(address)
        if box is None:
            raise HTTPException(404, f"unknown mailbox {address}")
        return box

    def folder(self, box: Any, name: str) -> Any:
        folder = self.services.store.get_folder(box.id, name)
        if folder is None:
            raise HTTPException(404, f"no folder {name!r} in {box.address}")
        return folder


def _report_rows(report: ValidationReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def visit(sub: Any, path: str) -> None:
        name = f"{path} / {sub.name}" if path else sub.name
        for con in sub.constraints:
            rows.append(
                {
                    "subreport": name,
                    "id": con.constraint_id,
                    "severity": con.severity.value,
                    "passed": con.passed,
                    "description": con.description,
                    "location": con.location.render() if con.location else "",
                }
            )
        for child in sub.subreports:
            visit(child, name)

    for sub in report.subreports:
        visit(sub, "")
    # failures first, in report order
    return sorted(rows, key=lambda r: r["passed"])


def build_router(
    services: MssServices,
    endpoints: Callable[[], dict[str, Any]],
    cnda: CndaService,
) -> APIRouter:
    console = Console(services, endpoints, cnda)
    router = APIRouter(
        include_in_schema=False, dependencies=[Depends(require_https)], tags=["console"]
    )
    store = services.store

    # ---- home -----------------------------------------------------------------------------
    @router.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        info = endpoints() or {}
        return console.render(
            request,
            "index.html",
            nav="home",
            info=info,
            mailboxes=len(store.list_mailboxes()),
        )

    # ---- mailboxes -------------------------------------------------------------------------
    def mailboxes_page(request: Request, *, error: str | None = None, form: Any = None) -> Any:
        deleted = request.query_params.get("deleted", "")[:254] if request.method == "GET" else ""
        if deleted and store.get_mailbox(deleted) is not None:
            deleted = ""  # only say "deleted" of a mailbox that is gone
        return console.render(
            request,
            "mailboxes.html",
            nav="mailboxes",
            deleted=deleted,
            boxes=store.list_mailboxes(),
            domain=services.domain,
            error=error,
            form=form or {},
            status_code=422 if error else 200,
        )

    @router.get("/mailboxes", response_class=HTMLResponse)
    def mailboxes(request: Request) -> Any:
        return mailboxes_page(request)

    @router.post("/mailboxes", dependencies=[Csrf])
    async def create_mailbox(request: Request) -> Any:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        address = fields.get("address", "").strip()
        if address and "@" not in address:
            address = f"{address}@{services.domain}"
        type_ = fields.get("type", "").upper()
        if type_ not in ("PER", "ORG", "APP"):
            return mailboxes_page(request, error="choose a type: PER, ORG or APP", form=fields)
        try:
            box = await run_in_threadpool(
                store.create_mailbox,
                address,
                MailboxType(type_),
                fields.get("display_name") or None,
                fields.get("entity") or None,
            )
        except MailStoreError as exc:
            return mailboxes_page(request, error=str(exc), form=fields)
        return RedirectResponse(f"/mailboxes/{quote(box.address, safe='@')}", status_code=303)

    def mailbox_page(request: Request, address: str, **extra: Any) -> HTMLResponse:
        box = console.mailbox(address)
        return console.render(
            request,
            "mailbox.html",
            nav="mailboxes",
            box=box,
            creds=credentials(services, box),
            p12_password=P12_PASSWORD.decode(),
            endpoints=(endpoints() or {}).get("endpoints", {}),
            **extra,
        )

    @router.get("/mailboxes/{address}", response_class=HTMLResponse)
    def mailbox(request: Request, address: str) -> HTMLResponse:
        return mailbox_page(request, address)

    @router.post("/mailboxes/{address}/token", dependencies=[Csrf], response_class=HTMLResponse)
    def mailbox_token(request: Request, address: str) -> HTMLResponse:
        box = console.mailbox(address)
        if box.type is MailboxType.APP:
            raise HTTPException(409, f"{address} is an APP mailbox: it uses its certificate")
        pair = services.psc.issue(box)
        return mailbox_page(request, address, token=pair.as_oauth_json())

    @router.post("/mailboxes/{address}/delete", dependencies=[Csrf])
    async def mailbox_delete(request: Request, address: str) -> Any:
        console.mailbox(address)  # 404 JSON for an unknown mailbox
        try:
            await delete_mailbox(services, request, address)
        except HTTPException as exc:
            if exc.status_code != 409:
                raise
            page = mailbox_page(request, address, error=str(exc.detail))
            page.status_code = 409
            return page
        return RedirectResponse(f"/mailboxes?deleted={quote(address, safe='@')}", status_code=303)

    # ---- webmail ---------------------------------------------------------------------------
    @router.get("/webmail/{address}", response_class=HTMLResponse)
    def webmail(request: Request, address: str, folder: str = "INBOX", offset: int = 0) -> Any:
        box = console.mailbox(address)
        fold = console.folder(box, folder)
        offset = max(0, offset)
        total, items = mailview.list_messages(services, fold, limit=50, offset=offset)
        folders = [(f, store.folder_status(f.id)) for f in store.list_folders(box.id)]
        return console.render(
            request,
            "webmail.html",
            nav="mailboxes",
            box=box,
            folder=fold,
            folders=folders,
            total=total,
            offset=offset,
            messages=items,
            sent=request.query_params.get("sent"),
        )

    def load(address: str, folder: str, uid: int) -> mailview.StoredMessage:
        box = console.mailbox(address)
        fold = console.folder(box, folder)
        try:
            return mailview.load_message(services, box, fold, uid)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None

    @router.get("/webmail/{address}/messages/{uid}", response_class=HTMLResponse)
    def read_message(request: Request, address: str, uid: int, folder: str = "INBOX") -> Any:
        msg = load(address, folder, uid)
        headers = msg.headers()
        all_parts = msg.parts()
        shown = []
        for part in all_parts:
            item: dict[str, Any] = {"part": part}
            if part.content_type == "text/plain" and part.disposition != "attachment":
                item["text"] = mailview.part_text(msg.raw, part)
            elif part.content_type == "text/html" and part.disposition != "attachment":
                item["html_source"] = mailview.part_text(msg.raw, part)
            elif part.is_zip:
                entries, problem = mailview.zip_entries(mailview.part_bytes(msg.raw, part))
                item["zip"] = entries
                item["zip_error"] = problem
                item["is_xdm"] = any(e["xdm_metadata"] for e in entries)
            shown.append(item)
        return console.render(
            request,
            "message.html",
            nav="mailboxes",
            box=msg.mailbox,
            folder=msg.folder,
            msg=msg,
            summary=msg.summary(),
            headers=headers,
            is_mss=mailview.is_mss_header,
            mss_count=sum(1 for n, _v in headers if mailview.is_mss_header(n)),
            tree=mailview.tree_rows(msg.meta),
            parts=shown,
        )

    @router.get("/webmail/{address}/messages/{uid}/html/{section}")
    def message_html(address: str, uid: int, section: str, folder: str = "INBOX") -> Response:
        """A text/html part for the sandboxed iframe: scripts are forbidden twice, by
        the iframe's ``sandbox=""`` and by this response's CSP (``sandbox`` included)."""
        msg = load(address, folder, uid)
        part = mailview.find_part(msg.raw, msg.meta, section)
        if part is None or part.content_type != "text/html":
            raise HTTPException(404, f"no text/html part {section} in message {uid}")
        return Response(
            mailview.part_text(msg.raw, part),
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": MAIL_HTML_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    @router.post(
        "/webmail/{address}/messages/{uid}/validate",
        dependencies=[Csrf],
        response_class=HTMLResponse,
    )
    async def validate_attachment(
        request: Request,
        address: str,
        uid: int,
        repository: Annotated[ValidationRepository, Depends(get_repository)],
        options: Annotated[ValidationOptions, Depends(get_options)],
    ) -> Any:
        """One click: validate an attachment (an IHE_XDM.ZIP as XDM) or one of its entries."""
        form = await request.form()
        folder = str(form.get("folder") or "INBOX")
        section = str(form.get("section") or "")
        entry = str(form.get("entry") or "")
        msg = load(address, folder, uid)
        part = mailview.find_part(msg.raw, msg.meta, section)
        if part is None:
            raise HTTPException(404, f"no part {section} in message {uid}")
        content = mailview.part_bytes(msg.raw, part)
        name = part.filename or f"part-{section}"
        kind = "auto"
        if entry:
            found = mailview.zip_entry(content, entry)
            if found is None:
                raise HTTPException(404, f"no entry {entry!r} in {name}")
            content, name = found, entry
        elif part.is_zip:
            kind = "xdm"
        oid, _report = await run_validation(content, name, kind, repository, options)
        return RedirectResponse(f"/validators/{oid}", status_code=303)

    @router.get("/webmail/{address}/compose", response_class=HTMLResponse)
    def compose_form(request: Request, address: str, to: str = "") -> Any:
        box = console.mailbox(address)
        others = [b for b in store.list_mailboxes() if b.id != box.id]
        return console.render(
            request,
            "compose.html",
            nav="mailboxes",
            box=box,
            others=others,
            form={"to": to},
            error=None,
        )

    @router.post("/webmail/{address}/compose", dependencies=[Csrf])
    async def compose_send(request: Request, address: str) -> Any:
        box = console.mailbox(address)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        headers: dict[str, str] = {}
        names = form.getlist("header_name")
        values = form.getlist("header_value")
        for name, value in zip(names, values, strict=False):
            if isinstance(name, str) and isinstance(value, str) and name.strip():
                headers[name.strip()] = value.strip()
        attachments = []
        for upload in form.getlist("attachment"):
            if isinstance(upload, UploadFile) and upload.filename:
                attachments.append(
                    Attachment(upload.filename, await upload.read(), upload.content_type)
                )
        try:
            if len(attachments) > MAX_COMPOSE_ATTACHMENTS:
                raise MailViewError(f"at most {MAX_COMPOSE_ATTACHMENTS} attachments")
            recipients = mailview.split_addresses(fields.get("to", ""), "to")
            raw = mailview.compose(
                sender=box.address,
                recipients=recipients,
                subject=fields.get("subject", ""),
                text=fields.get("text", ""),
                html=fields.get("html") or None,
                headers=headers,
                attachments=attachments,
                domain=services.domain,
            )
            client = request.client
            delivery = await mailview.deliver(
                services,
                sender=box.address,
                recipients=recipients,
                raw=raw,
                peer=(client.host, client.port) if client else None,
            )
        except MailViewError as exc:
            others = [b for b in store.list_mailboxes() if b.id != box.id]
            return console.render(
                request,
                "compose.html",
                nav="mailboxes",
                box=box,
                others=others,
                form=fields,
                error=str(exc),
                status_code=413 if "over the limit" in str(exc) else 422,
            )
        target = f"/webmail/{quote(box.address, safe='@')}?folder=Sent"
        return RedirectResponse(f"{target}&sent={delivery.submission.id}", status_code=303)

    # ---- validators -------------------------------------------------------------------------
    @router.get("/validators", response_class=HTMLResponse)
    def validators(request: Request) -> Any:
        return console.render(request, "validators.html", nav="validators", kinds=KINDS, error=None)

    @router.post("/validators", dependencies=[Csrf])
    async def validators_upload(
        request: Request,
        repository: Annotated[ValidationRepository, Depends(get_repository)],
        options: Annotated[ValidationOptions, Depends(get_options)],
    ) -> Any:
        form = await request.form()
        upload = form.get("file")
        kind = form.get("kind") or "auto"
        if not isinstance(upload, UploadFile) or not upload.filename:
            return console.render(
                request,
                "validators.html",
                nav="validators",
                kinds=KINDS,
                error="choose a file to validate",
                status_code=422,
            )
        if not isinstance(kind, str) or kind not in ("auto", *KINDS):
            kind = "auto"
        content = await upload.read()
        oid, _report = await run_validation(content, upload.filename, kind, repository, options)
        return RedirectResponse(f"/validators/{oid}", status_code=303)

    @router.get("/validators/{oid}", response_class=HTMLResponse)
    def validation(
        request: Request,
        oid: str,
        repository: Annotated[ValidationRepository, Depends(get_repository)],
    ) -> Any:
        item = repository.get(oid)
        if item is None:
            raise HTTPException(404, f"no validation {oid}")
        report = item.report
        return console.render(
            request,
            "validation.html",
            nav="validators",
            oid=oid,
            report=report,
            counters=report.counters,
            rows=_report_rows(report),
        )

    # ---- CNDA ---------------------------------------------------------------------------------
    def cnda_call(fn: Callable[[], Any]) -> tuple[Any, str | None]:
        try:
            return fn(), None
        except CndaError as exc:
            return None, exc.message

    async def cnda_acall(fn: Callable[[], Any]) -> tuple[Any, str | None]:
        # Service writes wait for a commit (fsync): keep them off the event loop.
        return await run_in_threadpool(cnda_call, fn)

    @router.get("/cnda", response_class=HTMLResponse)
    def cnda_home(request: Request) -> Any:
        return console.render(
            request,
            "cnda.html",
            nav="cnda",
            editors=cnda.repo.editors(),
            error=None,
        )

    @router.post("/cnda/editors", dependencies=[Csrf])
    async def cnda_register(request: Request) -> Any:
        form = await request.form()
        name = str(form.get("name") or "")
        contact = str(form.get("contact_email") or "")
        editor, error = await cnda_acall(lambda: cnda.register_editor(name, contact))
        if error:
            return console.render(
                request,
                "cnda.html",
                nav="cnda",
                editors=cnda.repo.editors(),
                error=error,
                status_code=422,
            )
        return RedirectResponse(f"/cnda/editors/{quote(editor.nie)}", status_code=303)

    def editor_page(request: Request, nie: str, *, error: str | None = None) -> HTMLResponse:
        editor, problem = cnda_call(lambda: cnda.editor(nie))
        if problem:
            raise HTTPException(404, problem)
        software = cnda.repo.software_of(nie)
        dossiers = [cnda.status(d.id) for d in cnda.repo.dossiers(nie)]
        return console.render(
            request,
            "cnda_editor.html",
            nav="cnda",
            editor=editor,
            software=software,
            dossiers=dossiers,
            catalogue=list(cnda.catalogue.services.values()),
            error=error,
            status_code=422 if error else 200,
        )

    @router.get("/cnda/editors/{nie}", response_class=HTMLResponse)
    def cnda_editor(request: Request, nie: str) -> Any:
        return editor_page(request, nie)

    @router.post("/cnda/editors/{nie}/software", dependencies=[Csrf])
    async def cnda_software(request: Request, nie: str) -> Any:
        form = await request.form()
        parent = str(form.get("component_of") or "") or None
        _sw, error = await cnda_acall(
            lambda: cnda.create_software(
                nie,
                str(form.get("name") or ""),
                str(form.get("version") or ""),
                component_of=parent,
            )
        )
        if error:
            return editor_page(request, nie, error=error)
        return RedirectResponse(f"/cnda/editors/{quote(nie)}", status_code=303)

    @router.post("/cnda/editors/{nie}/requests", dependencies=[Csrf])
    async def cnda_open(request: Request, nie: str) -> Any:
        form = await request.form()
        service_id = str(form.get("service") or "")
        nil = str(form.get("nil") or "")
        perimeter: dict[str, list[str]] = {}
        for key in form:
            if key.startswith(f"dim:{service_id}:"):
                values = [v for v in form.getlist(key) if isinstance(v, str)]
                perimeter[key.split(":", 2)[2]] = values
        dossier, error = await cnda_acall(
            lambda: cnda.open_request(nie, nil, service_id, perimeter)
        )
        if error:
            return editor_page(request, nie, error=error)
        return RedirectResponse(f"/cnda/requests/{quote(dossier.id)}?role=editor", status_code=303)

    def request_page(
        request: Request,
        request_id: str,
        role: str,
        *,
        error: str | None = None,
        declared: list[str] | None = None,
    ) -> HTMLResponse:
        status, problem = cnda_call(lambda: cnda.status(request_id))
        if problem:
            raise HTTPException(404, problem)
        # Plan coverage by the current round's proofs (cnda/coverage.py), by case ID.
        coverage = status["coverage"]
        role_enum = Role.AGENT if role == "agent" else Role.EDITOR
        actions = [
            {
                "action": a,
                "summary": TRANSITIONS[Action(a)].summary,
                "needs_reason": TRANSITIONS[Action(a)].needs_reason,
            }
            for a in status["allowedActions"]
            if role_enum in TRANSITIONS[Action(a)].roles
        ]
        return console.render(
            request,
            "cnda_request.html",
            nav="cnda",
            status=status,
            role=role_enum.value,
            actions=actions,
            events=cnda.events(request_id),
            doc_types=[d.value for d in DocumentType],
            proof_states={State.PRE_EXAMEN.value, State.CORRECTION.value},
            plan=status.get("testPlan") or None,
            coverage=coverage,
            coverage_by_case={c["id"]: c for c in coverage["cases"]},
            declared=set(declared or ()),
            error=error,
            status_code=422 if error else 200,
        )

    @router.get("/cnda/requests/{request_id}", response_class=HTMLResponse)
    def cnda_request(request: Request, request_id: str, role: str = "editor") -> Any:
        return request_page(request, request_id, role)

    def back(request_id: str, role: str) -> RedirectResponse:
        return RedirectResponse(
            f"/cnda/requests/{quote(request_id)}?role={quote(role)}", status_code=303
        )

    @router.post("/cnda/requests/{request_id}/documents", dependencies=[Csrf])
    async def cnda_document(request: Request, request_id: str) -> Any:
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return request_page(request, request_id, "editor", error="choose a file")
        content = await upload.read()
        doc_type = str(form.get("doc_type") or "")
        _doc, error = await cnda_acall(
            lambda: cnda.deposit_document(request_id, doc_type, upload.filename or "doc", content)
        )
        if error:
            return request_page(request, request_id, "editor", error=error)
        return back(request_id, "editor")

    @router.post("/cnda/requests/{request_id}/proofs", dependencies=[Csrf])
    async def cnda_proof(request: Request, request_id: str) -> Any:
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return request_page(request, request_id, "editor", error="choose a file")
        content = await upload.read()
        # The plan cases the editor declares this proof covers: checkboxes, or (like the
        # REST API's multipart field) comma-separated IDs. An ID outside the plan is
        # refused by the service (InvalidInputError, 422) and nothing is recorded.
        cases = [
            case.strip()
            for value in form.getlist("cases")
            if isinstance(value, str)
            for case in value.split(",")
            if case.strip()
        ]
        _proof, error = await cnda_acall(
            lambda: cnda.deposit_proof_upload(
                request_id, upload.filename or "proof", content, cases=cases or None
            )
        )
        if error:
            return request_page(request, request_id, "editor", error=error, declared=cases)
        return back(request_id, "editor")

    @router.post("/cnda/requests/{request_id}/actions", dependencies=[Csrf])
    async def cnda_action(request: Request, request_id: str) -> Any:
        form = await request.form()
        role = "agent" if form.get("role") == "agent" else "editor"

        def text(name: str) -> str | None:
            value = form.get(name)
            return value.strip() or None if isinstance(value, str) else None

        _d, error = await cnda_acall(
            lambda: cnda.transition(
                request_id,
                str(form.get("action") or ""),
                role=role,
                reason=text("reason"),
                exam_date=text("exam_date"),
                exam_mode=text("exam_mode"),
            )
        )
        if error:
            return request_page(request, request_id, role, error=error)
        return back(request_id, role)

    @router.post("/cnda/requests/{request_id}/agent-run", dependencies=[Csrf])
    def cnda_agent_run(request: Request, request_id: str) -> Any:
        _r, error = cnda_call(lambda: cnda.run_agent(request_id))
        if error:
            return request_page(request, request_id, "agent", error=error)
        return back(request_id, "agent")

    @router.get("/cnda/agent", response_class=HTMLResponse)
    def cnda_agent(request: Request) -> Any:
        dossiers = [cnda.status(d.id) for d in cnda.repo.dossiers(None)]
        return console.render(request, "cnda_agent.html", nav="cnda", dossiers=dossiers)

    # ---- conformance runs and coverage (console_runs.py) ------------------------------------
    from simulators.web.console_runs import add_routes as add_runs_routes

    add_runs_routes(router, console)
    return router
