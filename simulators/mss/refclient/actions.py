"""The client actions of the driver contract (docs/mss-conformance.md)."""

from __future__ import annotations

import contextlib
import email.utils
import logging
from collections.abc import Callable
from email.message import EmailMessage

from simulators.mss.refclient import mails
from simulators.mss.refclient import smtp as smtp_client
from simulators.mss.refclient.client import EXIT_OK, GiveUp, RefClient
from simulators.mss.refclient.config import ConfigError

log = logging.getLogger("refclient")

PATIENT_DOMAIN = "patient.mssante.fr"


def _correspondent(client: RefClient) -> str:
    if not client.cfg.correspondent:
        raise ConfigError("SEGUR_SIM_CORRESPONDENT (who to write to) is required")
    return client.cfg.correspondent


def submit(client: RefClient, msg: EmailMessage, rcpts: list[str]) -> None:
    smtp = smtp_client.open_session(client)
    try:
        smtp_client.send(client, smtp, rcpts, mails.to_bytes(msg))
        log.info("sent %s: %s", msg.get("Message-ID", "(no Message-ID)"), msg["Subject"])
    finally:
        smtp_client.quit_quietly(smtp)


def read_newest(client: RefClient, *, flag: str | None = None) -> EmailMessage | None:
    """Open INBOX, read the newest mail; optionally flag it afterwards."""
    import imaplib  # not loaded by the actions that only send (a faster start)

    from simulators.mss.refclient import imap as imap_client

    imap = imap_client.open_session(client)
    try:
        count, raw = imap_client.newest_message(imap)
        if raw is None:
            return None
        msg = mails.parse(raw)
        log.info("read %s from %s: %s", msg.get("Message-ID"), msg.get("From"), msg["Subject"])
        if flag:
            with contextlib.suppress(imaplib.IMAP4.error):
                imap.store(str(count), "+FLAGS", f"({flag})")
        return msg
    finally:
        imap_client.logout_quietly(imap)


def _recipients(msg: EmailMessage) -> list[str]:
    return [addr for _name, addr in email.utils.getaddresses([str(msg["To"])]) if addr]


# ---- actions -----------------------------------------------------------------------------
def send_mail(client: RefClient) -> int:
    to = _correspondent(client)
    submit(client, mails.plain_mail(client, to), [to])
    return EXIT_OK


def send_mail_with_cda(client: RefClient) -> int:
    to = _correspondent(client)
    from simulators.mss.refclient import cda  # lxml and the interop package: only here

    package = cda.build_package(client.cfg, client.faults)
    submit(client, mails.cda_mail(client, to, package), [to])
    return EXIT_OK


def read_mail(client: RefClient) -> int:
    read_newest(client)
    return EXIT_OK


def send_and_read(client: RefClient) -> int:
    send_mail(client)
    return read_mail(client)


def autoconfig_then_connect(client: RefClient) -> int:
    cfg = client.cfg
    if client.faults.on("skip-autoconfig"):
        log.info(
            "autoconfig skipped: hard-coded %s:%d / :%d", cfg.host, cfg.smtp_port, cfg.imap_port
        )
        smtp_host, smtp_port, smtp_tls = cfg.host, cfg.smtp_port, True
        imap_host, imap_port, imap_tls = cfg.host, cfg.imap_port, True
    else:
        from simulators.mss.refclient import autoconfig

        servers = autoconfig.fetch(client)
        if "smtp" not in servers:
            raise GiveUp("autoconfig: no outgoing (smtp) server published")
        smtp = servers["smtp"]
        smtp_host, smtp_port, smtp_tls = smtp.hostname, smtp.port, smtp.starttls
        imap = servers.get("imap")
        if imap is None:
            raise GiveUp("autoconfig: no incoming (imap) server published")
        imap_host, imap_port, imap_tls = imap.hostname, imap.port, imap.starttls
    # the connection test: authenticate on both, then leave politely
    from simulators.mss.refclient import imap as imap_client

    session = smtp_client.open_session(client, host=smtp_host, port=smtp_port, starttls=smtp_tls)
    smtp_client.quit_quietly(session)
    box = imap_client.open_session(client, host=imap_host, port=imap_port, starttls=imap_tls)
    imap_client.newest_message(box)
    imap_client.logout_quietly(box)
    log.info("autoconfig connection test passed (SMTP and IMAP)")
    return EXIT_OK


def reply_to_mail(client: RefClient) -> int:
    original = read_newest(client, flag="\\Answered")
    if original is None:
        raise GiveUp("INBOX is empty: nothing to reply to")
    reply = mails.reply_mail(client, original)
    submit(client, reply, _recipients(reply))
    return EXIT_OK


def return_mdn(client: RefClient) -> int:
    original = read_newest(client)
    if original is None:
        raise GiveUp("INBOX is empty: no mail to acknowledge")
    if not original.get("Disposition-Notification-To"):
        log.info("the newest mail asks for no read notice: nothing to return")
        return EXIT_OK
    if client.faults.on("no-mdn"):
        log.info("read notice requested but not returned (fault no-mdn)")
        return EXIT_OK
    notice = mails.mdn(client, original)
    submit(client, notice, _recipients(notice))
    _flag_mdn_sent(client)
    return EXIT_OK


def _flag_mdn_sent(client: RefClient) -> None:
    # RFC 3503: $MDNSent stops this and other clients from sending the notice twice.
    import imaplib

    from simulators.mss.refclient import imap as imap_client

    with contextlib.suppress(GiveUp, imaplib.IMAP4.error, OSError):
        imap = imap_client.open_session(client)
        try:
            count, _raw = imap_client.newest_message(imap)
            if count:
                imap.store(str(count), "+FLAGS", "($MDNSent)")
        finally:
            imap_client.logout_quietly(imap)


def send_to_patient(client: RefClient) -> int:
    from simulators.mss.refclient import cda  # lxml and the interop package: only here

    package = cda.build_package(client.cfg, client.faults)
    header = package.header
    if not header.ins_qualified or not header.ins_value:
        # ECO 2.2.6: a patient mailbox is addressed by a qualified INS only
        raise GiveUp("the document's INS is not qualified: no mail to the patient")
    to = f"{header.ins_value}@{PATIENT_DOMAIN}"
    submit(client, mails.cda_mail(client, to, package, patient=True), [to])
    return EXIT_OK


def _keep_session_open(client: RefClient) -> int:
    from simulators.mss.refclient import keepalive

    return keepalive.run(client)


ACTIONS: dict[str, Callable[[RefClient], int]] = {
    "send-mail": send_mail,
    "send-mail-with-cda": send_mail_with_cda,
    "read-mail": read_mail,
    "send-and-read": send_and_read,
    "autoconfig-then-connect": autoconfig_then_connect,
    "keep-session-open": _keep_session_open,
    "reply-to-mail": reply_to_mail,
    "return-mdn": return_mdn,
    "send-to-patient": send_to_patient,
}


def run(client: RefClient) -> int:
    return ACTIONS[client.cfg.action](client)
