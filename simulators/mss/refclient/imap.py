"""IMAP (ECO 1.0.2, 1.2.1, 1.2.4, 1.3.1): port 143, STARTTLS, then
``AUTHENTICATE XOAUTH2 <initial response>`` (PER/ORG) or ``AUTHENTICATE PLAIN
<initial response>`` with the client certificate (APP), both with SASL-IR.

imaplib's ``authenticate()`` never sends an initial response, so SASL-IR goes
through ``_simple_command`` with the response as argument; a bound method in
``literal`` answers a continuation (the XOAUTH2 error challenge) with an empty line.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import logging
import ssl
from typing import Any, cast

from simulators.mss.refclient.client import EXIT_AUTH_REFUSED, AuthRefused, GiveUp, RefClient
from simulators.mss.refclient.smtp import xoauth2_string
from simulators.mss.refclient.tls import ServerRefused, first_accepted

log = logging.getLogger("refclient")


class _EmptyAnswer:
    """imaplib calls a *bound method* in ``literal`` for each continuation request."""

    def answer(self, _challenge: bytes) -> bytes:
        return b""


def connect(
    client: RefClient, *, host: str | None = None, port: int | None = None, starttls: bool = True
) -> imaplib.IMAP4:
    cfg = client.cfg
    host = host or cfg.host
    port = port or cfg.imap_port
    return first_accepted(
        "IMAP",
        host,
        port,
        client.mail_contexts(),
        lambda ctx: _connect_once(client, host, port, ctx, starttls),
    )


def _connect_once(
    client: RefClient, host: str, port: int, ctx: ssl.SSLContext, starttls: bool
) -> imaplib.IMAP4:
    timeout = client.cfg.timeout
    imap: imaplib.IMAP4
    if not starttls:
        imap = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=timeout)
    else:
        imap = imaplib.IMAP4(host, port, timeout=timeout)
        try:
            if client.faults.on("imap-auth-before-starttls"):
                _clear_text_auth(client, imap)
            if "STARTTLS" not in imap.capabilities:
                raise ServerRefused(f"IMAP {host}:{port} offers no STARTTLS: not going on")
            imap.starttls(ssl_context=ctx)
        except BaseException:
            _close(imap)
            raise
    try:
        sock = imap.sock
        assert isinstance(sock, ssl.SSLSocket)
        log.info(
            "IMAP: %s with %s:%d, %s %s",
            "STARTTLS done" if starttls else "implicit TLS",
            host,
            port,
            sock.version(),
            (sock.cipher() or ("?",))[0],
        )
        client.tls.check_peer(sock.getpeercert(binary_form=True))
    except BaseException:
        _close(imap)
        raise
    return imap


def _clear_text_auth(client: RefClient, imap: imaplib.IMAP4) -> None:
    # The MSS-02 fault: AUTHENTICATE before STARTTLS. A sane server refuses; give up then.
    try:
        authenticate(client, imap)
    except AuthRefused as exc:
        raise GiveUp(
            f"IMAP: authentication before STARTTLS refused ({exc})", EXIT_AUTH_REFUSED
        ) from exc
    log.warning("IMAP: the server accepted authentication in clear text")


def _sasl_ir(imap: imaplib.IMAP4, mechanism: str, initial: str) -> None:
    raw = cast(Any, imap)  # imaplib's internals are not in typeshed
    raw.literal = _EmptyAnswer().answer
    payload = base64.b64encode(initial.encode()).decode("ascii")
    typ, data = raw._simple_command("AUTHENTICATE", mechanism, payload)
    if typ != "OK":
        text = (data[-1] or b"").decode("utf-8", "replace") if data else ""
        raise AuthRefused(f"IMAP AUTHENTICATE {mechanism} refused: {typ} {text}")
    imap.state = "AUTH"


def authenticate(client: RefClient, imap: imaplib.IMAP4) -> None:
    cfg = client.cfg
    try:
        if cfg.is_app:
            if client.faults.on("imap-login-instead-of-plain"):
                imap.login(cfg.bal, "")
                log.info("IMAP: LOGIN accepted for %s", cfg.bal)
                return
            _sasl_ir(imap, "PLAIN", f"\0{cfg.bal}\0")  # CONF.12
            log.info("IMAP: AUTHENTICATE PLAIN accepted for %s", cfg.bal)
            return
        bearer = client.bearer()
        if client.faults.on("imap-login-token"):
            imap.login(cfg.bal, bearer)
            return
        _sasl_ir(imap, "XOAUTH2", xoauth2_string(cfg.bal, bearer))
        log.info("IMAP: AUTHENTICATE XOAUTH2 accepted for %s", cfg.bal)
    except imaplib.IMAP4.abort as exc:
        raise AuthRefused(f"IMAP session lost during authentication: {exc}") from exc
    except imaplib.IMAP4.error as exc:
        raise AuthRefused(f"IMAP authentication refused: {exc}") from exc


def open_session(
    client: RefClient, *, host: str | None = None, port: int | None = None, starttls: bool = True
) -> imaplib.IMAP4:
    """Connect and authenticate, with the bounded back-off on refusals."""

    def attempt() -> imaplib.IMAP4:
        imap = connect(client, host=host, port=port, starttls=starttls)
        try:
            authenticate(client, imap)
        except BaseException:
            logout_quietly(imap)
            raise
        return imap

    return client.with_backoff("IMAP", attempt)


def newest_message(imap: imaplib.IMAP4) -> tuple[int, bytes | None]:
    """SELECT INBOX, list the recent headers, FETCH the newest message (marks it read).
    Returns (number of messages, raw newest message or None)."""
    typ, data = imap.select("INBOX")
    if typ != "OK":
        raise GiveUp(f"IMAP: SELECT INBOX refused: {data}")
    count = int((data[0] or b"0").decode())
    log.info("IMAP: INBOX holds %d message(s)", count)
    if count == 0:
        return 0, None
    first = max(1, count - 9)
    imap.fetch(f"{first}:{count}", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])")
    typ, fetched = imap.fetch(str(count), "(UID FLAGS BODY[])")
    for item in fetched:
        if isinstance(item, tuple) and len(item) == 2:
            return count, bytes(item[1])
    raise GiveUp(f"IMAP: FETCH of message {count} returned no body")


def logout_quietly(imap: imaplib.IMAP4) -> None:
    with contextlib.suppress(imaplib.IMAP4.error, OSError, ValueError):
        imap.logout()
    _close(imap)


def _close(imap: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError, AttributeError):
        imap.shutdown()
