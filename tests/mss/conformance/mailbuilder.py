"""Builds the mails the message checks judge: a conforming baseline per mailbox type,
and the pieces to break it one rule at a time (with the ``email`` package)."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from functools import cache
from pathlib import Path

from simulators.core.store.mail import Mailbox, MailboxType
from simulators.interop.cda.header import read_cda_header
from simulators.interop.xds.xdm import build_xdm
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "cda"
DOMAIN = "mssante.localhost"
NIL = "DEV935997"
CORRESPONDENT = f"dr.dupont@{DOMAIN}"
INS = "285057505612338"
OTHER_INS = "190017512345678"
CDA_FILES = {
    "CR-BIO": "segur-sim_CR-BIO_2024.01.xml",
    "VAC-NOTE": "segur-sim_VAC-NOTE_2023.01.xml",
    "CR-BIO-PDF": "segur-sim_CR-BIO_niveau1_pdf.xml",
}

PER_BOX = Mailbox(
    1, f"dr.martin@{DOMAIN}", MailboxType.PER, "Dr Jean MARTIN", "CABINET SIMULATION", 0.0
)
ORG_BOX = Mailbox(2, f"cardiologie@{DOMAIN}", MailboxType.ORG, "Cardiologie", "CHU SIMULATION", 0.0)
APP_BOX = Mailbox(3, f"labo@{DOMAIN}", MailboxType.APP, "LABO SIMU", "LABO SIMU", 0.0)
BOXES = {"PER": PER_BOX, "ORG": ORG_BOX, "APP": APP_BOX}

FOOTER_FR = "Ce message a été généré automatiquement, merci de ne pas y répondre."


def ctx(box: Mailbox = PER_BOX, nil: str = NIL) -> JudgeContext:
    return JudgeContext(mailbox=box, nil=nil, domain=DOMAIN)


@cache
def cda(kind: str = "CR-BIO") -> bytes:
    return (FIXTURES / CDA_FILES[kind]).read_bytes()


def other_patient(content: bytes) -> bytes:
    """The same document for another patient (other INS and names)."""
    return (
        content.replace(INS.encode(), OTHER_INS.encode())
        .replace(b"SIMULO", b"EXEMPLE")
        .replace(b"CAMILLE", b"PAUL")
    )


def unqualified(content: bytes) -> bytes:
    """The INS stays, the birth traits go: the INS is no longer qualified."""
    return content.replace(b'<family qualifier="BR">', b'<family qualifier="SP">').replace(
        b'<given qualifier="BR">', b'<given qualifier="CL">'
    )


def pdf(title: str = "Compte rendu", *, pdfa_part: str | None = "1") -> bytes:
    """A tiny PDF; with ``pdfa_part`` its XMP packet declares PDF/A-<part>B."""
    xmp = b""
    if pdfa_part is not None:
        xmp = (
            b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/" '
            b'pdfaid:part="' + pdfa_part.encode() + b'" pdfaid:conformance="B"/>'
            b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
        )
    return (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
        b"1 0 obj << /Type /Catalog /Pages 2 0 R /Metadata 3 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
        b"3 0 obj << /Type /Metadata /Subtype /XML /Length "
        + str(len(xmp)).encode()
        + b" >>\nstream\n"
        + xmp
        + b"\nendstream\nendobj\n"
        + f"% {title}\n".encode()
        + b"trailer << /Root 1 0 R >>\n%%EOF\n"
    )


def sender_label(box: Mailbox) -> str:
    if box.type is MailboxType.PER:
        return "_".join(box.display_name.split()) + "_" + box.entity
    return box.entity


def xdm_subject(content: bytes) -> str:
    h = read_cda_header(content)
    date = h.birth_date or ""
    return (
        f"XDM/1.0/DDM+{h.title} {h.birth_name} {h.birth_first_name} "
        f"{date[6:8]}/{date[4:6]}/{date[0:4]}"
    )


def build_mail(
    box: Mailbox = PER_BOX,
    *,
    cdas: list[bytes] | None = None,
    xdm: bytes | None = None,
    pdfs: list[tuple[str, bytes]] | None = None,
    subject: str | None = None,
    to: str = CORRESPONDENT,
    html: bool = True,
    footer: str | None = FOOTER_FR,
) -> EmailMessage:
    """A conforming mail of this mailbox (with an IHE_XDM.ZIP and PDF/A-1 twins if cdas)."""
    msg = EmailMessage()
    msg["From"] = Address(display_name=sender_label(box), addr_spec=box.address)
    msg["To"] = to
    msg["Date"] = format_datetime(datetime(2025, 1, 14, 10, 15))
    msg["Message-ID"] = make_msgid(domain=DOMAIN)
    msg["X-MSS-NIL"] = NIL
    msg["Return-Receipt-To"] = box.address
    msg["Disposition-Notification-To"] = box.address
    if box.type is MailboxType.APP:
        msg["Reply-To"] = CORRESPONDENT
    if cdas:
        headers = [read_cda_header(c) for c in cdas]
        msg["Subject"] = subject or xdm_subject(cdas[0])
        msg["X-MSS-CODECDA"] = ",".join(h.document_code or "" for h in headers)
        msg["X-MSS-INS"] = "O" if all(h.ins_qualified for h in headers) else "N"
    else:
        msg["Subject"] = subject or "Demande d'avis"
    text = "Bonjour,\n\nVeuillez trouver ci-joint le compte rendu.\n\nCordialement\n"
    if box.type is MailboxType.APP and footer:
        text += f"\n--\n{footer}\n"
    msg.set_content(text)
    if html:
        markup = "<p>Bonjour,</p><p>Veuillez trouver ci-joint le compte rendu.</p>"
        if box.type is MailboxType.APP and footer:
            markup += f"<hr><p><small>{footer}</small></p>"
        msg.add_alternative(f"<html><body>{markup}</body></html>", subtype="html")
    if cdas:
        archive = xdm if xdm is not None else build_xdm(cdas)
        msg.add_attachment(archive, maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
        if pdfs is None:
            pdfs = [(f"DOC{i:04d}.PDF", pdf()) for i in range(1, len(cdas) + 1)]
    for name, content in pdfs or []:
        msg.add_attachment(content, maintype="application", subtype="pdf", filename=name)
    return msg


def set_header(msg: EmailMessage, name: str, value: str | None) -> EmailMessage:
    """Replace (or with None, remove) every occurrence of a header."""
    del msg[name]
    if value is not None:
        msg[name] = value
    return msg


def patient_mail(box: Mailbox = PER_BOX, content: bytes | None = None) -> EmailMessage:
    content = content or cda()
    h = read_cda_header(content)
    msg = build_mail(box, cdas=[content], to=f"{h.ins_value}@patient.mssante.fr")
    msg["X-MSS-MES"] = "FIN"
    return msg


def reply_mail(box: Mailbox, original: str, *, references: str | None = None) -> EmailMessage:
    msg = build_mail(box, subject="Re: Demande d'avis")
    msg["In-Reply-To"] = original
    msg["References"] = references if references is not None else f"<older@{DOMAIN}> {original}"
    return msg


def mdn_mail(
    box: Mailbox,
    original: str,
    *,
    report_type: str = "disposition-notification",
    disposition: str | None = "manual-action/MDN-sent-manually; displayed",
) -> bytes:
    """An RFC 8098 read notice for ``original``, as raw bytes."""
    fields = (
        f"Reporting-UA: segur-sim-tests\r\n"
        f"Final-Recipient: rfc822; {box.address}\r\n"
        f"Original-Message-ID: {original}\r\n"
    )
    if disposition is not None:
        fields += f"Disposition: {disposition}\r\n"
    return (
        f'From: "{sender_label(box)}" <{box.address}>\r\n'
        f"To: {CORRESPONDENT}\r\n"
        f"Subject: Accusé de lecture\r\n"
        f"Message-ID: <mdn-1@{DOMAIN}>\r\n"
        f"X-MSS-NIL: {NIL}\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type="{report_type}"; boundary="RPT"\r\n'
        "\r\n"
        "--RPT\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Votre message a été lu.\r\n"
        "--RPT\r\n"
        "Content-Type: message/disposition-notification\r\n\r\n"
        f"{fields}\r\n"
        "--RPT--\r\n"
    ).encode()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(
                zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)),
                data,
                compress_type=zipfile.ZIP_DEFLATED,
            )
    return buffer.getvalue()


def xdm_entries(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {n: z.read(n) for n in z.namelist()}


def zip_bomb() -> bytes:
    """A small archive whose document inflates to 20 MB of zeros (ratio ~1000)."""
    entries = xdm_entries(build_xdm([cda()]))
    entries["IHE_XDM/SUBSET01/DOC0002.XML"] = b"\0" * (20 * 1024 * 1024)
    return zip_of(entries)


def observe(
    msg: EmailMessage | bytes,
    *,
    sid: int = 1,
    box: Mailbox = PER_BOX,
    rcpt: tuple[str, ...] | None = None,
) -> ObservedMessage:
    raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=SMTP)
    if rcpt is None:
        rcpt = (CORRESPONDENT,) if isinstance(msg, bytes) else (str(msg["To"]),)
    return ObservedMessage(
        submission_id=sid,
        session_id="s-1",
        received_at=0.0,
        mail_from=box.address,
        rcpt_to=rcpt,
        raw=raw,
    )
