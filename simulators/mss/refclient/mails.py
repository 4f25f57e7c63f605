"""The mails the client writes (ECO 2.x, CONF.14-16, CONF.21, SC.MSS va1.09).

Every mail: Message-ID, Date, UTF-8 text/plain body, the sender label in From,
X-MSS-NIL, Return-Receipt-To and Disposition-Notification-To (the sender mailbox).
APP mails add Reply-To (a PER/ORG mailbox) and the automatic-mail footer. X-MSS-CODECDA
and X-MSS-INS appear only on mails carrying a CDA. MDNs follow RFC 8098.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import uuid
from email.headerregistry import Address
from email.message import EmailMessage, Message
from typing import TYPE_CHECKING

from simulators.mss.refclient.client import RefClient

if TYPE_CHECKING:  # building a CDA package is imported only by the actions that need it
    from simulators.mss.refclient.cda import Package

FOOTER = "Ce message a été généré automatiquement par un logiciel (SIMULATION)."
MDN_DISPOSITION = "manual-action/MDN-sent-manually; displayed"
UA = "segur-sim refclient (SIMULATION)"


def new_message_id(bal: str) -> str:
    # short enough to stay on one header line (make_msgid's ids get folded)
    return f"<{uuid.uuid4().hex}.refclient@{bal.split('@')[1]}>"


def _new(client: RefClient, to: list[str], subject: str) -> EmailMessage:
    cfg, faults = client.cfg, client.faults
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address(display_name=client.label, addr_spec=cfg.bal)
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(dt.datetime.now().astimezone())
    if not faults.on("no-message-id"):
        msg["Message-ID"] = new_message_id(cfg.bal)
    if cfg.is_app and not faults.on("no-reply-to") and cfg.correspondent:
        msg["Reply-To"] = cfg.correspondent  # a human PER/ORG mailbox answers for the APP
    if faults.on("wrong-nil"):
        msg["X-MSS-NIL"] = "DEV000000"  # not the declared product reference
    elif not faults.on("no-nil") and cfg.nil:
        msg["X-MSS-NIL"] = cfg.nil
    if not faults.on("no-return-receipt"):
        msg["Return-Receipt-To"] = cfg.bal
    msg["Disposition-Notification-To"] = cfg.bal
    msg["User-Agent"] = UA
    return msg


def _body(client: RefClient, msg: EmailMessage, text: str) -> None:
    faults = client.faults
    if client.cfg.is_app and not faults.on("no-footer"):
        text = f"{text}\n\n--\n{FOOTER}\n"
    if faults.on("html-only"):
        html = "<html><body><p>" + "<br>".join(text.splitlines()) + "</p></body></html>"
        msg.set_content(html, subtype="html", charset="utf-8", cte="quoted-printable")
    elif faults.on("latin1-body"):
        msg.set_content(text, charset="iso-8859-1", cte="quoted-printable")
    else:
        msg.set_content(text, charset="utf-8", cte="quoted-printable")


def plain_mail(client: RefClient, to: str) -> EmailMessage:
    msg = _new(client, [to], "Message de test segur-sim (SIMULATION)")
    _body(
        client,
        msg,
        "Bonjour,\n\nCeci est un message de test envoyé par le client de référence "
        "segur-sim.\nAccents : é è à ç ù.\n\nCordialement.",
    )
    faults = client.faults
    if faults.on("codecda-on-plain-mail"):
        msg["X-MSS-CODECDA"] = "11502-2"
    if faults.on("ins-on-plain-mail"):
        msg["X-MSS-INS"] = "O"
    return msg


def cda_mail(
    client: RefClient, to: str, package: Package, *, patient: bool = False
) -> EmailMessage:
    msg = _new(client, [to], package.subject)
    if package.codecda is not None:
        msg["X-MSS-CODECDA"] = package.codecda
    if package.ins is not None:
        msg["X-MSS-INS"] = package.ins
    if patient and not client.faults.on("patient-no-mes"):
        msg["X-MSS-MES"] = "FIN"  # CONF.21: the patient is not expected to answer
    header = package.header
    _body(
        client,
        msg,
        f"Bonjour,\n\nVeuillez trouver ci-joint le document « {header.title} » "
        f"de {header.birth_name} {header.birth_first_name}.\n"
        "Il est joint au format IHE_XDM.ZIP (CDA) et en PDF.\n\nCordialement.",
    )
    msg.add_attachment(package.xdm, maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    if package.pdf is not None:
        msg.add_attachment(
            package.pdf, maintype="application", subtype="pdf", filename=package.pdf_name
        )
    return msg


def reply_mail(client: RefClient, original: Message) -> EmailMessage:
    """ECO 2.2.2: a reply names what it answers (In-Reply-To, References)."""
    to = original.get("Reply-To") or original.get("From") or ""
    address = email.utils.parseaddr(str(to))[1]
    subject = str(original.get("Subject", ""))
    if not subject.lower().startswith(("re:", "re :")):
        subject = "RE: " + subject
    msg = _new(client, [address], subject)
    parent = original.get("Message-ID")
    if parent and not client.faults.on("no-in-reply-to"):
        refs = str(original.get("References", "")).split()
        msg["In-Reply-To"] = str(parent)
        msg["References"] = " ".join([*refs, str(parent)])
    _body(client, msg, "Bonjour,\n\nBien reçu, merci.\n\nCordialement.")
    return msg


def mdn(client: RefClient, original: Message) -> EmailMessage:
    """RFC 8098 read notice. It requests no notice itself (no MDN for an MDN, section
    2.1), so it carries neither Disposition-Notification-To nor Return-Receipt-To."""
    cfg = client.cfg
    to = email.utils.parseaddr(str(original.get("Disposition-Notification-To", "")))[1]
    msg = _new(client, [to], "Lu : " + str(original.get("Subject", "")))
    del msg["Disposition-Notification-To"]
    del msg["Return-Receipt-To"]
    msg.set_content(
        f"Le message envoyé à {cfg.bal} a été affiché.\n",
        charset="utf-8",
        cte="quoted-printable",
    )
    msg.make_mixed()
    lines = [
        f"Reporting-UA: {cfg.bal.split('@')[1]}; {UA}",
        f"Original-Recipient: rfc822;{cfg.bal}",
        f"Final-Recipient: rfc822;{cfg.bal}",
    ]
    if original.get("Message-ID"):
        lines.append(f"Original-Message-ID: {original['Message-ID']}")
    lines.append(f"Disposition: {MDN_DISPOSITION}")
    notification = EmailMessage(policy=email.policy.SMTP)
    notification["Content-Type"] = "message/disposition-notification"
    notification.set_payload("\r\n".join(lines) + "\r\n")
    msg.attach(notification)
    msg.set_type("multipart/report")  # keeps the boundary parameter
    msg.set_param("report-type", "disposition-notification")
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=email.policy.SMTP)


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed
