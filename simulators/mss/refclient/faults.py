"""The faulty variants of the reference client: one broken rule each.

Each fault names the unit test it must make fail. The client code asks
``faults.on("name")`` at the exact place where a well-behaved client does the right
thing, so reading the code around a fault name shows the rule it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    name: str
    test_id: str  # the unit test (docs/mss-requirements.md) this variant must fail
    description: str
    bal_types: tuple[str, ...] = ("PER", "ORG", "APP")  # mailbox types it applies to
    # Other tests of its suite the fault genuinely breaks too (a client that cannot log
    # in submits nothing), and why. Checked over the whole suite by
    # tests/mss/test_fault_matrix.py: any other failure is a check bug.
    also_fails: tuple[str, ...] = ()
    because: str = ""

    @property
    def suite(self) -> str:
        """The referencing case its test belongs to (per-org for the common faults)."""
        if self.test_id.startswith("MSS-X"):
            return "extra"
        return "per-org" if "PER" in self.bal_types else "app"


_PER_ORG = ("PER", "ORG")
# The tests a client fails when it never gets a mail out.
_NO_MAIL = ("MSS-08", "MSS-09", "MSS-10", "MSS-11", "MSS-12")
_APP = ("APP",)

_ALL = (
    # ---- transport: STARTTLS, versions, suites (MSS-01..04)
    Fault("smtp-implicit-tls-only", "MSS-01", "submits on the SMTPS port (implicit TLS), not 587"),
    Fault(
        "smtp-auth-before-starttls",
        "MSS-01",
        "sends AUTH in clear text before STARTTLS",
        also_fails=("MSS-03", "MSS-04", *_NO_MAIL, "MSS-13", "MSS-14", "MSS-17", "MSS-18"),
        because="the server refuses clear-text AUTH and the client gives up: no TLS session,"
        " no mail, no login",
    ),
    Fault(
        "imap-auth-before-starttls",
        "MSS-02",
        "sends AUTHENTICATE in clear before STARTTLS",
        also_fails=("MSS-15", "MSS-17", "MSS-18"),
        because="the server refuses clear-text AUTHENTICATE and the client gives up: no IMAP login",
    ),
    Fault(
        "tls-1.1-max",
        "MSS-03",
        "caps TLS at 1.1 (legacy suites, @SECLEVEL=0)",
        also_fails=(
            "MSS-01",
            "MSS-02",
            "MSS-04",
            *_NO_MAIL,
            "MSS-13",
            "MSS-14",
            "MSS-15",
            "MSS-16",
            "MSS-17",
            "MSS-18",
        ),
        because="it reaches no TLS 1.2+ endpoint: no session, no mail, no login",
    ),
    Fault(
        "accept-tls-1.0",
        "MSS-03",
        "falls back to TLS 1.0/1.1 when TLS 1.2+ fails",
        also_fails=("MSS-04",),
        because="its downgrade retry uses @SECLEVEL=0, which also accepts the 1024-bit DH group",
    ),
    Fault("offer-cbc-sha", "MSS-04", "also offers ECDHE-RSA-AES128-SHA and AES128-SHA"),
    Fault("accept-weak-dh", "MSS-04", "@SECLEVEL=0: accepts a 1024-bit DHE group"),
    # ---- server certificate (MSS-05..07)
    Fault("accept-expired-cert", "MSS-05", "ignores certificate dates (X509_V_FLAG_NO_CHECK_TIME)"),
    Fault("skip-crl-check", "MSS-06", "does not download nor check the CRL"),
    Fault("trust-foreign-ca", "MSS-07", "also trusts the system CAs and a non-IGC Santé root"),
    # ---- X-MSS headers and mail format (MSS-08..12)
    Fault("no-nil", "MSS-08", "omits X-MSS-NIL"),
    Fault("wrong-nil", "MSS-08", "sends an X-MSS-NIL other than the declared product reference"),
    Fault("no-codecda", "MSS-09", "omits X-MSS-CODECDA on a mail carrying a CDA"),
    Fault("codecda-on-plain-mail", "MSS-09", "adds X-MSS-CODECDA to a mail without CDA"),
    Fault("wrong-codecda", "MSS-09", "X-MSS-CODECDA differs from the CDA code"),
    Fault("wrong-ins", "MSS-10", "X-MSS-INS: N although the CDA carries a qualified INS"),
    Fault("ins-on-plain-mail", "MSS-10", "adds X-MSS-INS to a mail without CDA"),
    Fault("no-message-id", "MSS-11", "omits Message-ID"),
    Fault("latin1-body", "MSS-11", "body in ISO-8859-1 instead of UTF-8"),
    Fault("html-only", "MSS-11", "body is text/html only (no text/plain)"),
    Fault("broken-xdm", "MSS-12", "IHE_XDM.ZIP without IHE_XDM/SUBSET01/METADATA.XML"),
    Fault("no-pdf-twin", "MSS-12", "no PDF/A-1 copy of the CDA document"),
    Fault("bad-subject", "MSS-12", "subject without the XDM/1.0/DDM+ pattern"),
    Fault("patientid-mismatch", "MSS-12", "METADATA.XML patientId is not the CDA INS"),
    # ---- PER/ORG: autoconfig, XOAUTH2, errors, session life (MSS-13..18)
    Fault("skip-autoconfig", "MSS-13", "uses hard-coded parameters, no autoconfig", _PER_ORG),
    Fault(
        "smtp-auth-plain-token",
        "MSS-14",
        "SMTP AUTH PLAIN with the token as password",
        _PER_ORG,
        also_fails=("MSS-01", *_NO_MAIL, "MSS-13", "MSS-17", "MSS-18"),
        because="the server refuses PLAIN for a PER/ORG mailbox and the client gives up: no SMTP"
        " login, no mail",
    ),
    Fault(
        "imap-login-token",
        "MSS-15",
        "IMAP LOGIN with the token as password",
        _PER_ORG,
        also_fails=("MSS-02", "MSS-17", "MSS-18"),
        because="the server refuses LOGIN with a token and the client gives up: no IMAP login",
    ),
    Fault("retry-storm", "MSS-16", "retries a refused auth 20 times without delay", _PER_ORG),
    Fault("no-reconnect", "MSS-17", "gives up when the server closes a session", _PER_ORG),
    Fault(
        "ignore-revocation",
        "MSS-18",
        "refresh refused: keeps its sessions, logs in again, reconnects after drops",
        _PER_ORG,
    ),
    # ---- APP: mTLS + PLAIN, Reply-To and footer (MSS-A1..A4)
    Fault(
        "app-no-client-cert",
        "MSS-A1",
        "no client certificate in TLS",
        _APP,
        also_fails=("MSS-01", "MSS-02", *_NO_MAIL, "MSS-A2", "MSS-A3", "MSS-A4"),
        because="without a certificate every APP login is refused: no session, no mail",
    ),
    Fault(
        "imap-login-instead-of-plain", "MSS-A2", "IMAP LOGIN instead of AUTHENTICATE PLAIN", _APP
    ),
    Fault(
        "personal-cert",
        "MSS-A3",
        "presents a personal (AC PERSONNES) certificate",
        _APP,
        also_fails=("MSS-01", "MSS-02", *_NO_MAIL, "MSS-A1", "MSS-A2", "MSS-A4"),
        because="a personal certificate is refused at every APP login: no session, no mail",
    ),
    Fault(
        "expired-client-cert",
        "MSS-A3",
        "presents an expired ORG AUTH_CLI certificate",
        _APP,
        also_fails=("MSS-01", "MSS-02", *_NO_MAIL, "MSS-A1", "MSS-A2", "MSS-A4"),
        because="an expired certificate is refused at every APP login: no session, no mail",
    ),
    Fault("no-reply-to", "MSS-A4", "APP mail without Reply-To", _APP),
    Fault("no-footer", "MSS-A4", "APP mail without the automatic-mail footer", _APP),
    # ---- beyond MOTCO2 (MSS-X1..X4)
    Fault("no-return-receipt", "MSS-X1", "no Return-Receipt-To (delivery notice request)"),
    Fault("no-mdn", "MSS-X2", "reads a mail asking for a read notice and returns no MDN"),
    Fault("no-in-reply-to", "MSS-X3", "reply without In-Reply-To and References"),
    Fault("patient-no-mes", "MSS-X4", "patient mail without X-MSS-MES: FIN"),
)

FAULTS: dict[str, Fault] = {f.name: f for f in _ALL}


class UnknownFault(ValueError):
    pass


class FaultSwitch:
    """The active fault (at most one). ``on(name)`` refuses names not in the registry,
    so a typo in the client code fails loudly instead of never firing."""

    def __init__(self, active: str | None = None) -> None:
        if active and active not in FAULTS:
            raise UnknownFault(f"unknown fault {active!r} (see --list-faults)")
        self.active = active or None

    def on(self, name: str) -> bool:
        if name not in FAULTS:
            raise UnknownFault(f"the client asks for an unregistered fault {name!r}")
        return self.active == name

    def any(self, *names: str) -> bool:
        return any(self.on(n) for n in names)


def describe() -> str:
    """The ``--list-faults`` table."""
    width = max(len(n) for n in FAULTS)
    lines = [
        f"{f.name:<{width}}  {f.test_id:<7} {'/'.join(f.bal_types):<12} {f.description}"
        for f in _ALL
    ]
    return "\n".join(lines)
