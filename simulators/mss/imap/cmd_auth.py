"""Commands valid in any state: CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN, AUTHENTICATE."""

from __future__ import annotations

import base64
import binascii
import contextlib

from simulators.mss.auth import AuthResult
from simulators.mss.imap.connection import (
    Bad,
    ImapConnection,
    No,
    SessionClosed,
)
from simulators.mss.imap.parser import (
    Command,
    astring,
    atom,
    text_arg,
)
from simulators.mss.imap.responses import (
    SERVER_ID,
    imap_string,
)


class AuthCommands(ImapConnection):
    # ==== commands: any state ==========================================================
    async def cmd_capability(self, cmd: Command) -> str:
        self._send(f"* CAPABILITY {self._capabilities()}\r\n")
        return "CAPABILITY completed"

    async def cmd_noop(self, cmd: Command) -> str:
        return "NOOP completed"

    async def cmd_logout(self, cmd: Command) -> str:
        self._set_reason("client-logout")
        self._send("* BYE segur-sim logging out\r\n")
        self._tagged(cmd.tag, "OK", "LOGOUT completed")
        with contextlib.suppress(SessionClosed):
            await self._flush()
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()
        return ""

    async def cmd_id(self, cmd: Command) -> str:
        fields: dict[str, str | None] = {}
        if cmd.args and isinstance(cmd.args[0], list):
            values = cmd.args[0]
            if len(values) % 2 or len(values) > 60:
                raise Bad("ID takes NIL or a list of field/value pairs (at most 30)")
            for key, value in zip(values[::2], values[1::2], strict=True):
                k = text_arg(key)[:30]
                fields[k] = None if value == "NIL" else text_arg(value)[:1024]
        elif not cmd.args or cmd.args[0] != "NIL":
            raise Bad("ID takes NIL or a parenthesised list")
        self.record.set(imap_id=fields)
        ours = " ".join(imap_string(k) + " " + imap_string(v) for k, v in SERVER_ID.items())
        self._send(f"* ID ({ours})\r\n")
        return "ID completed"

    async def cmd_starttls(self, cmd: Command) -> str:
        if self.implicit_tls or self.tls:
            raise Bad("TLS is already active")
        self._tagged(cmd.tag, "OK", "Begin TLS negotiation now")
        await self._flush()
        # Anything the client pipelined after STARTTLS arrived in clear text: drop it
        # (the STARTTLS command injection attack, CVE-2011-0411 family).
        injected = len(self._buf) + len(getattr(self.reader, "_buffer", b""))
        self._buf.clear()
        buffer = getattr(self.reader, "_buffer", None)
        if isinstance(buffer, bytearray):
            buffer.clear()
        if injected:
            self.record.note(f"{injected} octets sent after STARTTLS before the handshake: dropped")
        if not await self._start_tls(starttls=True):
            self.closed = True
            raise SessionClosed
        return ""

    # ==== commands: not authenticated ==================================================
    async def cmd_login(self, cmd: Command) -> str:
        if self.mailbox is not None:
            raise Bad("already authenticated")
        if len(cmd.args) != 2:
            raise Bad("LOGIN takes a user name and a password")
        user, password = text_arg(cmd.args[0]), text_arg(cmd.args[1])
        self.record.set(sasl_mechanism="LOGIN", sasl_ir=False)
        if not self.tls:
            raise No("[PRIVACYREQUIRED] LOGIN before TLS is refused: use STARTTLS first")
        result = self.auth.login(user, password, self._tls_info())
        return await self._finish_auth(cmd, result)

    async def cmd_authenticate(self, cmd: Command) -> str:
        if self.mailbox is not None:
            raise Bad("already authenticated")
        if not cmd.args:
            raise Bad("AUTHENTICATE needs a mechanism")
        mechanism = atom(cmd.args[0], "mechanism").upper()
        initial = cmd.args[1] if len(cmd.args) > 1 else None
        self.record.set(sasl_mechanism=mechanism, sasl_ir=initial is not None)
        if not self.tls:
            raise No("[PRIVACYREQUIRED] authentication before TLS is refused: use STARTTLS first")
        if mechanism not in ("XOAUTH2", "PLAIN"):
            raise No(f"[CANNOT] unsupported mechanism {mechanism[:20]} (use XOAUTH2 or PLAIN)")
        if initial is not None:
            payload = astring(initial)
            if payload == b"=":  # RFC 4959: an empty initial response
                payload = b""
        else:
            self._send("+ \r\n")
            await self._flush()
            answer = await self._sasl_line()
            if answer is None:
                raise Bad("authentication cancelled by the client")
            payload = answer
        tls = self._tls_info()
        if mechanism == "XOAUTH2":
            result = self.auth.xoauth2(payload, tls)
        else:
            try:
                base64.b64decode(payload, validate=True)
            except binascii.Error:
                result = AuthResult(False, "PLAIN", reason="the PLAIN response is not base64")
            else:
                result = self.auth.plain(payload, tls)
        return await self._finish_auth(cmd, result)

    async def _sasl_line(self) -> bytes | None:
        line = await self._read_line()
        self.record.client(f"<SASL response, redacted {len(line)} bytes>" if line else "")
        if line.strip() == b"*":
            return None
        return line.strip()

    async def _finish_auth(self, cmd: Command, result: AuthResult) -> str:
        self.record.set(auth_user=result.user, auth_ok=result.ok, **result.details)
        if result.ok:
            self.auth.throttle.succeeded(self.client_addr)
            self.mailbox = result.mailbox
            self.token_session = result.token.session_id if result.token else None
            self.record.note(
                f"authenticated as {result.user} ({result.mechanism}): {result.reason}"
            )
            return f"[CAPABILITY {self._capabilities()}] {result.mechanism} authentication OK"
        self.record.set(auth_error=result.reason)
        await self.auth.pause_before_failure(self.client_addr)
        if result.challenge is not None and result.mechanism == "XOAUTH2":
            # As Gmail: an error challenge, the client answers with an empty line.
            self._send("+ " + result.challenge.decode("ascii") + "\r\n")
            await self._flush()
            await self._sasl_line()
        raise No(f"[AUTHENTICATIONFAILED] authentication failed: {result.reason}")
