"""Checks judged from the wire: STARTTLS, TLS versions and suites, certificates,
authentication, autoconfiguration, session end and reconnection.

Each verdict names the sessions it looked at (their recorder IDs), so the transcript in
the proof bundle shows the exchange behind it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from simulators.core.recorder import WireSession
from simulators.core.verdict import Evidence, Verdict, combine
from simulators.mss.conformance.observation import StepObservation
from simulators.mss.conformance.registry import StepCheck, register
from simulators.mss.http_routes import AUTOCONFIG_PATH
from simulators.mss.tls_profiles import ALLOWED_SUITE_CODES, is_allowed_suite

_BEFORE_TLS_OK = {
    "smtp": {"EHLO", "HELO", "NOOP", "RSET", "STARTTLS"},
    "imap": {"CAPABILITY", "NOOP", "ID", "STARTTLS"},
}
_PORTS = {"smtp": "SMTP submission (587, STARTTLS)", "imap": "IMAP (143, STARTTLS)"}
_STARTTLS_ENDPOINT = {"smtp": "smtp_starttls", "imap": "imap_starttls"}
MAX_AUTH_ATTEMPTS = 3  # MSS-16: more attempts against a refused token is a retry storm


def _ev(session: WireSession, detail: str) -> Evidence:
    return Evidence("session", session.id, detail)


def _describe(session: WireSession) -> str:
    parts = [f"{session.protocol} session {session.id} on {session.endpoint}"]
    if session.get("tls_version"):
        parts.append(f"{session.get('tls_version')} {session.get('tls_cipher')}")
    if session.get("tls_error"):
        parts.append(f"handshake failed: {session.get('tls_error')}")
    if session.get("sasl_mechanism"):
        ok = "accepted" if session.get("auth_ok") else f"refused ({session.get('auth_error')})"
        parts.append(f"{session.get('sasl_mechanism')} {ok}")
    return ", ".join(parts)


def _authenticated(sessions: Iterable[WireSession]) -> list[WireSession]:
    return [s for s in sessions if s.get("auth_ok")]


# ---- MSS-01 / MSS-02: STARTTLS first ------------------------------------------------------
class _StartTlsFirst(StepCheck):
    protocol = "smtp"

    def judge(self, obs: StepObservation) -> Verdict:
        proto = self.protocol
        sessions = obs.sessions(proto)
        wanted = _PORTS[proto]
        if not sessions:
            return Verdict.failed(
                f"no {proto.upper()} session was seen",
                expected=f"a session on {wanted}",
                observed=f"no {proto.upper()} connection in the step",
            )
        findings = []
        for s in sessions:
            if s.get("auth_before_tls") or s.get("mail_before_tls"):
                findings.append(
                    Verdict.failed(
                        f"{proto.upper()} session {s.id} sent credentials or mail in clear text",
                        expected="STARTTLS before any AUTH/MAIL (or AUTHENTICATE/LOGIN)",
                        observed=self._first_commands(obs, s),
                        evidence=[_ev(s, "clear-text command before STARTTLS")],
                    )
                )
                continue
            if s.endpoint != _STARTTLS_ENDPOINT[proto] or not s.get("starttls"):
                continue
            early = self._commands_before_tls(obs, s)
            if early:
                findings.append(
                    Verdict.failed(
                        f"{proto.upper()} session {s.id} sent {', '.join(early)} before STARTTLS",
                        expected="only greeting commands before STARTTLS",
                        observed=self._first_commands(obs, s),
                        evidence=[_ev(s, "commands before STARTTLS")],
                    )
                )
        good = [
            s
            for s in sessions
            if s.endpoint == _STARTTLS_ENDPOINT[proto] and s.get("starttls") and s.get("auth_ok")
        ]
        if not good and not findings:
            implicit = [s for s in sessions if s.endpoint != _STARTTLS_ENDPOINT[proto]]
            where = (
                f"only implicit-TLS sessions ({', '.join(s.endpoint for s in implicit)})"
                if implicit
                else "; ".join(_describe(s) for s in sessions)
            )
            findings.append(
                Verdict.failed(
                    f"no authenticated {proto.upper()} session used STARTTLS on {wanted}",
                    expected=f"STARTTLS on {wanted}, then authentication",
                    observed=where,
                    evidence=[_ev(s, "session seen") for s in sessions],
                )
            )
        if findings:
            return combine(findings)
        return Verdict.passed(
            f"{len(good)} {proto.upper()} session(s) upgraded with STARTTLS before authenticating",
            expected=f"STARTTLS on {wanted} before any authentication",
            observed="; ".join(self._first_commands(obs, s) for s in good[:3]),
            evidence=[_ev(s, "STARTTLS then authentication") for s in good],
        )

    def _commands_before_tls(self, obs: StepObservation, s: WireSession) -> list[str]:
        early = []
        for _, verb in obs.client_commands(s):
            if verb == "STARTTLS":
                break
            if verb not in _BEFORE_TLS_OK[self.protocol]:
                early.append(verb)
        return early

    def _first_commands(self, obs: StepObservation, s: WireSession) -> str:
        verbs = [v for _, v in obs.client_commands(s)][:6]
        return f"session {s.id}: " + " ".join(verbs)


@register("MSS-01")
class SmtpStartTls(_StartTlsFirst):
    protocol = "smtp"

    def ready(self, obs: StepObservation) -> bool:
        return bool(obs.submissions()) and obs.quiet()


@register("MSS-02")
class ImapStartTls(_StartTlsFirst):
    protocol = "imap"


# ---- refusals: legacy TLS, weak DH, bad certificates --------------------------------------
class _MustAbort(StepCheck):
    """The endpoints present a fault; every attempt must end before authentication."""

    fault = "the staged fault"

    def ready(self, obs: StepObservation) -> bool:
        return bool(obs.sessions()) and obs.quiet()

    def judge(self, obs: StepObservation) -> Verdict:
        sessions = obs.sessions()
        if not sessions:
            return Verdict.failed(
                "no connection attempt was seen, so the refusal could not be observed",
                expected=f"the software connects, meets {self.fault} and aborts",
                observed="no SMTP or IMAP connection in the step",
            )
        went_on = [s for s in sessions if s.get("sasl_mechanism") or s.get("auth_ok")]
        if went_on:
            return Verdict.failed(
                f"the software accepted {self.fault} and went on to authenticate",
                expected="abort before any AUTH/AUTHENTICATE/LOGIN",
                observed="; ".join(_describe(s) for s in went_on),
                evidence=[_ev(s, "authenticated despite the fault") for s in went_on],
            )
        return Verdict.passed(
            f"{len(sessions)} attempt(s), all aborted before authentication",
            expected=f"abort on {self.fault}",
            observed="; ".join(_describe(s) for s in sessions[:4]),
            evidence=[_ev(s, "aborted") for s in sessions],
        )


@register("MSS-03", "normal")
class TlsVersion(StepCheck):
    def judge(self, obs: StepObservation) -> Verdict:
        sessions = obs.sessions()
        tls = [s for s in sessions if s.get("tls_version")]
        failed_versions = [s for s in sessions if "protocol" in str(s.get("tls_error", "")).lower()]
        if failed_versions:
            return Verdict.failed(
                "a handshake failed on the TLS version: the client offered less than TLS 1.2",
                expected="TLS 1.2 or 1.3",
                observed="; ".join(_describe(s) for s in failed_versions),
                evidence=[_ev(s, "version refused") for s in failed_versions],
            )
        if not tls:
            return Verdict.failed(
                "no TLS session was established",
                expected="SMTP and IMAP sessions over TLS 1.2 or 1.3",
                observed="; ".join(_describe(s) for s in sessions) or "no session",
                evidence=[_ev(s, "no TLS") for s in sessions],
            )
        old = [s for s in tls if s.get("tls_version") not in ("TLSv1.2", "TLSv1.3")]
        if old:
            return Verdict.failed(
                "a session negotiated a TLS version below 1.2",
                expected="TLSv1.2 or TLSv1.3",
                observed="; ".join(_describe(s) for s in old),
                evidence=[_ev(s, "old TLS version") for s in old],
            )
        versions = sorted({str(s.get("tls_version")) for s in tls})
        note = "" if "TLSv1.3" in versions else " (TLS 1.3 is recommended, ECO.1.1.2)"
        return Verdict.passed(
            f"{len(tls)} session(s) negotiated {', '.join(versions)}{note}",
            expected="TLSv1.2 or TLSv1.3",
            observed=", ".join(versions),
            evidence=[_ev(s, str(s.get("tls_version"))) for s in tls],
        )


@register("MSS-03", "legacy")
class RefuseLegacyTls(_MustAbort):
    fault = "a server offering only TLS 1.0/1.1"

    def judge(self, obs: StepObservation) -> Verdict:
        verdict = super().judge(obs)
        legacy = [s for s in obs.sessions() if s.get("tls_version") in ("TLSv1", "TLSv1.1")]
        if verdict.ok and legacy:
            return Verdict.failed(
                "the software completed a TLS 1.0/1.1 handshake",
                expected="no handshake below TLS 1.2",
                observed="; ".join(_describe(s) for s in legacy),
                evidence=[_ev(s, "legacy handshake") for s in legacy],
            )
        return verdict


@register("MSS-04", "normal")
class CipherSuites(StepCheck):
    def judge(self, obs: StepObservation) -> Verdict:
        tls = [s for s in obs.sessions() if s.get("tls_version")]
        if not tls:
            return Verdict.failed(
                "no TLS session was established, so the offered suites could not be seen",
                expected="SMTP and IMAP sessions over TLS",
                observed="; ".join(_describe(s) for s in obs.sessions()) or "no session",
            )
        findings = []
        for s in tls:
            offered = [c for c in s.get("tls_offered", []) if not c.startswith("TLS_")]
            extra = sorted(c for c in offered if c not in ALLOWED_SUITE_CODES)
            cipher = str(s.get("tls_cipher"))
            if extra:
                findings.append(
                    Verdict.failed(
                        f"session {s.id} offered suites outside the allowed six",
                        expected="only "
                        + ", ".join(f"{code} {name}" for name, code in ALLOWED_SUITE_CODES.items()),
                        observed=f"also offered {', '.join(extra[:8])}"
                        + (f" and {len(extra) - 8} more" if len(extra) > 8 else ""),
                        evidence=[_ev(s, "forbidden suites offered")],
                    )
                )
            elif not is_allowed_suite(cipher):
                findings.append(
                    Verdict.failed(
                        f"session {s.id} negotiated {cipher}",
                        expected="one of the six allowed TLS 1.2 suites, or TLS 1.3",
                        observed=cipher,
                        evidence=[_ev(s, "forbidden suite negotiated")],
                    )
                )
        if findings:
            return combine(findings)
        return Verdict.passed(
            f"{len(tls)} session(s) offered and negotiated only allowed suites",
            expected="the six allowed TLS 1.2 suites (TLS 1.3 suites allowed)",
            observed="; ".join(f"{s.id}: {s.get('tls_cipher')}" for s in tls[:4]),
            evidence=[_ev(s, str(s.get("tls_cipher"))) for s in tls],
        )


@register("MSS-04", "weak-dh")
class RefuseWeakDh(_MustAbort):
    fault = "a server offering only a 1024-bit DHE group"


@register("MSS-05")
class RefuseExpired(_MustAbort):
    fault = "an expired server certificate"


@register("MSS-06")
class RefuseRevoked(_MustAbort):
    fault = "a revoked server certificate"


@register("MSS-07")
class RefuseForeign(_MustAbort):
    fault = "a server certificate outside the IGC Santé"


# ---- MSS-13: autoconfiguration -----------------------------------------------------------
@register("MSS-13")
class Autoconfig(StepCheck):
    def ready(self, obs: StepObservation) -> bool:
        fetches = obs.http(AUTOCONFIG_PATH)
        if not fetches:
            return False
        first = fetches[0].started_at
        after = [s for s in _authenticated(obs.sessions()) if s.started_at >= first]
        return bool(after) and obs.quiet()

    def judge(self, obs: StepObservation) -> Verdict:
        domain = obs.ctx.domain
        bal = obs.ctx.mailbox.address.lower()
        fetches = obs.http(AUTOCONFIG_PATH)
        auth = _authenticated(obs.sessions())
        if not fetches:
            return Verdict.failed(
                "the software did not fetch the autoconfiguration XML",
                expected=f"GET https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={bal}",
                observed="no autoconfig request; "
                + (f"{len(auth)} session(s) authenticated with preset parameters" if auth else ""),
                evidence=[_ev(s, "connected without autoconfig") for s in auth],
            )
        good = [
            f
            for f in fetches
            if f.endpoint == "https"
            and str(f.get("host", "")).lower().split(":")[0] == f"autoconfig.{domain}"
        ]
        if not good:
            f = fetches[0]
            return Verdict.failed(
                "the autoconfig XML was not fetched from https://autoconfig.<domain>",
                expected=f"HTTPS with Host autoconfig.{domain}",
                observed=f"{f.endpoint.upper()} with Host {f.get('host')!r}",
                evidence=[Evidence("http", f.id, "autoconfig request")],
            )
        fetch = good[0]
        asked = str(fetch.get("emailaddress") or "").lower()
        if asked != bal:
            return Verdict.failed(
                "the autoconfig request did not name the mailbox",
                expected=f"emailaddress={bal}",
                observed=f"emailaddress={asked or '(none)'}",
                evidence=[Evidence("http", fetch.id, "autoconfig request")],
            )
        after = [
            s
            for s in auth
            if s.started_at >= fetch.started_at and s.endpoint in ("smtp_starttls", "imap_starttls")
        ]
        if not after:
            return Verdict.failed(
                "no connection test followed the autoconfiguration",
                expected="an authenticated session on an endpoint the XML announces",
                observed="; ".join(_describe(s) for s in obs.sessions()) or "no session",
                evidence=[Evidence("http", fetch.id, "autoconfig request")],
            )
        return Verdict.passed(
            "autoconfiguration fetched, then a connection test on the announced endpoint",
            expected=f"autoconfig for {bal}, then a connection",
            observed=f"GET with Host {fetch.get('host')}, then " + _describe(after[0]),
            evidence=[Evidence("http", fetch.id, "autoconfig request")]
            + [_ev(s, "connection test") for s in after],
        )


# ---- MSS-14 / MSS-15 / MSS-A1 / MSS-A2: mechanisms ------------------------------------------
class _Mechanism(StepCheck):
    protocol = "smtp"
    mechanism = "XOAUTH2"
    client_cert = False

    def judge(self, obs: StepObservation) -> Verdict:
        proto = self.protocol.upper()
        bal = obs.ctx.mailbox.address.lower()
        verb = "AUTH" if self.protocol == "smtp" else "AUTHENTICATE"
        expected = f"{verb} {self.mechanism} as {bal}" + (
            " over TLS with the mailbox's client certificate" if self.client_cert else ""
        )
        tried = [s for s in obs.sessions(self.protocol) if s.get("sasl_mechanism")]
        if not tried:
            return Verdict.failed(
                f"no {proto} authentication was seen",
                expected=expected,
                observed="; ".join(_describe(s) for s in obs.sessions(self.protocol))
                or f"no {proto} session",
            )
        findings = []
        for s in tried:
            mech = str(s.get("sasl_mechanism"))
            if mech != self.mechanism:
                shown = "LOGIN command" if mech == "LOGIN" and proto == "IMAP" else f"{verb} {mech}"
                findings.append(
                    Verdict.failed(
                        f"{proto} session {s.id} used {shown}",
                        expected=expected,
                        observed=_describe(s),
                        evidence=[_ev(s, "wrong mechanism")],
                    )
                )
            elif s.get("auth_user") and str(s.get("auth_user")).lower() != bal:
                findings.append(
                    Verdict.failed(
                        f"{proto} session {s.id} authenticated as {s.get('auth_user')!r}",
                        expected=f"user {bal}",
                        observed=_describe(s),
                        evidence=[_ev(s, "wrong user")],
                    )
                )
            elif self.client_cert and not s.get("client_cert_subject"):
                findings.append(
                    Verdict.failed(
                        f"{proto} session {s.id} presented no client certificate",
                        expected="the ORG AUTH_CLI certificate in the TLS handshake",
                        observed=_describe(s),
                        evidence=[_ev(s, "no client certificate")],
                    )
                )
            elif not s.get("auth_ok"):
                findings.append(
                    Verdict.failed(
                        f"{proto} session {s.id}: the simulator refused the authentication",
                        expected=expected + ", accepted",
                        observed=str(s.get("auth_error")),
                        evidence=[_ev(s, "refused")],
                    )
                )
        if findings:
            return combine(findings)
        notes = self.notes(tried)
        return Verdict.passed(
            f"{len(tried)} {proto} authentication(s) with {self.mechanism} as {bal}{notes}",
            expected=expected,
            observed="; ".join(_describe(s) for s in tried[:3]),
            evidence=[_ev(s, "authenticated") for s in tried],
        )

    def notes(self, sessions: list[WireSession]) -> str:
        return ""


@register("MSS-14")
class SmtpXoauth2(_Mechanism):
    protocol = "smtp"


@register("MSS-15")
class ImapXoauth2(_Mechanism):
    protocol = "imap"

    def notes(self, sessions: list[WireSession]) -> str:
        if all(s.get("sasl_ir") for s in sessions):
            return ", with SASL-IR"
        return "; SASL-IR (recommended by ECO.1.2.4) was not used"


@register("MSS-A1")
class SmtpMtlsPlain(_Mechanism):
    protocol = "smtp"
    mechanism = "PLAIN"
    client_cert = True


@register("MSS-A2")
class ImapMtlsPlain(_Mechanism):
    protocol = "imap"
    mechanism = "PLAIN"
    client_cert = True


# ---- MSS-A3: the client certificate ----------------------------------------------------------
@register("MSS-A3")
class ClientCertificate(StepCheck):
    def judge(self, obs: StepObservation) -> Verdict:
        tls = [s for s in obs.sessions() if s.get("tls_version")]
        if not tls:
            return Verdict.failed(
                "no TLS session was established",
                expected="TLS sessions presenting the ORG AUTH_CLI certificate",
                observed="; ".join(_describe(s) for s in obs.sessions()) or "no session",
            )
        findings = []
        for s in tls:
            subject = s.get("client_cert_subject")
            verdict = str(s.get("client_cert_verdict", ""))
            if not subject:
                findings.append(
                    Verdict.failed(
                        f"session {s.id} presented no client certificate",
                        expected="the mailbox's ORG AUTH_CLI certificate",
                        observed=_describe(s),
                        evidence=[_ev(s, "no client certificate")],
                    )
                )
            elif s.get("sasl_mechanism") and not s.get("auth_ok"):
                findings.append(
                    Verdict.failed(
                        f"session {s.id}: the certificate {subject} was refused",
                        expected="a valid ORG AUTH_CLI certificate issued for the mailbox",
                        observed=verdict or str(s.get("auth_error")),
                        evidence=[_ev(s, "certificate refused")],
                    )
                )
        if findings:
            return combine(findings)
        subjects = sorted({str(s.get("client_cert_subject")) for s in tls})
        return Verdict.passed(
            f"{len(tls)} session(s) presented a valid ORG AUTH_CLI certificate",
            expected="the mailbox's ORG AUTH_CLI certificate, valid and not revoked",
            observed="; ".join(subjects),
            evidence=[_ev(s, "certificate accepted") for s in tls],
        )


# ---- MSS-16: no retry storm -----------------------------------------------------------------
@register("MSS-16")
class NoRetryStorm(StepCheck):
    def ready(self, obs: StepObservation) -> bool:
        return any(s.get("sasl_mechanism") for s in obs.sessions()) and obs.quiet()

    def judge(self, obs: StepObservation) -> Verdict:
        attempts: dict[str, list[float]] = {"smtp": [], "imap": []}
        evidence = []
        for s in obs.sessions():
            verbs = [
                ts
                for ts, verb in obs.client_commands(s)
                if verb in ("AUTH", "AUTHENTICATE", "LOGIN")
            ]
            if verbs:
                attempts[s.protocol].extend(verbs)
                evidence.append(_ev(s, f"{len(verbs)} authentication attempt(s)"))
        total = sum(len(v) for v in attempts.values())
        if total == 0:
            return Verdict.failed(
                "no authentication attempt was seen, so the reaction to a refused token is unknown",
                expected="an attempt refused by the simulator, then a stop or a back-off",
                observed="no AUTH/AUTHENTICATE in the step",
            )
        storms = {p: ts for p, ts in attempts.items() if len(ts) > MAX_AUTH_ATTEMPTS}
        shown = ", ".join(f"{p.upper()} {len(ts)}" for p, ts in attempts.items() if ts)
        if storms:
            proto, times = next(iter(storms.items()))
            times.sort()
            span = times[-1] - times[0]
            return Verdict.failed(
                f"retry storm: {len(times)} {proto.upper()} attempts in {span:.1f} s",
                expected=f"at most {MAX_AUTH_ATTEMPTS} attempts per protocol, then stop",
                observed=f"attempts: {shown}",
                evidence=evidence,
            )
        return Verdict.passed(
            f"the software stopped after {total} refused attempt(s)",
            expected=f"at most {MAX_AUTH_ATTEMPTS} attempts per protocol",
            observed=f"attempts: {shown}",
            evidence=evidence,
        )


# ---- MSS-17: reconnection after a server drop ---------------------------------------------
def _connected_and_settled(obs: StepObservation) -> bool:
    """An authenticated IMAP session is open and the software has opened no new mail
    session for ``settle`` seconds: it has set up every session it keeps (an SMTP
    session opened just after the IMAP one must not count as a reconnection)."""
    sessions = obs.sessions()
    imap_open = any(s.protocol == "imap" and s.ended_at is None for s in _authenticated(sessions))
    latest = max((s.started_at for s in sessions), default=obs.ctx.since)
    return imap_open and time.time() - latest >= obs.settle


@register("MSS-17")
class ReconnectAfterDrop(StepCheck):
    def trigger(self, obs: StepObservation) -> bool:
        return _connected_and_settled(obs)

    def ready(self, obs: StepObservation) -> bool:
        dropped_at = obs.marks.get("dropped_at")
        if dropped_at is None:
            return False
        return any(s.started_at > dropped_at for s in _authenticated(obs.sessions()))

    def judge(self, obs: StepObservation) -> Verdict:
        dropped_at = obs.marks.get("dropped_at")
        if dropped_at is None:
            return Verdict.failed(
                "no authenticated IMAP session was open, so the simulator had nothing to close",
                expected="an open, authenticated IMAP session",
                observed="; ".join(_describe(s) for s in obs.sessions()) or "no session",
            )
        dropped = [
            Evidence("session", sid, "closed by the simulator") for sid in obs.marks["dropped"]
        ]
        after = [s for s in _authenticated(obs.sessions()) if s.started_at > dropped_at]
        if not after:
            return Verdict.failed(
                "the software did not reconnect after the server closed its session",
                expected="a new authenticated session without human action",
                observed=f"nothing within {obs.ctx.until - dropped_at:.1f} s of the drop",
                evidence=dropped,
            )
        s = after[0]
        return Verdict.passed(
            f"reconnected {s.started_at - dropped_at:.1f} s after the drop, "
            f"with {s.get('sasl_mechanism')}",
            expected="a new authenticated session without human action",
            observed=_describe(s),
            evidence=[*dropped, _ev(s, "reconnection")],
        )


# ---- MSS-18: refresh token revoked ----------------------------------------------------------
@register("MSS-18")
class CloseOnRevocation(StepCheck):
    def trigger(self, obs: StepObservation) -> bool:
        return _connected_and_settled(obs)

    def ready(self, obs: StepObservation) -> bool:
        revoked_at = obs.marks.get("revoked_at")
        if revoked_at is None:
            return False
        open_ids = set(obs.marks["open_sessions"])
        still_open = [s for s in obs.sessions() if s.id in open_ids and s.ended_at is None]
        return not still_open and time.time() - revoked_at > obs.settle and obs.quiet()

    def judge(self, obs: StepObservation) -> Verdict:
        revoked_at = obs.marks.get("revoked_at")
        if revoked_at is None:
            return Verdict.failed(
                "no authenticated session was open, so there was nothing to close",
                expected="open, authenticated IMAP (and SMTP) sessions",
                observed="; ".join(_describe(s) for s in obs.sessions()) or "no session",
            )
        open_ids = set(obs.marks["open_sessions"])
        sessions = obs.sessions()
        watched = [s for s in sessions if s.id in open_ids]
        # Closing only because the runner stopped the client at the timeout does not count.
        stopped_at = obs.marks.get("clientStoppedAt", float("inf"))
        still_open = [s for s in watched if s.ended_at is None or s.ended_at >= stopped_at]
        by_server = [s for s in watched if str(s.get("close_reason", "")).startswith("server")]
        again = [s for s in sessions if s.started_at > revoked_at and s.get("sasl_mechanism")]
        findings = []
        if still_open:
            findings.append(
                Verdict.failed(
                    f"{len(still_open)} session(s) stayed open after the refresh token was revoked",
                    expected="every IMAP and SMTP session closed by the software",
                    observed="; ".join(_describe(s) for s in still_open),
                    evidence=[_ev(s, "still open") for s in still_open],
                )
            )
        if by_server:
            findings.append(
                Verdict.failed(
                    "sessions ended because the server closed them, not the software",
                    expected="the software closes its sessions",
                    observed=", ".join(f"{s.id}: {s.get('close_reason')}" for s in by_server),
                    evidence=[_ev(s, "closed by the server") for s in by_server],
                )
            )
        if again:
            findings.append(
                Verdict.failed(
                    "the software authenticated again after the refresh token was revoked",
                    expected="no new session until a person logs in again",
                    observed="; ".join(_describe(s) for s in again),
                    evidence=[_ev(s, "new authentication") for s in again],
                )
            )
        if findings:
            return combine(findings)
        closes = ", ".join(f"{s.protocol} {s.get('close_reason')}" for s in watched)
        return Verdict.passed(
            f"the software closed its {len(watched)} session(s) and did not reconnect",
            expected="sessions closed by the software after the revocation",
            observed=closes,
            evidence=[_ev(s, "closed by the client") for s in watched],
        )
