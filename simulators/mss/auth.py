"""Authentication rules shared by the SMTP and IMAP servers.

- PER/ORG mailboxes: SASL XOAUTH2 with a PSC access token, only over TLS.
- APP mailboxes: SASL PLAIN (or IMAP LOGIN) whose login is the mailbox address, only
  over a TLS session that presented the mailbox's valid ORG AUTH_CLI certificate.

Failures are slowed down per client address (a brute-force loop gets ever longer
pauses) and every decision carries a reason the recorder and the verdicts show.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from dataclasses import dataclass, field

from simulators.core.pki import TestPKI
from simulators.core.store.mail import Mailbox, MailboxType, MailStore
from simulators.mss.psc import PscService, TokenError, TokenInfo


@dataclass(frozen=True)
class TlsInfo:
    """What the transport knows about the session when a client authenticates."""

    active: bool
    peer_cert_der: bytes | None = None


@dataclass
class AuthResult:
    ok: bool
    mechanism: str
    user: str | None = None
    mailbox: Mailbox | None = None
    reason: str = ""
    token: TokenInfo | None = None
    # XOAUTH2 failure payload (RFC 7628 style JSON), sent before the final error
    challenge: bytes | None = None
    details: dict[str, str] = field(default_factory=dict)


def parse_xoauth2(payload: bytes) -> tuple[str, str]:
    """Decode an XOAUTH2 initial response: ``user=..\\x01auth=Bearer ..\\x01\\x01``."""
    try:
        text = base64.b64decode(payload, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the XOAUTH2 response is not valid base64 UTF-8") from exc
    if not text.endswith("\x01\x01"):
        raise ValueError("the XOAUTH2 string must end with \\x01\\x01")
    fields: dict[str, str] = {}
    for part in text[:-2].split("\x01"):
        if "=" not in part:
            raise ValueError(f"malformed XOAUTH2 field {part[:20]!r}")
        key, value = part.split("=", 1)
        fields[key] = value
    user = fields.get("user")
    auth = fields.get("auth", "")
    if not user:
        raise ValueError("the XOAUTH2 string has no user= field")
    if not auth.startswith("Bearer "):
        raise ValueError("the XOAUTH2 auth= field must be 'Bearer <token>'")
    return user, auth[len("Bearer ") :].strip()


def parse_plain(payload: bytes) -> tuple[str, str, str]:
    """Decode SASL PLAIN: ``authzid\\0authcid\\0password``."""
    try:
        text = base64.b64decode(payload, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the PLAIN response is not valid base64 UTF-8") from exc
    parts = text.split("\x00")
    if len(parts) != 3:
        raise ValueError("the PLAIN response must hold authzid NUL authcid NUL password")
    return parts[0], parts[1], parts[2]


def xoauth2_error_challenge(status: str = "401") -> bytes:
    body = {"status": status, "schemes": "bearer", "scope": "openid"}
    return base64.b64encode(json.dumps(body).encode())


class Throttle:
    """Per client address: each consecutive failure adds ``step`` seconds of delay."""

    def __init__(self, step: float, maximum: float) -> None:
        self.step = step
        self.maximum = maximum
        self._failures: dict[str, tuple[int, float]] = {}

    def delay(self, addr: str | None) -> float:
        count, _last = self._failures.get(addr or "", (0, 0.0))
        return min(self.maximum, self.step * count)

    def failed(self, addr: str | None) -> None:
        count, _last = self._failures.get(addr or "", (0, 0.0))
        self._failures[addr or ""] = (count + 1, time.monotonic())

    def succeeded(self, addr: str | None) -> None:
        self._failures.pop(addr or "", None)

    def failures(self, addr: str | None) -> int:
        return self._failures.get(addr or "", (0, 0.0))[0]


class Authenticator:
    def __init__(self, store: MailStore, psc: PscService, pki: TestPKI, throttle: Throttle) -> None:
        self.store = store
        self.psc = psc
        self.pki = pki
        self.throttle = throttle
        # Mailbox address -> reason: tokens refused whatever they are (a staged fault).
        self.refused_tokens: dict[str, str] = {}

    async def pause_before_failure(self, addr: str | None) -> None:
        """Sleep before answering a failure; the delay grows with repeated failures."""
        delay = self.throttle.delay(addr)
        self.throttle.failed(addr)
        if delay > 0:
            await asyncio.sleep(delay)

    def xoauth2(self, payload: bytes, tls: TlsInfo) -> AuthResult:
        result = AuthResult(False, "XOAUTH2")
        if not tls.active:
            result.reason = "authentication before TLS is refused (STARTTLS first)"
            return result
        try:
            user, token = parse_xoauth2(payload)
        except ValueError as exc:
            result.reason = str(exc)
            return result
        result.user = user
        mailbox = self.store.get_mailbox(user)
        if mailbox is None:
            result.reason = f"unknown mailbox {user}"
            result.challenge = xoauth2_error_challenge("401")
            return result
        result.mailbox = mailbox
        if mailbox.type is MailboxType.APP:
            result.reason = (
                f"{user} is an APP mailbox: it must use its ORG AUTH_CLI certificate and PLAIN"
            )
            result.challenge = xoauth2_error_challenge("401")
            return result
        staged = self.refused_tokens.get(mailbox.address.lower())
        if staged is not None:
            result.reason = f"PSC token refused: {staged}"
            result.challenge = xoauth2_error_challenge("401")
            return result
        try:
            result.token = self.psc.validate(token, mailbox)
        except TokenError as exc:
            result.reason = f"PSC token refused: {exc}"
            result.challenge = xoauth2_error_challenge("401")
            return result
        result.ok = True
        result.reason = "valid PSC access token"
        return result

    def plain(self, payload: bytes, tls: TlsInfo) -> AuthResult:
        try:
            authzid, authcid, password = parse_plain(payload)
        except ValueError as exc:
            return AuthResult(False, "PLAIN", reason=str(exc))
        if authzid and authzid.lower() != authcid.lower():
            return AuthResult(False, "PLAIN", user=authcid, reason="authzid differs from login")
        return self.login(authcid, password, tls, mechanism="PLAIN")

    def login(
        self, user: str, password: str, tls: TlsInfo, *, mechanism: str = "LOGIN"
    ) -> AuthResult:
        """Login + password (IMAP LOGIN or SASL PLAIN): APP mailboxes with mTLS only."""
        result = AuthResult(False, mechanism, user=user)
        if not tls.active:
            result.reason = "authentication before TLS is refused (STARTTLS first)"
            return result
        mailbox = self.store.get_mailbox(user)
        if mailbox is None:
            result.reason = f"unknown mailbox {user} (the login must be the mailbox address)"
            return result
        result.mailbox = mailbox
        if mailbox.type is not MailboxType.APP:
            result.reason = (
                f"{user} is a {mailbox.type.value} mailbox: use XOAUTH2 with a PSC token"
            )
            return result
        if tls.peer_cert_der is None:
            result.reason = "no client certificate presented: APP mailboxes need ORG AUTH_CLI mTLS"
            return result
        verdict = self.pki.judge_client_certificate(tls.peer_cert_der)
        result.details = {
            "client_cert_subject": verdict.subject,
            "client_cert_verdict": verdict.reason,
        }
        if not verdict.ok:
            result.reason = f"client certificate refused: {verdict.reason}"
            return result
        entity_match = f"{mailbox.entity} (SIMULATION)" in verdict.subject
        if mailbox.address.lower() not in verdict.addresses and not entity_match:
            result.reason = (
                f"the client certificate ({verdict.subject}) is not issued for {mailbox.address}"
            )
            return result
        result.ok = True
        result.reason = "valid ORG AUTH_CLI certificate and mailbox login"
        return result
