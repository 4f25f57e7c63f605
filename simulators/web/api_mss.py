"""REST API of the MSS simulator: mailboxes, PSC tokens, certificates, messages.

The same operations as ``segur-sim bal`` / ``segur-sim psc`` (and more: reading the
test mailboxes, feeding mail to them), so that a CI job can drive everything over
HTTPS. ``GET /api/mss/mailboxes/{address}`` itself lives in ``mss/http_routes.py``.

``DELETE /api/mss/mailboxes/{address}`` removes a mailbox (see :func:`delete_mailbox`).

Errors are JSON ``{"detail": ...}``: 404 unknown mailbox, folder or message; 409 a
request the mailbox's type or state does not allow (or a run in progress on it); 413 a
body over the upload limit; 422 invalid input. Mail content is returned as data, never rendered.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from simulators.core.pki import P12_PASSWORD
from simulators.core.store.mail import Folder, Mailbox, MailboxType, MailStoreError
from simulators.mss.services import MssServices
from simulators.web import mailview
from simulators.web.mailview import Attachment, MailViewError

PREFIX = "/api/mss"


# ---- models -----------------------------------------------------------------------------------
class ErrorOut(BaseModel):
    detail: Any = Field(description="What went wrong (a message, or validation errors)")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed body (not decodable)"},
    403: {"model": ErrorOut, "description": "Cross-origin request from a browser"},
    404: {"model": ErrorOut, "description": "Unknown mailbox, folder, message or part"},
    409: {"model": ErrorOut, "description": "Not allowed for this mailbox"},
    413: {"model": ErrorOut, "description": "Body over the upload limit"},
    422: {"model": ErrorOut, "description": "Invalid input"},
}


class MailboxIn(BaseModel):
    address: str = Field(min_length=3, max_length=254, examples=["dr.martin@mssante.localhost"])
    type: Literal["PER", "ORG", "APP"] = Field(
        description="PER personal, ORG organisational, APP applicative"
    )
    display_name: str | None = Field(default=None, max_length=200)
    entity: str | None = Field(default=None, max_length=200, examples=["LABO BIO"])


class MailboxOut(BaseModel):
    id: int
    address: str
    type: str
    display_name: str
    entity: str
    created_at: float


class CredentialsOut(BaseModel):
    address: str
    type: str
    auth: str = Field(description="How this mailbox authenticates over SMTP/IMAP")
    psc_subject: str | None = None
    token_url: str | None = Field(default=None, description="POST here for a PSC token")
    client_certificate_url: str | None = None
    client_key_url: str | None = None
    client_p12_url: str | None = None
    client_p12_password: str | None = None
    client_certificate_subject: str | None = None
    client_certificate_fingerprint: str | None = None
    ca_bundle_url: str


class MailboxCreatedOut(MailboxOut):
    credentials: CredentialsOut


class MailboxDeletedOut(BaseModel):
    address: str
    type: str
    deleted: bool = True
    folders: int = Field(description="Folders removed")
    messages: int = Field(description="Messages removed (with their flags)")
    bodies_freed: int = Field(description="Stored message bodies no longer used by anything")
    refresh_tokens_revoked: int = Field(description="PSC refresh tokens revoked, then removed")
    sessions_closed: int = Field(description="Live SMTP/IMAP sessions closed by the server")
    submissions_kept: int = Field(
        description="Mail it submitted, kept as evidence (GET /api/mss/submissions/{id}/message)"
    )
    runs_kept: list[str] = Field(
        description="Conformance runs naming it: kept, with their proof bundles (archives)"
    )


class TokenIn(BaseModel):
    lifetime: int | None = Field(
        default=None, ge=1, le=86400, description="Access-token lifetime in seconds"
    )


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    scope: str
    session_state: str


class RevokedOut(BaseModel):
    revoked: int


class FolderOut(BaseModel):
    name: str
    messages: int
    unseen: int
    uidnext: int
    uidvalidity: int
    subscribed: bool


class MessageSummaryOut(BaseModel):
    uid: int
    size: int
    internal_date: float
    flags: list[str]
    subject: str
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    date: str
    message_id: str

    model_config = {"populate_by_name": True}


class MessageListOut(BaseModel):
    mailbox: str
    folder: str
    total: int
    offset: int
    messages: list[MessageSummaryOut]


class HeaderOut(BaseModel):
    name: str
    value: str


class TreeRowOut(BaseModel):
    depth: int
    section: str
    type: str
    size: int
    header_bytes: int


class PartOut(BaseModel):
    section: str
    content_type: str
    size: int
    filename: str | None
    disposition: str | None
    charset: str | None


class TextOut(BaseModel):
    section: str
    text: str


class MessageOut(MessageSummaryOut):
    folder: str
    headers: list[HeaderOut]
    mss_headers: list[HeaderOut] = Field(description="The X-MSS* headers, in order")
    tree: list[TreeRowOut] = Field(description="The MIME tree computed at storage time")
    parts: list[PartOut]
    text: list[TextOut] = Field(description="Decoded text/plain parts")
    has_html: bool


class AttachmentIn(BaseModel):
    filename: str = Field(min_length=1, max_length=255, examples=["IHE_XDM.ZIP"])
    content_type: str | None = Field(default=None, max_length=200)
    content_base64: str


class SendIn(BaseModel):
    from_: str | None = Field(
        default=None,
        alias="from",
        max_length=254,
        description="Sender; default: webmail@DOMAIN. A local test mailbox keeps a copy in Sent.",
    )
    subject: str = Field(default="", max_length=998)
    text: str = Field(default="", description="The text/plain body")
    html: str | None = Field(default=None, description="An optional text/html alternative")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers, e.g. X-MSS-... (not the structural ones)"
    )
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)
    raw_base64: str | None = Field(
        default=None,
        description="A complete RFC 5322 message to deliver as is (the other fields are ignored)",
    )

    model_config = {"populate_by_name": True}


class SendOut(BaseModel):
    submission_id: int
    session_id: str = Field(description="The recorder's webmail session")
    delivered_to: list[str]
    outbound: list[str]
    sent_copy_uid: int | None
    size: int


class SubmissionOut(BaseModel):
    id: int
    received_at: float
    session_id: str | None
    mailbox: str | None
    mail_from: str
    rcpt_to: list[str]
    local_rcpts: list[str]
    outbound_rcpts: list[str]
    size: int


# ---- helpers ----------------------------------------------------------------------------------
def mailbox_or_404(services: MssServices, address: str) -> Mailbox:
    box = services.store.get_mailbox(address)
    if box is None:
        raise HTTPException(404, f"unknown mailbox {address}")
    return box


def folder_or_404(services: MssServices, box: Mailbox, name: str) -> Folder:
    folder = services.store.get_folder(box.id, name)
    if folder is None:
        raise HTTPException(404, f"no folder {name!r} in {box.address}")
    return folder


def credentials(services: MssServices, box: Mailbox, base: str = "") -> dict[str, Any]:
    mine = f"{base}{PREFIX}/mailboxes/{box.address}"
    info: dict[str, Any] = {
        "address": box.address,
        "type": box.type.value,
        "ca_bundle_url": f"{base}/pki/ca-bundle.pem",
    }
    if box.type is MailboxType.APP:
        creds = services.pki.client_credentials(box.address, box.entity)
        info.update(
            auth="mTLS with the ORG AUTH_CLI certificate, then SASL PLAIN (login = address)",
            client_certificate_url=f"{mine}/certificate.pem",
            client_key_url=f"{mine}/key.pem",
            client_p12_url=f"{mine}/certificate.p12",
            client_p12_password=P12_PASSWORD.decode(),
            client_certificate_subject=creds.subject,
            client_certificate_fingerprint=creds.fingerprint,
        )
    else:
        info.update(
            auth="SASL XOAUTH2 with a PSC access token, after TLS",
            psc_subject=services.psc.subject_for(box),
            token_url=f"{mine}/token",
        )
    return info


def runs_naming(services: MssServices, address: str) -> list[str]:
    """IDs of the conformance runs whose mailbox under test is ``address``."""
    from simulators.mss.conformance.runs import RunRepository

    RunRepository(services.db)  # makes sure the runs table exists
    rows = services.db.read(
        "SELECT id FROM mss_runs WHERE mailbox = ? COLLATE NOCASE ORDER BY started_at",
        (address,),
    )
    return [str(r[0]) for r in rows]


async def delete_mailbox(services: MssServices, request: Request, address: str) -> dict[str, Any]:
    """Delete a mailbox for the REST API and the console.

    Removes the mailbox, its folders, messages and flags, revokes (then removes) its PSC
    refresh tokens, and has the running server close its live SMTP/IMAP sessions. Kept,
    because they are archives: conformance runs and their proof bundles that name it,
    the mail it submitted (evidence of verdicts), the recorder's transcripts. Raises 404
    for an unknown mailbox, 409 while a conformance run uses it.
    """
    box = mailbox_or_404(services, address)
    runs = getattr(request.app.state, "runs", None)
    if runs is not None and runs.busy and runs.current is not None:
        from simulators.mss.conformance.runner import CORRESPONDENT_LOCAL

        in_use = {runs.current.mailbox.lower(), f"{CORRESPONDENT_LOCAL}@{services.domain}".lower()}
        if box.address.lower() in in_use:
            raise HTTPException(
                409,
                f"run {runs.current.run_id} is in progress and uses {box.address}: "
                "cancel it first (DELETE /api/mss/runs/{id})",
            )
    sim = runs.sim if runs is not None else None
    closed = 0
    if sim is not None:  # close first, so that no session works on a vanishing mailbox
        closed += await sim.drop_mail_sessions(box.address, "mailbox-deleted")
    deleted = await run_in_threadpool(services.delete_mailbox, box.address)
    if deleted is None:
        raise HTTPException(404, f"unknown mailbox {address}")
    if sim is not None:  # and any session that logged in meanwhile
        closed += await sim.drop_mail_sessions(box.address, "mailbox-deleted")
    return {
        **deleted.as_dict(),
        "deleted": True,
        "sessions_closed": closed,
        "runs_kept": runs_naming(services, box.address),
    }


def _app_creds(services: MssServices, address: str) -> Any:
    box = mailbox_or_404(services, address)
    if box.type is not MailboxType.APP:
        raise HTTPException(409, f"{address} is a {box.type.value} mailbox: it has no certificate")
    return services.pki.client_credentials(box.address, box.entity)


def _decode_b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, f"{what} is not valid base64") from None


def _peer(request: Request) -> tuple[str, int] | None:
    client = request.client
    return (client.host, client.port) if client else None


def safe_download_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-@" else "_" for c in name)
    return cleaned.strip("._") or "download"


Address = Annotated[
    str, Path(description="The mailbox address", examples=["dr.martin@mssante.localhost"])
]
FolderQ = Annotated[str, Query(max_length=200, description="Folder name")]
UidPath = Annotated[int, Path(ge=1, le=2**32 - 1, description="The message UID")]


# ---- router -----------------------------------------------------------------------------------
def build_router(services: MssServices) -> APIRouter:
    router = APIRouter(prefix=PREFIX, responses=ERRORS)

    @router.get("/mailboxes", response_model=list[MailboxOut], tags=["mailboxes"])
    def list_mailboxes() -> Any:
        """The test mailboxes (``segur-sim bal list``)."""
        return [b.as_dict() for b in services.store.list_mailboxes()]

    @router.post(
        "/mailboxes", status_code=201, response_model=MailboxCreatedOut, tags=["mailboxes"]
    )
    def create_mailbox(body: MailboxIn) -> Any:
        """Create a test mailbox (``segur-sim bal create``); 409 if it exists."""
        if services.store.get_mailbox(body.address) is not None:
            raise HTTPException(409, f"mailbox {body.address} already exists")
        try:
            box = services.store.create_mailbox(
                body.address, MailboxType(body.type), body.display_name or None, body.entity or None
            )
        except MailStoreError as exc:
            status = 409 if "already exists" in str(exc) else 422
            raise HTTPException(status, str(exc)) from None
        return {**box.as_dict(), "credentials": credentials(services, box)}

    @router.delete("/mailboxes/{address}", response_model=MailboxDeletedOut, tags=["mailboxes"])
    async def remove_mailbox(address: Address, request: Request) -> Any:
        """Delete a test mailbox (``segur-sim bal delete``): its folders, messages and
        flags, its PSC refresh tokens (revoked), its live SMTP/IMAP sessions (closed by
        the server). Past conformance runs and proof bundles naming it are archives:
        they stay, listed in ``runs_kept``; so do the mails it submitted. 404 for an
        unknown mailbox; 409 while a conformance run uses it. The address can be
        created again: it starts empty."""
        return await delete_mailbox(services, request, address)

    @router.get(
        "/mailboxes/{address}/credentials", response_model=CredentialsOut, tags=["mailboxes"]
    )
    def get_credentials(address: Address) -> Any:
        """How the mailbox authenticates, and where its token or certificate is."""
        return credentials(services, mailbox_or_404(services, address))

    @router.post("/mailboxes/{address}/token", response_model=TokenOut, tags=["psc"])
    def issue_token(address: Address, body: Annotated[TokenIn | None, Body()] = None) -> Any:
        """A PSC access token and refresh token (``segur-sim psc token --json``)."""
        box = mailbox_or_404(services, address)
        if box.type is MailboxType.APP:
            raise HTTPException(409, f"{address} is an APP mailbox: it uses its certificate")
        lifetime = body.lifetime if body else None
        return services.psc.issue(box, access_lifetime=lifetime).as_oauth_json()

    @router.post("/mailboxes/{address}/token/revoke", response_model=RevokedOut, tags=["psc"])
    def revoke_tokens(address: Address) -> Any:
        """Revoke every refresh token of the mailbox (``segur-sim psc revoke``)."""
        box = mailbox_or_404(services, address)
        return {"revoked": services.psc.revoke_mailbox_sessions(box)}

    @router.get(
        "/mailboxes/{address}/certificate.p12",
        tags=["mailboxes"],
        response_class=Response,
        responses={200: {"content": {"application/x-pkcs12": {}}}},
    )
    def certificate_p12(address: Address) -> Response:
        """The APP mailbox's ORG AUTH_CLI certificate and key as PKCS#12 (password
        ``segur-sim``)."""
        creds = _app_creds(services, address)
        return Response(
            creds.p12_path.read_bytes(),
            media_type="application/x-pkcs12",
            headers={
                "Content-Disposition": f'attachment; filename="{safe_download_name(address)}.p12"'
            },
        )

    @router.get(
        "/mailboxes/{address}/certificate.pem",
        tags=["mailboxes"],
        response_class=Response,
        responses={200: {"content": {"application/x-pem-file": {}}}},
    )
    def certificate_pem(address: Address) -> Response:
        """The APP mailbox's certificate chain (leaf first), PEM."""
        creds = _app_creds(services, address)
        return Response(creds.chain_path.read_bytes(), media_type="application/x-pem-file")

    @router.get(
        "/mailboxes/{address}/key.pem",
        tags=["mailboxes"],
        response_class=Response,
        responses={200: {"content": {"application/x-pem-file": {}}}},
    )
    def key_pem(address: Address) -> Response:
        """The APP mailbox's private key, PEM (a test key: never reuse it)."""
        creds = _app_creds(services, address)
        return Response(creds.key_path.read_bytes(), media_type="application/x-pem-file")

    @router.get("/mailboxes/{address}/folders", response_model=list[FolderOut], tags=["messages"])
    def list_folders(address: Address) -> Any:
        box = mailbox_or_404(services, address)
        result = []
        for folder in services.store.list_folders(box.id):
            status = services.store.folder_status(folder.id)
            result.append(
                {
                    "name": folder.name,
                    "messages": status.messages,
                    "unseen": status.unseen,
                    "uidnext": status.uidnext,
                    "uidvalidity": status.uidvalidity,
                    "subscribed": folder.subscribed,
                }
            )
        return result

    @router.get(
        "/mailboxes/{address}/messages",
        response_model=MessageListOut,
        response_model_by_alias=True,
        tags=["messages"],
    )
    def list_messages(
        address: Address,
        folder: FolderQ = "INBOX",
        limit: Annotated[int, Query(ge=1, le=mailview.MAX_LISTED)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> Any:
        """Messages of a folder, newest first."""
        box = mailbox_or_404(services, address)
        fold = folder_or_404(services, box, folder)
        total, items = mailview.list_messages(services, fold, limit=limit, offset=offset)
        return {
            "mailbox": box.address,
            "folder": fold.name,
            "total": total,
            "offset": offset,
            "messages": items,
        }

    def load(address: str, folder: str, uid: int) -> mailview.StoredMessage:
        box = mailbox_or_404(services, address)
        fold = folder_or_404(services, box, folder)
        try:
            return mailview.load_message(services, box, fold, uid)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None

    @router.get(
        "/mailboxes/{address}/messages/{uid}",
        response_model=MessageOut,
        response_model_by_alias=True,
        tags=["messages"],
    )
    def get_message(address: Address, uid: UidPath, folder: FolderQ = "INBOX") -> Any:
        """One message, parsed: headers (X-MSS* apart), MIME tree, parts, text."""
        return load(address, folder, uid).parsed()

    @router.get(
        "/mailboxes/{address}/messages/{uid}/raw",
        tags=["messages"],
        response_class=Response,
        responses={200: {"content": {"message/rfc822": {}}}},
    )
    def get_raw(address: Address, uid: UidPath, folder: FolderQ = "INBOX") -> Response:
        """The message exactly as stored."""
        msg = load(address, folder, uid)
        return Response(
            msg.raw,
            media_type="message/rfc822",
            headers={"Content-Disposition": f'attachment; filename="{uid}.eml"'},
        )

    @router.get(
        "/mailboxes/{address}/messages/{uid}/parts/{section}",
        tags=["messages"],
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def get_part(
        address: Address,
        uid: UidPath,
        section: Annotated[str, Path(max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")],
        folder: FolderQ = "INBOX",
    ) -> Response:
        """One part, decoded, as an attachment download (never rendered)."""
        msg = load(address, folder, uid)
        part = mailview.find_part(msg.raw, msg.meta, section)
        if part is None:
            raise HTTPException(404, f"no part {section} in message {uid}")
        name = safe_download_name(part.filename or f"part-{section}")
        return Response(
            mailview.part_bytes(msg.raw, part),
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    @router.post(
        "/mailboxes/{address}/messages", status_code=201, response_model=SendOut, tags=["messages"]
    )
    async def send_to_mailbox(address: Address, body: SendIn, request: Request) -> Any:
        """Deliver a mail *to* this mailbox, the way MOTCO2's webmail feeds the software
        under test: stored like an SMTP submission, recorded as a ``webmail`` session."""
        box = mailbox_or_404(services, address)
        sender = body.from_ or f"webmail@{services.domain}"
        try:
            sender = mailview.split_addresses(sender, "from")[0]
            if body.raw_base64 is not None:
                raw = _decode_b64(body.raw_base64, "raw_base64")
                if b"\n" not in raw[:65536]:
                    raise MailViewError("raw_base64 is not an RFC 5322 message (no header block)")
            else:
                raw = mailview.compose(
                    sender=sender,
                    recipients=[box.address],
                    subject=body.subject,
                    text=body.text,
                    html=body.html,
                    headers=body.headers,
                    attachments=[
                        Attachment(
                            a.filename,
                            _decode_b64(a.content_base64, f"attachment {a.filename}"),
                            a.content_type,
                        )
                        for a in body.attachments
                    ],
                    domain=services.domain,
                )
            delivery = await mailview.deliver(
                services, sender=sender, recipients=[box.address], raw=raw, peer=_peer(request)
            )
        except MailViewError as exc:
            status = 413 if "over the limit" in str(exc) else 422
            raise HTTPException(status, str(exc)) from None
        sub = delivery.submission
        return {
            "submission_id": sub.id,
            "session_id": delivery.session_id,
            "delivered_to": list(sub.local_rcpts),
            "outbound": list(sub.outbound_rcpts),
            "sent_copy_uid": delivery.sent_copy_uid,
            "size": sub.size,
        }

    @router.get("/submissions", response_model=list[SubmissionOut], tags=["messages"])
    def list_submissions(
        mailbox: Annotated[str | None, Query(max_length=254)] = None,
        since_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
        outbound_only: bool = False,
    ) -> Any:
        """Every mail submitted (SMTP or webmail), oldest first, 1000 at most (page with
        ``since_id``): what a client *sent*, including mail to other domains, which is
        kept here and never relayed."""
        box_id = mailbox_or_404(services, mailbox).id if mailbox else None
        subs = services.store.list_submissions(
            mailbox_id=box_id, since_id=since_id, outbound_only=outbound_only
        )
        names: dict[int, str] = {}
        result = []
        for sub in subs[:1000]:
            owner = None
            if sub.mailbox_id is not None:
                if sub.mailbox_id not in names:
                    found = services.store.get_mailbox_by_id(sub.mailbox_id)
                    names[sub.mailbox_id] = found.address if found else ""
                owner = names[sub.mailbox_id] or None
            result.append(
                {
                    "id": sub.id,
                    "received_at": sub.received_at,
                    "session_id": sub.session_id,
                    "mailbox": owner,
                    "mail_from": sub.mail_from,
                    "rcpt_to": list(sub.rcpt_to),
                    "local_rcpts": list(sub.local_rcpts),
                    "outbound_rcpts": list(sub.outbound_rcpts),
                    "size": sub.size,
                }
            )
        return result

    @router.get(
        "/submissions/{submission_id}/message",
        tags=["messages"],
        response_class=Response,
        responses={200: {"content": {"message/rfc822": {}}}},
    )
    def submission_message(
        submission_id: Annotated[int, Path(ge=1, le=2**62, description="The submission ID")],
    ) -> Response:
        """The mail exactly as the client submitted it (the evidence of a verdict)."""
        sub = services.store.get_submission(submission_id)
        if sub is None:
            raise HTTPException(404, f"no submission {submission_id}")
        return Response(
            services.store.blob(sub.blob_id),
            media_type="message/rfc822",
            headers={
                "Content-Disposition": f'inline; filename="submission-{submission_id}.eml"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    @router.get(
        "/sessions/{session_id}/transcript",
        tags=["messages"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}, "application/json": {}}}},
    )
    def session_transcript(
        session_id: Annotated[str, Path(max_length=100, description="A recorder session ID")],
        format: Annotated[Literal["text", "json"], Query(description="text or json")] = "text",
    ) -> Response:
        """A recorded wire session (SMTP, IMAP, HTTP), tokens redacted, as in proof
        bundles: plain text, or JSON with the session's fields and events."""
        recorder = services.recorder
        session = recorder.session(session_id)
        if session is None:
            raise HTTPException(404, f"no recorded session {session_id}")
        if format == "json":
            return JSONResponse(
                {
                    "id": session.id,
                    "protocol": session.protocol,
                    "endpoint": session.endpoint,
                    "startedAt": session.started_at,
                    "endedAt": session.ended_at,
                    "fields": json.loads(json.dumps(session.fields, default=str)),
                    "events": [
                        {"seq": e.seq, "ts": e.ts, "direction": e.direction, "data": e.data}
                        for e in recorder.events(session_id)
                    ],
                }
            )
        return Response(
            recorder.transcript(session_id),
            media_type="text/plain; charset=utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    return router
