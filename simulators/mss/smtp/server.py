"""The SMTP submission session: the engine plus our policy, SASL and recording.

:mod:`simulators.mss.smtp.engine` knows SMTP; this subclass adds what MSSanté needs:

- every client line and reply is recorded (credentials redacted), including commands
  refused before STARTTLS, and the TLS parameters once TLS is up;
- SASL: XOAUTH2 (PER/ORG, PSC token) and PLAIN (APP, with the mTLS certificate),
  with SASL-IR detection and the XOAUTH2 error challenge (RFC 7628 3.2.2);
- a server-side drop (the "session closed" unit test).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from collections.abc import Callable
from typing import Any

from simulators import __version__
from simulators.core.recorder import SessionRecord
from simulators.core.store.mail import Mailbox
from simulators.mss.auth import AuthResult as MssAuthResult
from simulators.mss.auth import TlsInfo
from simulators.mss.smtp.engine import (
    AUTH_LINE_LIMIT,
    BOGUS_LIMIT,
    AuthOutcome,
    SmtpEngine,
    SmtpHandler,
)
from simulators.mss.tlsaccept import set_nodelay
from simulators.mss.tlsinfo import peer_cert_der, record_tls, record_tls_failure

__all__ = ["AUTH_LINE_LIMIT", "MssSMTP", "SmtpPolicy"]

_DROP_REPLY = "421 4.4.2 Session closed by the server (simulated)"


class SmtpPolicy:
    """Callbacks the server needs from the simulator (kept apart from the protocol)."""

    def __init__(
        self,
        *,
        open_record: Callable[[tuple[Any, ...] | None], SessionRecord],
        authenticate_xoauth2: Callable[[bytes, TlsInfo], MssAuthResult],
        authenticate_plain: Callable[[bytes, TlsInfo], MssAuthResult],
        pause_before_failure: Callable[[str | None], Any],
        auth_succeeded: Callable[[str | None], None],
        on_session_start: Callable[[MssSMTP], None],
        on_session_end: Callable[[MssSMTP], None],
    ) -> None:
        self.open_record = open_record
        self.authenticate_xoauth2 = authenticate_xoauth2
        self.authenticate_plain = authenticate_plain
        self.pause_before_failure = pause_before_failure
        self.auth_succeeded = auth_succeeded
        self.on_session_start = on_session_start
        self.on_session_end = on_session_end


class MssSMTP(SmtpEngine):
    """One SMTP session. ``implicit_tls`` selects the port-465 behaviour."""

    def __init__(
        self,
        handler: SmtpHandler,
        *,
        policy: SmtpPolicy,
        ssl_context: ssl.SSLContext,
        implicit_tls: bool,
        hostname: str,
        data_size_limit: int,
        timeout: float,
    ) -> None:
        super().__init__(
            handler,
            hostname=hostname,
            ident=f"ESMTP segur-sim {__version__} (SIMULATION)",
            data_size_limit=data_size_limit,
            timeout=timeout,
            tls_context=ssl_context,
            implicit_tls=implicit_tls,
            auth_mechanisms=("PLAIN", "XOAUTH2"),
        )
        self.policy = policy
        self.record: SessionRecord | None = None
        self.mailbox: Mailbox | None = None
        self.token_session: str | None = None
        self.dropped_by_server = False

    # ---- engine hooks: recording --------------------------------------------------------
    def on_connect(self, transport: asyncio.BaseTransport) -> None:
        set_nodelay(transport.get_extra_info("socket"))
        self.record = self.policy.open_record(transport.get_extra_info("peername"))
        self.policy.on_session_start(self)

    def on_closed(self, reason: str) -> None:
        if self.record is not None:
            self.record.close(reason)
        self.policy.on_session_end(self)

    def on_client_line(self, line: bytes) -> None:
        record = self.record
        if record is None:
            return
        head = line[:16].upper()
        if head.startswith(b"AUTH "):
            parts = line.rstrip(b"\r\n").split(b" ")
            shown = b" ".join(parts[:2])
            if len(parts) > 2:
                shown += b" <redacted %d bytes>" % len(parts[2])
            record.client(shown)
            if not self.tls_active:
                record.set(auth_before_tls=True)
            return
        record.client(line)
        if not self.tls_active and head.startswith((b"MAIL ", b"RCPT ", b"DATA")):
            record.set(mail_before_tls=True)

    def on_client_data(self, size: int, too_big: bool) -> None:
        if self.record is not None:
            self.record.client(
                "<message data over the size limit, discarded>"
                if too_big
                else f"<message data, {size} bytes>"
            )

    def on_reply(self, text: str) -> None:
        if self.record is not None:
            self.record.server(text)

    def on_tls(self, transport: asyncio.BaseTransport) -> None:
        if self.record is not None:
            record_tls(self.record, self._ssl_object(), starttls=not self.implicit_tls)

    def on_tls_failed(self, error: BaseException) -> None:
        if self.record is not None:
            record_tls_failure(self.record, error)

    def on_timeout(self) -> None:
        if self.record is not None:
            self.record.note("idle timeout: the server closes the session")

    def on_bogus_limit(self) -> None:
        if self.record is not None:
            self.record.note(
                f"{BOGUS_LIMIT} unrecognised commands in this session: the server closes it"
            )

    def _ssl_object(self) -> ssl.SSLObject | None:
        extra = self.session.ssl
        obj = extra.get("ssl_object") if extra else None
        return obj if isinstance(obj, ssl.SSLObject) else None

    def _tls_info(self) -> TlsInfo:
        return TlsInfo(active=self.tls_active, peer_cert_der=peer_cert_der(self._ssl_object()))

    # ---- SASL -------------------------------------------------------------------------
    async def _sasl_response(self) -> bytes | None:
        """Read one client SASL line (after a 334), recorded redacted. None if aborted."""
        blob = (await self.read_line()).strip()
        if self.record is not None:
            self.record.client(f"<SASL response, redacted {len(blob)} bytes>" if blob else "")
        if blob == b"*":
            self.reply("501 5.7.0 Authentication aborted")
            return None
        return blob

    async def _initial_response(self, args: list[str]) -> bytes | None:
        if len(args) > 1:
            if self.record is not None:
                self.record.set(sasl_ir=True)
            # non-UTF-8 octets arrive as lone surrogates: give the client's bytes back
            return b"" if args[1] == "=" else args[1].encode("utf-8", "surrogateescape")
        if self.record is not None:
            self.record.set(sasl_ir=False)
        self.reply("334 ")
        return await self._sasl_response()

    async def auth_XOAUTH2(self, args: list[str]) -> AuthOutcome:
        if self.record is not None:
            self.record.set(sasl_mechanism="XOAUTH2")
        payload = await self._initial_response(args)
        if payload is None:
            return AuthOutcome(False)
        return await self._finish_auth(self.policy.authenticate_xoauth2(payload, self._tls_info()))

    async def auth_PLAIN(self, args: list[str]) -> AuthOutcome:
        if self.record is not None:
            self.record.set(sasl_mechanism="PLAIN")
        payload = await self._initial_response(args)
        if payload is None:
            return AuthOutcome(False)
        try:
            base64.b64decode(payload, validate=True)
        except binascii.Error:
            return AuthOutcome(False, reply="501 5.5.2 Cannot decode base64")
        return await self._finish_auth(self.policy.authenticate_plain(payload, self._tls_info()))

    async def _finish_auth(self, result: MssAuthResult) -> AuthOutcome:
        record = self.record
        peer = self.session.peer[0] if self.session.peer else None
        if record is not None:
            record.set(auth_user=result.user, auth_ok=result.ok, **result.details)
        if result.ok:
            self.mailbox = result.mailbox
            self.token_session = result.token.session_id if result.token else None
            self.policy.auth_succeeded(peer)
            return AuthOutcome(True, auth_data=result.user)
        if record is not None:
            record.set(auth_error=result.reason)
        await self.policy.pause_before_failure(peer)
        if result.challenge is not None:
            # RFC 7628 3.2.2: an error challenge; the client answers with an empty line.
            self.reply("334 " + result.challenge.decode("ascii", "replace"))
            if await self._sasl_response() is None:
                return AuthOutcome(False)
        return AuthOutcome(False, reply=f"535 5.7.8 Authentication failed: {result.reason}")

    # ---- server-side faults -------------------------------------------------------
    def drop(self, reason: str = "server-drop") -> None:
        """Close the session from the server side (the "session closed" test)."""
        self.dropped_by_server = True
        self.closing_reason = reason
        if self.record is not None:
            self.record.note(f"session closed by the server: {reason}")
        if self.transport is not None:
            self.reply(_DROP_REPLY)
        self.close(reason)
