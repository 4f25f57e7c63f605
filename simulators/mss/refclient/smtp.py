"""SMTP submission (ECO 1.0.1, 1.2.1, 1.3.1): port 587, EHLO, STARTTLS, EHLO, then
``AUTH XOAUTH2`` with the PSC token (PER/ORG) or ``AUTH PLAIN`` with the mailbox
address over a TLS session carrying the ORG AUTH_CLI certificate (APP)."""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl

from simulators.mss.refclient.client import EXIT_AUTH_REFUSED, AuthRefused, GiveUp, RefClient
from simulators.mss.refclient.tls import ServerRefused, first_accepted

log = logging.getLogger("refclient")

EHLO_NAME = "lps.refclient.localhost"  # fixed: socket.getfqdn() can stall on DNS


def xoauth2_string(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response, before base64 (CONF.07)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def connect(
    client: RefClient, *, host: str | None = None, port: int | None = None, starttls: bool = True
) -> smtplib.SMTP:
    """A TLS-protected, not yet authenticated session; ServerRefused if TLS is refused."""
    cfg = client.cfg
    host = host or cfg.host
    port = port or cfg.smtp_port
    if client.faults.on("smtp-implicit-tls-only"):
        port, starttls = cfg.smtps_port, False  # MSS-01: port 465, never 587 + STARTTLS
    return first_accepted(
        "SMTP",
        host,
        port,
        client.mail_contexts(),
        lambda ctx: _connect_once(client, host, port, ctx, starttls),
    )


def _connect_once(
    client: RefClient, host: str, port: int, ctx: ssl.SSLContext, starttls: bool
) -> smtplib.SMTP:
    timeout = client.cfg.timeout
    smtp: smtplib.SMTP
    if not starttls:
        smtp = smtplib.SMTP_SSL(host, port, local_hostname=EHLO_NAME, context=ctx, timeout=timeout)
        log.info("SMTP: connected to %s:%d with implicit TLS", host, port)
    else:
        smtp = smtplib.SMTP(host, port, local_hostname=EHLO_NAME, timeout=timeout)
        try:
            smtp.ehlo()
            if client.faults.on("smtp-auth-before-starttls"):
                _clear_text_auth(client, smtp)
            if not smtp.has_extn("starttls"):
                raise ServerRefused(f"SMTP {host}:{port} offers no STARTTLS: not going on")
            smtp.starttls(context=ctx)
        except BaseException:
            smtp.close()
            raise
        log.info("SMTP: STARTTLS done with %s:%d", host, port)
    try:
        sock = smtp.sock
        assert isinstance(sock, ssl.SSLSocket)
        log.info("SMTP: %s %s", sock.version(), (sock.cipher() or ("?",))[0])
        client.tls.check_peer(sock.getpeercert(binary_form=True))
        smtp.ehlo()
    except BaseException:
        smtp.close()
        raise
    return smtp


def _clear_text_auth(client: RefClient, smtp: smtplib.SMTP) -> None:
    # The MSS-01 fault: credentials before STARTTLS. A sane server refuses; give up then.
    try:
        authenticate(client, smtp)
    except AuthRefused as exc:
        smtp.close()
        raise GiveUp(f"SMTP: AUTH before STARTTLS refused ({exc})", EXIT_AUTH_REFUSED) from exc
    log.warning("SMTP: the server accepted AUTH in clear text")


def authenticate(client: RefClient, smtp: smtplib.SMTP) -> None:
    cfg = client.cfg
    try:
        if cfg.is_app:
            # CONF.12: login = mailbox address; the certificate is the credential.
            smtp.auth("PLAIN", lambda challenge=None: f"\0{cfg.bal}\0", initial_response_ok=True)
            log.info("SMTP: AUTH PLAIN accepted for %s", cfg.bal)
            return
        bearer = client.bearer()
        if client.faults.on("smtp-auth-plain-token"):
            smtp.auth(
                "PLAIN", lambda challenge=None: f"\0{cfg.bal}\0{bearer}", initial_response_ok=True
            )
            return
        initial = xoauth2_string(cfg.bal, bearer)
        # SASL-IR on the AUTH line; an error challenge (334 + JSON) gets an empty answer.
        smtp.auth(
            "XOAUTH2",
            lambda challenge=None: initial if challenge is None else "",
            initial_response_ok=True,
        )
        log.info("SMTP: AUTH XOAUTH2 accepted for %s", cfg.bal)
    except smtplib.SMTPResponseException as exc:
        raise AuthRefused(f"SMTP AUTH refused: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise AuthRefused(f"SMTP server closed the session during AUTH: {exc}") from exc


def open_session(
    client: RefClient, *, host: str | None = None, port: int | None = None, starttls: bool = True
) -> smtplib.SMTP:
    """Connect and authenticate, with the bounded back-off on refusals."""

    def attempt() -> smtplib.SMTP:
        smtp = connect(client, host=host, port=port, starttls=starttls)
        try:
            authenticate(client, smtp)
        except BaseException:
            quit_quietly(smtp)
            raise
        return smtp

    return client.with_backoff("SMTP", attempt)


def send(client: RefClient, smtp: smtplib.SMTP, rcpts: list[str], raw: bytes) -> None:
    try:
        refused = smtp.sendmail(client.cfg.bal, rcpts, raw)
    except smtplib.SMTPException as exc:
        raise GiveUp(f"SMTP: submission refused: {exc}") from exc
    if refused:
        log.warning("SMTP: some recipients refused: %s", refused)
    log.info("SMTP: submitted %d bytes to %s", len(raw), ", ".join(rcpts))


def quit_quietly(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.quit()
    with contextlib.suppress(OSError):
        smtp.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
