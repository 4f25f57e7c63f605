"""The SMTP submission server: aiosmtpd's protocol engine with our policy and recording.

What this subclass changes in aiosmtpd, and why:

- TLS is the event loop's own transport, not aiosmtpd's hand-built ``sslproto`` layer:
  STARTTLS goes through ``loop.start_tls``, and implicit TLS (port 465) arrives
  already encrypted from :mod:`simulators.mss.tlsaccept`, which records failed
  handshakes. Either way ``session.ssl`` is filled and AUTH is advertised after TLS
  (aiosmtpd issues 274 and 281). This is also what lets uvloop's C TLS run.
- Every client line is recorded by wrapping the stream reader, so a command refused
  before STARTTLS is still seen; credentials are redacted.
- DATA is read in one scan for ``CRLF.CRLF`` instead of line by line, and plain
  ``<addr>`` arguments skip ``email``'s header parser: these were half of stock
  aiosmtpd's CPU per message.
- SASL: XOAUTH2 (PER/ORG, PSC token) and PLAIN (APP, with the mTLS certificate),
  with SASL-IR detection and the XOAUTH2 error challenge.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import email.errors
import logging
import re
import ssl
from collections.abc import Callable
from typing import Any, cast

from aiosmtpd.smtp import BOGUS_LIMIT, SMTP, AuthResult, Envelope, Session, TLSSetupException

from simulators import __version__
from simulators.core.recorder import SessionRecord
from simulators.core.store.mail import Mailbox
from simulators.mss.auth import AuthResult as MssAuthResult
from simulators.mss.auth import TlsInfo
from simulators.mss.tlsaccept import set_nodelay
from simulators.mss.tlsinfo import peer_cert_der, record_tls, record_tls_failure

log = logging.getLogger("segur_sim.smtp")


class _DropLoginDataWarning(logging.Filter):
    # aiosmtpd itself sets the deprecated Session.login_data on every successful AUTH.
    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_DropLoginDataWarning())

_SIMPLE_ADDR = re.compile(r"\s*<([^<>@\s\"\\]+@[^<>@\s\"\\]+)>\s*(.*)\Z|\s*<>\s*(.*)\Z")
_END_OF_DATA = b"\r\n.\r\n"
_CHUNK = 1 << 16
AUTH_LINE_LIMIT = 12288
_AIOSMTPD_BOGUS_GOODBYE = "502 5.5.1 Too many unrecognized commands, goodbye."
_BOGUS_GOODBYE = f"421 4.7.0 Too many unrecognized commands ({BOGUS_LIMIT}), closing the session"
# What aiosmtpd keeps in session.ssl (it used to be its SSLProtocol's ``_extra``).
_SSL_EXTRA = ("sslcontext", "peercert", "cipher", "compression", "ssl_object")


class _LoopTls:
    """Stands in aiosmtpd's ``_tls_protocol`` slot, which it only tests for truth."""

    def __bool__(self) -> bool:
        return True


_LOOP_TLS: Any = _LoopTls()


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


class MssSMTP(SMTP):
    """One SMTP session. ``implicit_tls`` selects the port-465 behaviour."""

    # RFC 4954: an AUTH line with an initial response may reach 12288 octets (a PSC
    # token in XOAUTH2 is about 1.2 KB); aiosmtpd's default line limit is 1001.
    line_length_limit = AUTH_LINE_LIMIT + 2

    def __init__(
        self,
        handler: Any,
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
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident=f"ESMTP segur-sim {__version__} (SIMULATION)",
            tls_context=None if implicit_tls else ssl_context,
            require_starttls=not implicit_tls,
            timeout=timeout,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["LOGIN"],
        )
        # Per session: aiosmtpd keeps this dict on the class and grows it at each EHLO.
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, {"AUTH": AUTH_LINE_LIMIT}
        )
        self.policy = policy
        self.implicit_tls = implicit_tls
        self.record: SessionRecord | None = None
        self.mailbox: Mailbox | None = None
        self.token_session: str | None = None
        self.dropped_by_server = False
        self._closing_reason: str | None = None
        self._raw_readuntil: Callable[..., Any] | None = None
        self._lost = False

    # ---- connection lifecycle ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        set_nodelay(transport.get_extra_info("socket"))
        self.record = self.policy.open_record(transport.get_extra_info("peername"))
        self.policy.on_session_start(self)
        super().connection_made(transport)
        if self.implicit_tls:  # the handshake is done: the transport is already TLS
            self._tls_protocol = _LOOP_TLS
            self._adopt_tls(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self.record is not None:
            reason = self._closing_reason or ("client-dropped" if error else "client-closed")
            self.record.close(reason)
        self.policy.on_session_end(self)
        super().connection_lost(error)

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)
        self._raw_readuntil = reader.readuntil

        async def recording_readuntil(separator: bytes = b"\n") -> bytes:
            assert self._raw_readuntil is not None
            line: bytes = await self._raw_readuntil(separator)
            self._record_client_line(line)
            return line

        reader.readuntil = recording_readuntil  # type: ignore[method-assign,assignment]

    @property
    def tls_active(self) -> bool:
        return (
            self._tls_protocol is not None and self.session is not None and bool(self.session.ssl)
        )

    def _ssl_object(self) -> ssl.SSLObject | None:
        if self.session is None or not self.session.ssl:
            return None
        obj = self.session.ssl.get("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    def _adopt_tls(self, transport: asyncio.BaseTransport) -> None:
        assert self.session is not None
        self.session.ssl = {key: transport.get_extra_info(key) for key in _SSL_EXTRA}
        hook = self._handle_hooks.get("STARTTLS")
        self._tls_handshake_okay = True if hook is None else hook(self, self.session, self.envelope)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context or self._tls_protocol is not None:
            await self.push("454 4.7.0 TLS not available")
            return
        await self.push("220 2.0.0 Ready to start TLS")
        plain = cast(asyncio.WriteTransport, self.transport)  # uvloop's are not subclasses
        # RFC 3207 4.2: clear text sent after STARTTLS is discarded. Now, not after the
        # handshake: by then the reader may already hold the client's first TLS command.
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        try:
            secure = await self.loop.start_tls(
                plain,
                self,
                self.tls_context,
                server_side=True,
                ssl_handshake_timeout=self._timeout_duration,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._tls_failed(exc)
            raise TLSSetupException() from exc
        if secure is None:
            raise ConnectionResetError("connection closed during the TLS handshake")
        # RFC 3207 4.2: forget everything said before TLS, as aiosmtpd does.
        self._original_transport = plain
        self._tls_protocol = _LOOP_TLS
        self._set_rset_state()
        self.session = self._create_session()
        self.session.peer = secure.get_extra_info("peername")
        self._reset_timeout()
        self.transport = secure
        self._transport = secure  # StreamReaderProtocol's own reference
        self._over_ssl = True
        self._reader._transport = secure  # type: ignore[attr-defined]
        self._writer._transport = secure  # type: ignore[attr-defined]
        self._adopt_tls(secure)

    def _tls_failed(self, exc: BaseException) -> None:
        if self.record is not None:
            record_tls_failure(self.record, exc)
        self._closing_reason = "tls-handshake-failed"

    def tls_established(self) -> None:
        """Called (from the handler's STARTTLS hook) once a handshake completed."""
        if self.record is not None:
            record_tls(self.record, self._ssl_object(), starttls=not self.implicit_tls)

    # ---- recording ----------------------------------------------------------------
    def _record_client_line(self, line: bytes) -> None:
        if self.record is None:
            return
        head = line[:16].upper()
        if head.startswith(b"AUTH "):
            parts = line.rstrip(b"\r\n").split(b" ")
            shown = b" ".join(parts[:2])
            if len(parts) > 2:
                shown += b" <redacted %d bytes>" % len(parts[2])
            self.record.client(shown)
            if not self.tls_active:
                self.record.set(auth_before_tls=True)
            return
        self.record.client(line)
        if not self.tls_active and head.startswith((b"MAIL ", b"RCPT ", b"DATA")):
            self.record.set(mail_before_tls=True)

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str) and not status.isascii():
            # aiosmtpd echoes arguments (e.g. "502 Could not VRFY <arg>") decoded with
            # lone surrogates for non-UTF-8 octets, which it then cannot encode.
            status = status.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if status == _AIOSMTPD_BOGUS_GOODBYE:
            # aiosmtpd closes the session after BOGUS_LIMIT unknown commands but says so
            # with a 502; RFC 5321 (3.8, 4.2.3) has 421 for "closing the channel".
            status = _BOGUS_GOODBYE
            self._closing_reason = "too-many-unrecognized-commands"
            if self.record is not None:
                self.record.note(
                    f"{BOGUS_LIMIT} unrecognised commands in this session: the server closes it"
                )
        if self.record is not None:
            self.record.server(status)
        await super().push(status)  # type: ignore[type-var]

    # ---- SASL -------------------------------------------------------------------------
    async def _sasl_response(self) -> bytes | None:
        """Read one client SASL line (after a 334), recorded redacted. None if aborted."""
        assert self._raw_readuntil is not None
        line: bytes = await self._raw_readuntil(b"\n")
        blob = line.strip()
        if self.record is not None:
            self.record.client(f"<SASL response, redacted {len(blob)} bytes>" if blob else "")
        if blob == b"*":
            await self.push("501 5.7.0 Authentication aborted")
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
        await self.push("334 ")
        return await self._sasl_response()

    async def auth_XOAUTH2(self, _server: Any, args: list[str]) -> AuthResult:
        if self.record is not None:
            self.record.set(sasl_mechanism="XOAUTH2")
        payload = await self._initial_response(args)
        if payload is None:
            return AuthResult(success=False, handled=True)
        result = self.policy.authenticate_xoauth2(payload, self._tls_info())
        return await self._finish_auth(result)

    async def auth_PLAIN(self, _server: Any, args: list[str]) -> AuthResult:
        if self.record is not None:
            self.record.set(sasl_mechanism="PLAIN")
        payload = await self._initial_response(args)
        if payload is None:
            return AuthResult(success=False, handled=True)
        try:
            base64.b64decode(payload, validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Cannot decode base64")
            return AuthResult(success=False, handled=True)
        result = self.policy.authenticate_plain(payload, self._tls_info())
        return await self._finish_auth(result)

    async def _finish_auth(self, result: MssAuthResult) -> AuthResult:
        record = self.record
        peer = self.session.peer[0] if self.session and self.session.peer else None
        if record is not None:
            record.set(auth_user=result.user, auth_ok=result.ok, **result.details)
        if result.ok:
            self.mailbox = result.mailbox
            self.token_session = result.token.session_id if result.token else None
            self.policy.auth_succeeded(peer)
            return AuthResult(success=True, auth_data=result.user)
        if record is not None:
            record.set(auth_error=result.reason)
        await self.policy.pause_before_failure(peer)
        if result.challenge is not None:
            # RFC 7628 / Gmail: an error challenge, the client answers with an empty line.
            await self.push(b"334 " + result.challenge)
            if await self._sasl_response() is None:
                return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False,
            handled=False,
            message=f"535 5.7.8 Authentication failed: {result.reason}",
        )

    def _tls_info(self) -> TlsInfo:
        return TlsInfo(active=self.tls_active, peer_cert_der=peer_cert_der(self._ssl_object()))

    # ---- fast paths ---------------------------------------------------------------
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _SIMPLE_ADDR.match(arg)
        if match is None:
            try:  # quoted local parts, comments...: the full parser
                return super()._getaddr(arg)
            except (IndexError, ValueError, email.errors.MessageError):
                return None, None  # e.g. "FROM:  <": answered as a syntax error
        if match.group(1) is not None:
            return match.group(1), match.group(2)
        return "", match.group(3)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, too_big = await self._read_data()
        if self.record is not None:
            self.record.client(
                f"<message data, {len(content)} bytes>"
                if not too_big
                else "<message data over the size limit, discarded>"
            )
        if too_big:
            self._set_post_data_state()
            await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is None else status)

    async def _read_data(self) -> tuple[bytes, bool]:
        """Read up to CRLF.CRLF in bulk; undo dot-stuffing. Bounded by the size limit."""
        reader = self._reader
        limit = self.data_size_limit + 1024 if self.data_size_limit else 1 << 30
        assert self._raw_readuntil is not None
        saved = reader._limit  # type: ignore[attr-defined]
        reader._limit = limit  # type: ignore[attr-defined]
        try:
            try:
                first: bytes = await self._raw_readuntil(b"\r\n")
                if first == b".\r\n":
                    return b"", False
                # The terminator's CRLF may be the one that ended ``first`` (a one-line
                # message): give it back so that the scan sees CRLF.CRLF in that case too.
                reader._buffer[0:0] = b"\r\n"  # type: ignore[attr-defined]
                rest: bytes = await self._raw_readuntil(_END_OF_DATA)
            except asyncio.LimitOverrunError:
                await self._discard_until_end()
                return b"", True
            data = first + rest[2:-3]  # keep the final CRLF, drop ".\r\n"
        finally:
            reader._limit = saved  # type: ignore[attr-defined]
        if data.startswith(b"."):
            data = data[1:]
        data = data.replace(b"\r\n..", b"\r\n.")
        return data, False

    async def _discard_until_end(self) -> None:
        # Drain an oversize message without keeping it, then answer 552.
        tail = b""
        while True:
            chunk = await self._reader.read(_CHUNK)
            if not chunk:
                raise ConnectionResetError("client closed during DATA")
            window = tail + chunk
            index = window.find(_END_OF_DATA)
            if index >= 0:
                leftover = window[index + len(_END_OF_DATA) :]
                if leftover:
                    self._reader._buffer[0:0] = leftover  # type: ignore[attr-defined]
                return
            tail = window[-4:]

    async def smtp_QUIT(self, arg: str) -> None:
        self._closing_reason = "client-quit"
        await super().smtp_QUIT(arg)

    def _timeout_cb(self) -> None:
        self._closing_reason = "timeout"
        if self.record is not None:
            self.record.note("idle timeout: the server closes the session")
        super()._timeout_cb()

    # ---- server-side faults -------------------------------------------------------
    def drop(self, reason: str = "server-drop") -> None:
        """Close the session from the server side (the "session closed" test)."""
        self._closing_reason = reason
        self.dropped_by_server = True
        if self.record is not None:
            self.record.note(f"session closed by the server: {reason}")
        if self.transport is not None:
            try:
                self._writer.write(b"421 4.4.2 Session closed by the server (simulated)\r\n")
                if self.record is not None:
                    self.record.server("421 4.4.2 Session closed by the server (simulated)")
            except Exception:
                pass
            self.transport.close()


class SessionHooks:
    """aiosmtpd handler hooks kept for completeness: STARTTLS bookkeeping."""

    async def handle_EHLO(
        self,
        server: MssSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return responses

    def handle_STARTTLS(self, server: MssSMTP, session: Session, envelope: Envelope) -> bool:
        server.tls_established()
        return True
