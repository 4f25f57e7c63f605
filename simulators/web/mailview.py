"""Reading stored mail for the webmail and the REST API, and feeding mail to a mailbox.

Reading starts from the MIME tree computed at storage time (``meta["tree"]`` of
:func:`simulators.mss.mime.analyse_message`): part numbers are IMAP section numbers,
each part is a slice of the raw message, and only the part being shown is decoded
(with the stdlib's tolerant ``compat32`` parser).

Nothing here produces HTML: the templates escape everything, and text/html parts
are served on their own with a CSP that forbids scripts (see ``console.py``).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import mimetypes
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import Any

from simulators.core.store.mail import Folder, Mailbox, MessageRow, NewSubmission, Submission
from simulators.mss.mime import analyse_message, decode_words, meta_is_current
from simulators.mss.services import MssServices

MSS_HEADER_PREFIX = "x-mss"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,75}$")
# Headers the composer builds itself; a caller cannot override them.
_RESERVED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "received",
    }
)
MAX_LISTED = 500


class MailViewError(ValueError):
    """Bad input for composing or reading (422 over HTTP)."""


# ---- reading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    section: str
    content_type: str
    size: int
    filename: str | None
    disposition: str | None
    charset: str | None
    node: dict[str, Any] = field(repr=False)

    @property
    def is_text(self) -> bool:
        return self.content_type in ("text/plain", "text/html") and self.disposition != "attachment"

    @property
    def is_zip(self) -> bool:
        name = (self.filename or "").upper()
        return name.endswith(".ZIP") or self.content_type in (
            "application/zip",
            "application/x-zip-compressed",
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "content_type": self.content_type,
            "size": self.size,
            "filename": self.filename,
            "disposition": self.disposition,
            "charset": self.charset,
        }


def current_meta(raw: bytes, meta: dict[str, Any] | None) -> dict[str, Any]:
    return meta if meta is not None and meta_is_current(meta) else analyse_message(raw)


def header_list(raw: bytes, meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The top-level headers, unfolded and decoded, in order (repeats kept)."""
    start, end = meta["tree"]["h"]
    headers: list[tuple[str, str]] = []
    for line in raw[start:end].decode("latin-1").split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon and name.strip():
            headers.append((name.strip(), value.strip()))
    return [(name, decode_words(value)) for name, value in headers]


def is_mss_header(name: str) -> bool:
    return name.lower().startswith(MSS_HEADER_PREFIX)


def _walk(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if "c" in node:
        for index, child in enumerate(node["c"], start=1):
            yield from _walk(child, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix or "1", node


def _leaf_message(raw: bytes, node: dict[str, Any]) -> Message:
    start, end = node["h"][0], node["b"][1]
    return email.message_from_bytes(raw[start:end], policy=email.policy.compat32)


def parts(raw: bytes, meta: dict[str, Any]) -> list[Part]:
    """The leaf parts (a message/rfc822 part is one leaf), with IMAP section numbers."""
    found: list[Part] = []
    for section, node in _walk(meta["tree"], ""):
        msg = _leaf_message(raw, node)
        filename = msg.get_filename()
        disposition = msg.get_content_disposition()
        found.append(
            Part(
                section=section,
                content_type=node["t"],
                size=node["b"][1] - node["b"][0],
                filename=decode_words(filename) if filename else None,
                disposition=disposition,
                charset=msg.get_content_charset(),
                node=node,
            )
        )
    return found


def find_part(raw: bytes, meta: dict[str, Any], section: str) -> Part | None:
    return next((p for p in parts(raw, meta) if p.section == section), None)


def part_bytes(raw: bytes, part: Part) -> bytes:
    """The decoded content of a part (transfer encoding undone)."""
    msg = _leaf_message(raw, part.node)
    if part.content_type == "message/rfc822":
        return raw[part.node["b"][0] : part.node["b"][1]]
    try:
        payload = msg.get_payload(decode=True)
    except Exception:  # compat32 is tolerant; this is a last resort for odd input
        payload = None
    if isinstance(payload, bytes):
        return payload
    return raw[part.node["b"][0] : part.node["b"][1]]


def part_text(raw: bytes, part: Part) -> str:
    data = part_bytes(raw, part)
    try:
        return data.decode(part.charset or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def tree_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The MIME tree as indented rows (depth, section, type, size), message/rfc822 opened."""
    rows: list[dict[str, Any]] = []

    def visit(node: dict[str, Any], section: str, depth: int) -> None:
        rows.append(
            {
                "depth": depth,
                "section": section or "(message)",
                "type": node["t"],
                "size": node["b"][1] - node["b"][0],
                "header_bytes": node["h"][1] - node["h"][0],
            }
        )
        if "c" in node:
            for index, child in enumerate(node["c"], start=1):
                visit(child, f"{section}.{index}" if section else str(index), depth + 1)
        elif "m" in node:
            visit(node["m"], f"{section or '1'} (rfc822)", depth + 1)

    visit(meta["tree"], "", 0)
    return rows


def zip_entries(content: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """Entries of a ZIP (an IHE_XDM.ZIP), read with the interop safety limits."""
    from simulators.interop.safe_zip import UnsafeZip, read_zip

    try:
        files = read_zip(content)
    except UnsafeZip as exc:
        return [], str(exc)
    entries = [
        {"name": name, "size": len(data), "xdm_metadata": name.upper().endswith("METADATA.XML")}
        for name, data in sorted(files.items())
    ]
    return entries, None


def zip_entry(content: bytes, name: str) -> bytes | None:
    from simulators.interop.safe_zip import UnsafeZip, read_zip

    try:
        return read_zip(content).get(name)
    except UnsafeZip:
        return None


@dataclass
class StoredMessage:
    mailbox: Mailbox
    folder: Folder
    row: MessageRow
    raw: bytes
    meta: dict[str, Any]

    @property
    def uid(self) -> int:
        return self.row.uid

    def summary(self) -> dict[str, Any]:
        return message_summary(self.row, self.meta)

    def headers(self) -> list[tuple[str, str]]:
        return header_list(self.raw, self.meta)

    def parts(self) -> list[Part]:
        return parts(self.raw, self.meta)

    def parsed(self) -> dict[str, Any]:
        headers = self.headers()
        all_parts = self.parts()
        texts = [
            {"section": p.section, "text": part_text(self.raw, p)}
            for p in all_parts
            if p.content_type == "text/plain" and p.disposition != "attachment"
        ]
        return {
            **self.summary(),
            "folder": self.folder.name,
            "headers": [{"name": n, "value": v} for n, v in headers],
            "mss_headers": [{"name": n, "value": v} for n, v in headers if is_mss_header(n)],
            "tree": tree_rows(self.meta),
            "parts": [p.as_dict() for p in all_parts],
            "text": texts,
            "has_html": any(p.content_type == "text/html" for p in all_parts),
        }


def message_summary(row: MessageRow, meta: dict[str, Any] | None) -> dict[str, Any]:
    h = (meta or {}).get("h", {})
    return {
        "uid": row.uid,
        "size": row.size,
        "internal_date": row.internal_date,
        "flags": sorted(row.flags),
        "subject": h.get("subject", ""),
        "from": h.get("from", ""),
        "to": h.get("to", ""),
        "date": h.get("date", ""),
        "message_id": h.get("message-id", ""),
    }


def list_messages(
    services: MssServices, folder: Folder, *, limit: int = 100, offset: int = 0
) -> tuple[int, list[dict[str, Any]]]:
    """Newest first. Uses the stored metadata; messages stored without it are analysed."""
    store = services.store
    uids = [uid for uid, _flags in store.list_uids(folder.id)]
    uids.reverse()
    page = uids[offset : offset + max(0, min(limit, MAX_LISTED))]
    rows = {r.uid: r for r in store.fetch_rows(folder.id, page)}
    result = []
    for uid in page:
        row = rows.get(uid)
        if row is None:
            continue
        meta = row.meta if meta_is_current(row.meta) else analyse_message(store.blob(row.blob_id))
        result.append(message_summary(row, meta))
    return len(uids), result


def load_message(
    services: MssServices, mailbox: Mailbox, folder: Folder, uid: int
) -> StoredMessage:
    rows = services.store.fetch_rows(folder.id, [uid])
    if not rows:
        raise LookupError(f"no message with UID {uid} in {mailbox.address} {folder.name}")
    row = rows[0]
    raw = services.store.blob(row.blob_id)
    return StoredMessage(mailbox, folder, row, raw, current_meta(raw, row.meta))


# ---- composing and delivering -----------------------------------------------------------------
@dataclass
class Attachment:
    filename: str
    content: bytes
    content_type: str | None = None


def _check_address(value: str, what: str) -> str:
    value = value.strip()
    _name, addr = email.utils.parseaddr(value)
    if (
        not addr
        or addr.count("@") != 1
        or not all(addr.split("@"))
        or any(c in addr for c in " \r\n<>,;")
    ):
        raise MailViewError(f"{what}: not a mail address: {value!r}")
    return addr


def split_addresses(value: str | Sequence[str], what: str) -> list[str]:
    items = value.replace(";", ",").split(",") if isinstance(value, str) else list(value)
    found = [_check_address(v, what) for v in items if v.strip()]
    if not found:
        raise MailViewError(f"{what}: at least one address is needed")
    return list(dict.fromkeys(found))


def compose(
    *,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    text: str,
    html: str | None = None,
    headers: dict[str, str] | None = None,
    attachments: Sequence[Attachment] = (),
    domain: str = "mssante.localhost",
) -> bytes:
    """A MIME message as a test person would write it in MOTCO2's webmail."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(time.time(), localtime=False)
    msg["Message-ID"] = f"<{secrets.token_hex(12)}.webmail@{domain}>"
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED:
            raise MailViewError(f"header {name!r} cannot be set here")
        if "\r" in value or "\n" in value:
            raise MailViewError(f"header {name} holds a line break")
        msg[name] = value
    msg.set_content(text or "")
    if html:
        msg.add_alternative(html, subtype="html")
    for item in attachments:
        ctype = item.content_type or mimetypes.guess_type(item.filename)[0]
        ctype = ctype or "application/octet-stream"
        maintype, _slash, subtype = ctype.partition("/")
        if not subtype:
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            item.content, maintype=maintype, subtype=subtype, filename=item.filename or "attachment"
        )
    return msg.as_bytes()


@dataclass(frozen=True)
class Delivery:
    submission: Submission
    sent_copy_uid: int | None
    session_id: str


async def deliver(
    services: MssServices,
    *,
    sender: str,
    recipients: Sequence[str],
    raw: bytes,
    peer: tuple[str, int] | None,
    channel: str = "webmail",
) -> Delivery:
    """Deliver ``raw`` as if it had come in over SMTP, and record it.

    This is how MOTCO2's webmail feeds the software under test: the mail lands in the
    recipients' INBOX through the same store path as an SMTP submission (one durable
    commit), other domains go to the outbound store, and when the sender is a local
    test mailbox a copy is kept in its ``Sent`` folder. The recorder keeps a ``webmail``
    session, so the runs can show where a mail came from.
    """
    limit = int(services.settings.max_message_size)
    if len(raw) > limit:
        raise MailViewError(f"message of {len(raw)} bytes over the limit of {limit} bytes")
    store = services.store
    for rcpt in recipients:
        domain = rcpt.rsplit("@", 1)[1]
        if store.is_local_domain(domain) and store.get_mailbox(rcpt) is None:
            raise MailViewError(f"<{rcpt}>: no such test mailbox in {domain}")
    record = services.recorder.open_session(channel, "https", peer)
    sender_box = store.get_mailbox(sender)
    record.set(tls=True, webmail_sender=sender)
    record.client(f"SEND FROM:<{sender}> TO:{','.join('<' + r + '>' for r in recipients)}")
    record.client(f"DATA ({len(raw)} octets)")
    received = (
        f"Received: from webmail ([{peer[0] if peer else 'unknown'}])\r\n"
        f"\tby {services.domain} (segur-sim SIMULATION) with HTTPS ({channel});\r\n"
        f"\t{email.utils.formatdate(time.time(), localtime=False)}\r\n"
    ).encode()
    stored = received + raw
    try:
        submission = await store.accept_submission(
            NewSubmission(
                session_id=record.id,
                mailbox_id=sender_box.id if sender_box else None,
                mail_from=sender,
                rcpt_to=list(recipients),
                raw=stored,
                meta=analyse_message(stored),
            )
        )
    except Exception as exc:
        record.note(f"delivery failed: {type(exc).__name__}")
        record.close("server-error")
        raise
    sent_uid: int | None = None
    if sender_box is not None:
        sent = store.get_folder(sender_box.id, "Sent")
        if sent is not None:
            sent_uid = await store.append(sent.id, raw, ["\\Seen"], meta=analyse_message(raw))
    record.server(f"250 stored submission {submission.id}")
    record.note(
        f"stored submission {submission.id}: {len(submission.local_rcpts)} local, "
        f"{len(submission.outbound_rcpts)} outbound recipient(s)"
    )
    record.close("webmail-sent")
    return Delivery(submission, sent_uid, record.id)
