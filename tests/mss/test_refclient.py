"""The reference client (python -m simulators.mss.refclient) against the real simulator.

Each test runs the client as a subprocess with the driver contract's environment and
judges from what the servers recorded and stored, as the conformance runner does.
Servers presenting bad certificates or weak TLS are extra listeners started beside
the normal ones.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import io
import itertools
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh
from refclient_env import (
    NIL,
    command,
    driver_env,
    run_refclient,
    sessions,
    start_refclient,
    wait_until,
)

from simulators.controller import SimulatorController
from simulators.core.store.mail import Mailbox, MailboxType
from simulators.interop.engine import validate_bytes
from simulators.mss.imap import ImapServer
from simulators.mss.refclient.faults import FAULTS
from simulators.mss.refclient.identity import MailboxInfo, sender_label
from simulators.mss.refclient.pdfa import build_pdfa
from simulators.mss.refclient.tls import ALLOWED_TLS12_SUITES
from simulators.mss.smtp import SmtpListener

DOMAIN = "mssante.localhost"
DR = f"dr.martin@{DOMAIN}"
CORRESPONDENT = f"secretariat@{DOMAIN}"
LABO = f"labo@{DOMAIN}"
TLS13_SUITES = {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"}
# RFC 2409 group 2: a 1024-bit MODP group, for the "weak DH" server
MODP_1024 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B2251"
    "4A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C"
    "42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFF"
    "FFFFFFFFFF",
    16,
)


# ---- fixtures and helpers -----------------------------------------------------------------
def _create_boxes(sim: SimulatorController) -> None:
    assert sim.services is not None
    store = sim.services.store
    store.create_mailbox(DR, MailboxType.PER, "Dr Jean MARTIN", "CABINET SIMU")
    store.create_mailbox(CORRESPONDENT, MailboxType.ORG, None, "CABINET SIMU")
    store.create_mailbox(LABO, MailboxType.APP, None, "LABO SIMU")


@dataclass
class Sim:
    """The shared simulator, and where this test's observations start."""

    controller: SimulatorController
    since: float  # wire sessions started from here on
    since_id: int  # submissions after this one

    def port(self, name: str) -> int:
        return self.controller.port(name)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    # One simulator for the module: starting one (PKI, servers) costs about 1.5 s.
    data = tmp_path_factory.mktemp("refclient") / "data"
    with SimulatorController(data, auth_failure_delay=0.05) as controller:
        _create_boxes(controller)
        yield controller


@pytest.fixture
def boxes(shared: SimulatorController) -> Sim:
    return Sim(shared, time.time(), last_submission_id(shared))


def env_for(sim: Sim, bal: str, action: str, **extra: str) -> dict[str, str]:
    return driver_env(sim.controller, bal, action, correspondent=CORRESPONDENT, **extra)


def submissions(sim: Sim, since_id: int | None = None) -> list[EmailMessage]:
    """Mails stored since the test started (or since ``since_id``)."""
    assert sim.controller.services is not None
    store = sim.controller.services.store
    out = []
    for sub in store.list_submissions(since_id=sim.since_id if since_id is None else since_id):
        parsed = email.message_from_bytes(store.blob(sub.blob_id), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        out.append(parsed)
    return out


def last_submission_id(sim: SimulatorController) -> int:
    assert sim.services is not None
    subs = sim.services.store.list_submissions()
    return subs[-1].id if subs else 0


def attachments(msg: EmailMessage) -> dict[str, bytes]:
    out = {}
    for part in msg.iter_attachments():
        assert isinstance(part, EmailMessage)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out[part.get_filename() or ""] = payload
    return out


def mail_sessions(sim: Sim, endpoint: str, since: float | None = None) -> list[Any]:
    return sessions(sim.controller, endpoint=endpoint, since=sim.since if since is None else since)


def mailbox(sim: Sim, address: str) -> Mailbox:
    assert sim.controller.services is not None
    box = sim.controller.services.store.get_mailbox(address)
    assert box is not None
    return box


def free_port() -> int:
    # bound then closed: nothing listens there (the "wrong port" of the autoconfig test)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def extra_smtp(sim: Sim, name: str, ctx: ssl.SSLContext) -> int:
    """Start one more STARTTLS submission listener presenting ``ctx``; its port."""
    controller = sim.controller
    assert controller.services is not None and controller.simulator is not None
    listener = SmtpListener(controller.services, endpoint=name, implicit_tls=False, ssl_context=ctx)
    port = controller.call(listener.start("127.0.0.1", 0))
    controller.simulator.smtp[name] = listener  # stopped with the others
    return port


def valid_server_creds(sim: Sim) -> tuple[Path, Path]:
    controller = sim.controller
    assert controller.services is not None
    creds = controller.services.pki.server_credentials("valid", controller.endpoints["crl_url"])
    return creds.chain_path, creds.key_path


def weak_dh_context(sim: Sim, tmp_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*valid_server_creds(sim))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=0")
    params = dh.DHParameterNumbers(MODP_1024, 2).parameters()
    path = tmp_path / "dh1024.pem"
    path.write_bytes(
        params.parameter_bytes(serialization.Encoding.PEM, serialization.ParameterFormat.PKCS3)
    )
    ctx.load_dh_params(str(path))
    return ctx


def legacy_context(sim: Sim, _tmp_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*valid_server_creds(sim))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def cert_context(kind: str) -> Callable[[Sim, Path], ssl.SSLContext]:
    def make(sim: Sim, _tmp_path: Path) -> ssl.SSLContext:
        controller = sim.controller
        assert controller.services is not None
        crl_url = controller.endpoints["crl_url"]
        return controller.services.pki.server_ssl_context(kind, crl_url=crl_url)

    return make


# ---- the catalogue of variants ----------------------------------------------------------
def test_list_faults_names_each_variant_and_the_test_it_must_fail() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "simulators.mss.refclient", "--list-faults"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    required = {
        "smtp-implicit-tls-only": "MSS-01",
        "imap-auth-before-starttls": "MSS-02",
        "accept-tls-1.0": "MSS-03",
        "accept-weak-dh": "MSS-04",
        "accept-expired-cert": "MSS-05",
        "skip-crl-check": "MSS-06",
        "trust-foreign-ca": "MSS-07",
        "wrong-nil": "MSS-08",
        "no-codecda": "MSS-09",
        "wrong-ins": "MSS-10",
        "html-only": "MSS-11",
        "broken-xdm": "MSS-12",
        "skip-autoconfig": "MSS-13",
        "smtp-auth-plain-token": "MSS-14",
        "imap-login-token": "MSS-15",
        "retry-storm": "MSS-16",
        "no-reconnect": "MSS-17",
        "ignore-revocation": "MSS-18",
        "app-no-client-cert": "MSS-A1",
        "imap-login-instead-of-plain": "MSS-A2",
        "personal-cert": "MSS-A3",
        "no-footer": "MSS-A4",
        "no-mdn": "MSS-X2",
    }
    for name, test_id in required.items():
        assert re.search(rf"^{re.escape(name)}\s+{test_id}\s", out, re.M), name
    assert len(out.strip().splitlines()) == len(FAULTS)


def test_every_fault_is_consulted_by_the_client_code() -> None:
    # A registered fault that no code path asks for would "pass" every test silently.
    package = Path(__file__).resolve().parents[2] / "simulators" / "mss" / "refclient"
    code = "\n".join(
        p.read_text() for p in package.glob("*.py") if p.name not in ("faults.py", "__init__.py")
    )
    unused = [name for name in FAULTS if f'"{name}"' not in code]
    assert unused == []


def test_unknown_fault_is_a_configuration_error(boxes: Sim) -> None:
    result = run_refclient(env_for(boxes, DR, "send-mail"), "no-such-fault")
    assert result.returncode == 4
    assert "unknown fault" in result.stderr


@pytest.mark.parametrize(
    ("display_name", "kind", "label"),
    [
        ("Dr Jean MARTIN", "PER", "Dr_Jean_MARTIN_CABINET SIMU"),
        ("dr.martin", "PER", "Dr__MARTIN_CABINET SIMU"),  # no first name given: left empty
        ("Pr jean-pierre de la tour", "PER", "Pr_Jean-Pierre_DE LA TOUR_CABINET SIMU"),
        ("Accueil", "ORG", "CABINET SIMU"),
        ("Automate", "APP", "CABINET SIMU"),
    ],
)
def test_sender_label(display_name: str, kind: str, label: str) -> None:
    info = MailboxInfo(DR, kind, display_name, "CABINET SIMU")
    assert sender_label(info, kind) == label


def test_pdf_twin_is_well_formed_and_declares_pdfa_1b() -> None:
    pdf = build_pdfa("Compte rendu (été)", ["Ligne (1) \\ é", "x" * 300])
    assert pdf.startswith(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    startxref = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n", 1)[0])
    assert pdf[startxref:].startswith(b"xref\n0 8\n")
    entries = pdf[startxref:].split(b"\n")[3:10]
    for number, entry in enumerate(entries, start=1):
        offset = int(entry[:10])
        assert pdf[offset:].startswith(b"%d 0 obj" % number)
    assert b"/Metadata 5 0 R" in pdf and b"<pdfaid:part>1</pdfaid:part>" in pdf
    assert b"<pdfaid:conformance>B</pdfaid:conformance>" in pdf
    assert b"(Ligne \\(1\\) \\\\ \xe9) Tj" in pdf  # escaped, WinAnsi-encoded text


# ---- the well-behaved client ------------------------------------------------------------
def test_send_mail_with_cda_submits_a_conformant_xdm_mail(boxes: Sim) -> None:
    result = run_refclient(env_for(boxes, DR, "send-mail-with-cda"))
    assert result.returncode == 0, result.stderr
    [msg] = submissions(boxes)
    assert msg["X-MSS-NIL"] == NIL
    assert msg["X-MSS-CODECDA"] == "11502-2"
    assert msg["X-MSS-INS"] == "O"
    assert msg["Subject"] == "XDM/1.0/DDM+Compte rendu de biologie SIMULO CAMILLE 12/05/1985"
    assert msg["From"].addresses[0].display_name == "Dr_Jean_MARTIN_CABINET SIMU"
    assert msg["Message-ID"] and msg["Date"]
    assert msg["Return-Receipt-To"] == DR and msg["Disposition-Notification-To"] == DR
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content_charset() == "utf-8"
    files = attachments(msg)
    assert set(files) == {"IHE_XDM.ZIP", "Compte_rendu_de_biologie.pdf"}
    report = validate_bytes(files["IHE_XDM.ZIP"], name="IHE_XDM.ZIP")
    assert report.passed, report.to_text()
    with zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"])) as archive:
        metadata = archive.read("IHE_XDM/SUBSET01/METADATA.XML")
        assert {"INDEX.HTM", "README.TXT"} <= set(archive.namelist())
    assert b"285057505612338^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH" in metadata
    pdf = files["Compte_rendu_de_biologie.pdf"]
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert b"<pdfaid:part>1</pdfaid:part>" in pdf and b"<pdfaid:conformance>B<" in pdf
    # on the wire: 587 + STARTTLS, then XOAUTH2 with SASL-IR, only allowed suites
    [smtp] = mail_sessions(boxes, "smtp_starttls")
    fields = smtp.fields
    assert fields["starttls"] is True and fields["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert (fields["sasl_mechanism"], fields["sasl_ir"], fields["auth_ok"]) == (
        "XOAUTH2",
        True,
        True,
    )
    assert not fields.get("auth_before_tls")
    assert set(fields["tls_offered"]) - TLS13_SUITES <= set(ALLOWED_TLS12_SUITES)
    assert fields["close_reason"] == "client-quit"


def test_send_and_read_plain_mail_and_keeps_no_token_on_disk(boxes: Sim, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_refclient(env_for(boxes, DR, "send-and-read", REFCLIENT_CACHE_DIR=str(cache)))
    assert result.returncode == 0, result.stderr
    [msg] = submissions(boxes)
    assert "X-MSS-CODECDA" not in msg and "X-MSS-INS" not in msg
    assert msg["X-MSS-NIL"] == NIL and msg["Message-ID"]
    assert msg.get_content_type() == "text/plain"
    assert "référence" in msg.get_content()
    [imap] = mail_sessions(boxes, "imap_starttls")
    assert imap.fields["starttls"] is True
    assert (imap.fields["sasl_mechanism"], imap.fields["sasl_ir"]) == ("XOAUTH2", True)
    assert imap.fields["auth_ok"] is True and imap.fields["close_reason"] == "client-logout"
    # CONF.22 / CONF.28: the cache holds the last CRL, never a token
    assert [p.name for p in cache.iterdir()] == [next(cache.glob("crl-*.pem")).name]
    assert b"BEGIN X509 CRL" in next(cache.glob("crl-*.pem")).read_bytes()


class _CrlServer:
    """A CRL distribution point we can switch off (the simulator's stays up)."""

    def __init__(self, crl: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(crl)))
                self.end_headers()
                self.wfile.write(crl)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/crl/org.crl"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_last_valid_crl_is_kept_for_when_the_crl_url_is_down(boxes: Sim, tmp_path: Path) -> None:
    assert boxes.controller.services is not None
    crl_point = _CrlServer(boxes.controller.services.pki.crl_der())
    cache = str(tmp_path / "crl-cache")
    env = env_for(boxes, DR, "send-mail", REFCLIENT_CACHE_DIR=cache, CRL_URL=crl_point.url)
    try:
        first = run_refclient(env)
        assert first.returncode == 0, first.stderr
    finally:
        crl_point.stop()
    # the distribution point is down: the last valid CRL, from the cache, still serves
    cached = run_refclient(env)
    assert cached.returncode == 0, cached.stderr
    assert "using the cached CRL" in cached.stderr
    # no CRL at all: revocation cannot be checked, so no connection (fail closed)
    env["SEGUR_SIM_REFCLIENT_CACHE_DIR"] = str(tmp_path / "empty-cache")
    blind = run_refclient(env)
    assert blind.returncode == 2 and "no valid CRL" in blind.stderr
    assert len(submissions(boxes)) == 2


def test_app_client_uses_its_certificate_and_plain(boxes: Sim) -> None:
    env = env_for(boxes, LABO, "send-and-read")
    del env["SEGUR_SIM_CLIENT_CERT"], env["SEGUR_SIM_CLIENT_KEY"]  # the P12 alone is enough
    result = run_refclient(env)
    assert result.returncode == 0, result.stderr
    [msg] = submissions(boxes)
    assert msg["Reply-To"] == CORRESPONDENT
    assert msg["From"].addresses[0].display_name == "LABO SIMU"
    assert "généré automatiquement par un logiciel" in msg.get_content()
    for endpoint in ("smtp_starttls", "imap_starttls"):
        [rec] = mail_sessions(boxes, endpoint)
        assert rec.fields["sasl_mechanism"] == "PLAIN" and rec.fields["sasl_ir"] is True
        assert rec.fields["auth_ok"] is True and rec.fields["auth_user"] == LABO
        assert "OU=ORG AUTH_CLI" in rec.fields["client_cert_subject"]


def autoconfig_requests(sim: Sim) -> list[Any]:
    return [
        s
        for s in sessions(sim.controller, protocol="http", since=sim.since)
        if s.fields.get("path", "").endswith("/mail/config-v1.1.xml")
    ]


def test_autoconfig_then_connect_uses_the_published_parameters(
    boxes: Sim,
) -> None:
    # The driver's SMTP/IMAP ports point nowhere: only the autoconfig XML can lead the
    # client to the servers.
    dead = str(free_port())
    env = env_for(boxes, DR, "autoconfig-then-connect", SMTP_PORT=dead, IMAP_PORT=dead)
    result = run_refclient(env)
    assert result.returncode == 0, result.stderr
    [http] = autoconfig_requests(boxes)
    assert http.fields["host"] == f"autoconfig.{DOMAIN}:{boxes.port('https')}"
    assert http.fields["emailaddress"] == DR
    for endpoint in ("smtp_starttls", "imap_starttls"):
        [rec] = mail_sessions(boxes, endpoint)
        assert rec.fields["starttls"] is True and rec.fields["auth_ok"] is True
        assert rec.started_at > http.started_at

    skipped = run_refclient(env, "skip-autoconfig")
    assert skipped.returncode != 0  # the hard-coded ports lead nowhere
    assert len(autoconfig_requests(boxes)) == 1


# ---- server certificates and TLS parameters (MSS-03..07) --------------------------------
@pytest.mark.parametrize(
    ("server", "fault", "refusal"),
    [
        (cert_context("expired"), "accept-expired-cert", "certificate has expired"),
        (cert_context("revoked"), "skip-crl-check", "certificate revoked"),
        (cert_context("foreign"), "trust-foreign-ca", "self-signed certificate in certificate"),
        (weak_dh_context, "accept-weak-dh", "DH_KEY_TOO_SMALL"),
        (legacy_context, "accept-tls-1.0", "TLS handshake refused"),
    ],
    ids=["expired", "revoked", "foreign", "weak-dh", "tls-legacy"],
)
def test_bad_server_aborts_before_auth_unless_faulty(
    boxes: Sim,
    tmp_path: Path,
    server: Callable[[Sim, Path], ssl.SSLContext],
    fault: str,
    refusal: str,
) -> None:
    name = f"bad-{fault}"
    port = extra_smtp(boxes, name, server(boxes, tmp_path))
    env = env_for(boxes, DR, "send-mail", SMTP_PORT=str(port))
    good = run_refclient(env)
    assert good.returncode == 2, good.stderr
    assert "aborted before any authentication" in good.stderr and refusal in good.stderr
    refused = mail_sessions(boxes, name)
    assert refused and all("sasl_mechanism" not in s.fields for s in refused)
    assert refused[-1].fields.get("tls_error")
    assert submissions(boxes) == []

    faulty = run_refclient(env, fault)
    assert faulty.returncode == 0, faulty.stderr
    accepted = mail_sessions(boxes, name)[-1]
    assert accepted.fields["auth_ok"] is True
    assert len(submissions(boxes)) == 1


def test_trust_foreign_ca_variant_still_refuses_a_revoked_certificate(
    boxes: Sim, tmp_path: Path
) -> None:
    port = extra_smtp(boxes, "revoked", cert_context("revoked")(boxes, tmp_path))
    result = run_refclient(env_for(boxes, DR, "send-mail", SMTP_PORT=str(port)), "trust-foreign-ca")
    assert result.returncode == 2 and "certificate revoked" in result.stderr
    assert all("sasl_mechanism" not in s.fields for s in mail_sessions(boxes, "revoked"))


def test_tls_11_max_variant_cannot_reach_a_modern_server(boxes: Sim) -> None:
    result = run_refclient(env_for(boxes, DR, "send-mail"), "tls-1.1-max")
    assert result.returncode == 2
    [rec] = mail_sessions(boxes, "smtp_starttls")
    assert rec.fields["tls_error"] and "sasl_mechanism" not in rec.fields


def test_offer_cbc_sha_variant_offers_more_than_the_six_suites(
    boxes: Sim,
) -> None:
    # TLS 1.3 hides the TLS 1.2 list in the negotiated suite, not in what is shared:
    # the server's record of offered suites shows the CBC ones.
    assert run_refclient(env_for(boxes, DR, "send-mail"), "offer-cbc-sha").returncode == 0
    [rec] = mail_sessions(boxes, "smtp_starttls")
    extra = set(rec.fields["tls_offered"]) - TLS13_SUITES - set(ALLOWED_TLS12_SUITES)
    assert extra & {"ECDHE-RSA-AES128-SHA", "AES128-SHA"}


# ---- mail content variants (MSS-08..12, A4) ---------------------------------------------
def _no_nil(msg: EmailMessage) -> bool:
    return "X-MSS-NIL" not in msg


def _html_only(msg: EmailMessage) -> bool:
    return msg.get_content_type() == "text/html"


def _broken_xdm(msg: EmailMessage) -> bool:
    xdm = attachments(msg)["IHE_XDM.ZIP"]
    return not validate_bytes(xdm, name="IHE_XDM.ZIP").passed


def _bad_subject(msg: EmailMessage) -> bool:
    return not str(msg["Subject"]).startswith("XDM/1.0/DDM+")


def _codecda_on_plain(msg: EmailMessage) -> bool:
    return msg["X-MSS-CODECDA"] is not None and not attachments(msg)


def _no_footer(msg: EmailMessage) -> bool:
    return "généré automatiquement" not in msg.get_content()


@pytest.mark.parametrize(
    ("bal", "action", "fault", "broken"),
    [
        (DR, "send-mail", "no-nil", _no_nil),
        (DR, "send-mail", "html-only", _html_only),
        (DR, "send-mail", "codecda-on-plain-mail", _codecda_on_plain),
        (DR, "send-mail-with-cda", "broken-xdm", _broken_xdm),
        (DR, "send-mail-with-cda", "bad-subject", _bad_subject),
        (LABO, "send-mail", "no-footer", _no_footer),
    ],
    ids=["no-nil", "html-only", "codecda-on-plain-mail", "broken-xdm", "bad-subject", "no-footer"],
)
def test_content_variants_break_their_rule(
    boxes: Sim,
    bal: str,
    action: str,
    fault: str,
    broken: Callable[[EmailMessage], bool],
) -> None:
    result = run_refclient(env_for(boxes, bal, action), fault)
    assert result.returncode == 0, result.stderr
    [msg] = submissions(boxes)
    assert broken(msg), fault


# ---- authentication variants (MSS-01, A1, A3) -------------------------------------------
def test_implicit_tls_variant_submits_on_smtps(boxes: Sim) -> None:
    assert run_refclient(env_for(boxes, DR, "send-mail"), "smtp-implicit-tls-only").returncode == 0
    assert mail_sessions(boxes, "smtp_starttls") == []
    [rec] = mail_sessions(boxes, "smtps")
    assert rec.fields["auth_ok"] is True


def test_auth_before_starttls_variant_is_refused_and_gives_up(boxes: Sim) -> None:
    result = run_refclient(env_for(boxes, DR, "send-mail"), "smtp-auth-before-starttls")
    assert result.returncode == 3
    [rec] = mail_sessions(boxes, "smtp_starttls")
    assert rec.fields["auth_before_tls"] is True and not rec.fields.get("starttls")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("app-no-client-cert", "no client certificate"),
        ("personal-cert", "personal certificate"),
        ("expired-client-cert", "expired on"),
    ],
)
def test_app_certificate_variants_are_refused(boxes: Sim, fault: str, reason: str) -> None:
    result = run_refclient(env_for(boxes, LABO, "send-mail", REFCLIENT_BACKOFF="0.05"), fault)
    assert result.returncode == 3
    recs = mail_sessions(boxes, "smtp_starttls")
    assert len(recs) == 3  # the bounded back-off: three attempts, then stop
    assert all(reason in r.fields["auth_error"] for r in recs)
    assert submissions(boxes) == []


# ---- threads, read notices, patients (MSS-X1..X4) ---------------------------------------
ORIGINAL = (
    f"From: Secretariat <{CORRESPONDENT}>\r\nTo: {DR}\r\nSubject: Demande d'avis\r\n"
    f"Message-ID: <orig-1@{DOMAIN}>\r\nReferences: <earlier@{DOMAIN}>\r\n"
    f"Disposition-Notification-To: {CORRESPONDENT}\r\n"
    "Date: Mon, 05 Jan 2026 10:00:00 +0100\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, votre avis ?\r\n"
)


def _deliver(sim: Sim, address: str, raw: bytes) -> None:
    assert sim.controller.services is not None
    store = sim.controller.services.store
    folder = store.get_folder(mailbox(sim, address).id, "INBOX")
    assert folder is not None
    sim.controller.call(store.append(folder.id, raw))


def test_reply_and_read_notice(boxes: Sim) -> None:
    _deliver(boxes, DR, ORIGINAL.encode())
    assert run_refclient(env_for(boxes, DR, "reply-to-mail")).returncode == 0
    [reply] = submissions(boxes)
    assert reply["In-Reply-To"] == f"<orig-1@{DOMAIN}>"
    assert reply["References"] == f"<earlier@{DOMAIN}> <orig-1@{DOMAIN}>"
    assert reply["To"] == CORRESPONDENT and reply["Subject"].startswith("RE: ")

    mark = last_submission_id(boxes.controller)
    assert run_refclient(env_for(boxes, DR, "return-mdn")).returncode == 0
    [notice] = submissions(boxes, mark)
    assert notice.get_content_type() == "multipart/report"
    assert notice.get_param("report-type") == "disposition-notification"
    assert "Disposition-Notification-To" not in notice  # no read notice for a read notice
    parts = list(notice.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/disposition-notification",
    ]
    fields = parts[1].as_string()
    assert f"Original-Message-ID: <orig-1@{DOMAIN}>" in fields
    assert "Disposition: manual-action/MDN-sent-manually; displayed" in fields

    mark = last_submission_id(boxes.controller)
    assert run_refclient(env_for(boxes, DR, "return-mdn"), "no-mdn").returncode == 0
    assert submissions(boxes, mark) == []


def test_send_to_patient_uses_the_ins_address(boxes: Sim) -> None:
    assert run_refclient(env_for(boxes, DR, "send-to-patient")).returncode == 0
    assert run_refclient(env_for(boxes, DR, "send-to-patient"), "patient-no-mes").returncode == 0
    good, faulty = submissions(boxes)
    assert good["To"] == "285057505612338@patient.mssante.fr"
    assert good["X-MSS-MES"] == "FIN" and good["X-MSS-INS"] == "O"
    assert "X-MSS-MES" not in faulty


# ---- sessions over time (MSS-16..18) ----------------------------------------------------
@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    """Access tokens of 2 s: the client refreshes them every second."""
    data = tmp_path_factory.mktemp("short") / "data"
    with SimulatorController(data, auth_failure_delay=0.05, access_token_lifetime=2) as controller:
        _create_boxes(controller)
        yield controller


@pytest.fixture
def short_tokens(short_lived: SimulatorController) -> Sim:
    return Sim(short_lived, time.time(), last_submission_id(short_lived))


def _authenticated(sim: Sim, since: float | None = None) -> list[Any]:
    return [
        s
        for s in sessions(sim.controller, since=sim.since if since is None else since)
        if s.protocol in ("smtp", "imap") and s.fields.get("auth_ok")
    ]


def _drop(sim: Sim, address: str) -> None:
    controller = sim.controller
    assert controller.simulator is not None
    smtp = controller.simulator.smtp["smtp_starttls"]
    imap: ImapServer = controller.simulator.imap["imap_starttls"]

    async def both() -> None:
        smtp.drop_sessions(address)
        await imap.drop_sessions(address)

    controller.call(both())


def _stop(client: subprocess.Popen[str]) -> str:
    if client.poll() is None:
        client.kill()
    return client.communicate()[1]


def test_keep_session_open_reconnects_then_closes_on_revocation(short_tokens: Sim) -> None:
    sim = short_tokens
    client = start_refclient(env_for(sim, DR, "keep-session-open"))
    try:
        wait_until(lambda: len(_authenticated(sim)) >= 2, 15, "IMAP and SMTP sessions")
        dropped_at = time.time()
        _drop(sim, DR)
        reopened = wait_until(
            lambda: {s.protocol for s in _authenticated(sim, dropped_at)} == {"imap", "smtp"},
            15,
            "the client to reconnect both sessions",
        )
        assert reopened
        time.sleep(1.5)  # the token ages and is refreshed; the sessions stay open
        assert sim.controller.services is not None
        assert sim.controller.services.psc.revoke_mailbox_sessions(mailbox(sim, DR)) >= 1
        revoked_at = time.time()
        assert client.wait(10) == 0
    finally:
        err = _stop(client)
    recs = [s for s in sessions(sim.controller, since=sim.since) if s.protocol in ("smtp", "imap")]
    assert [s.fields["close_reason"] for s in recs[:2]] == ["server-drop", "server-drop"], err
    last = {s.protocol: s.fields["close_reason"] for s in recs[2:]}
    assert last == {"imap": "client-logout", "smtp": "client-quit"}, err
    assert all(s.fields["auth_ok"] for s in recs)
    assert not [s for s in recs if s.started_at > revoked_at]  # no reconnection


def test_no_reconnect_variant_stays_down_after_a_drop(short_tokens: Sim) -> None:
    sim = short_tokens
    client = start_refclient(env_for(sim, DR, "keep-session-open"), "no-reconnect")
    try:
        wait_until(lambda: len(_authenticated(sim)) >= 2, 15, "sessions")
        _drop(sim, DR)
        assert client.wait(10) != 0
    finally:
        _stop(client)
    assert len(_authenticated(sim)) == 2


def test_keep_session_open_exits_cleanly_on_sigterm(boxes: Sim) -> None:
    client = start_refclient(env_for(boxes, LABO, "keep-session-open"))
    try:
        wait_until(lambda: len(_authenticated(boxes)) >= 2, 15, "sessions")
        client.send_signal(signal.SIGTERM)
        assert client.wait(10) == 0
    finally:
        _stop(client)
    reasons = {s.protocol: s.fields["close_reason"] for s in _authenticated(boxes)}
    assert reasons == {"imap": "client-logout", "smtp": "client-quit"}


def test_refused_tokens_back_off_then_stop_but_the_storm_variant_does_not(
    tmp_path: Path,
) -> None:
    # Tokens issued already expired: the server refuses every XOAUTH2 attempt, as in
    # the reject-tokens stage.
    with SimulatorController(
        tmp_path / "expired", auth_failure_delay=0.05, access_token_lifetime=-60
    ) as controller:
        _create_boxes(controller)
        sim = Sim(controller, time.time(), 0)
        env = env_for(sim, DR, "send-mail", REFCLIENT_BACKOFF="0.5")
        result = run_refclient(env)
        assert result.returncode == 3, result.stderr
        assert "retry in 0.5s" in result.stderr and "retry in 1.0s" in result.stderr
        recs = mail_sessions(sim, "smtp_starttls")
        assert len(recs) == 3 and all(r.fields["auth_ok"] is False for r in recs)
        gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(recs)]
        assert gaps[0] >= 0.5 and gaps[1] >= 1.0  # growing delays between attempts

        start = time.time()
        storm = start_refclient(env, "retry-storm")
        try:
            # the good client stopped at 3; the storm goes on without waiting
            wait_until(
                lambda: len(mail_sessions(sim, "smtp_starttls", since=start)) > 4,
                20,
                "more than 4 attempts",
            )
        finally:
            storm.send_signal(signal.SIGTERM)
            storm.wait(10)
            storm.communicate()


# ---- --serve: the persistent driver mode ------------------------------------------------------
STEP_DONE = "@@SEGUR-SIM-STEP-DONE@@"


def _step_line(env: dict[str, str]) -> str:
    step = {k: v for k, v in env.items() if k.startswith("SEGUR_SIM_")}
    return json.dumps({"type": "step", "env": step}) + "\n"


def _until_done(client: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """Read the client's output up to its next done line: (exit code, the lines before)."""
    assert client.stdout is not None
    lines = []
    for line in client.stdout:
        if line.startswith(STEP_DONE):
            return int(line.split()[1]), lines
        lines.append(line)
    raise AssertionError("the client ended without a done line: " + "".join(lines))


def test_serve_mode_performs_each_step_and_stops_on_request(boxes: Sim) -> None:
    # The process gets only the run's environment; each step brings its own variables.
    base = {k: v for k, v in env_for(boxes, DR, "send-mail").items() if k != "SEGUR_SIM_ACTION"}
    client = subprocess.Popen(
        [*command(), "--serve"],
        env=base,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert client.stdin is not None
    try:
        client.stdin.write(_step_line(env_for(boxes, DR, "send-mail")))
        client.stdin.flush()
        code, lines = _until_done(client)
        assert code == 0, lines
        assert any("send-mail for" in line for line in lines)
        assert len(submissions(boxes)) == 1

        # A second step in the same process: a bad configuration gives its exit code.
        client.stdin.write(_step_line(env_for(boxes, DR, "send-mail", BAL="nobody")))
        client.stdin.flush()
        code, lines = _until_done(client)
        assert code == 4 and any("SEGUR_SIM_BAL must be" in line for line in lines)

        # keep-session-open runs until the stop message, then closes its sessions.
        since = time.time()
        client.stdin.write(_step_line(env_for(boxes, LABO, "keep-session-open")))
        client.stdin.flush()
        wait_until(lambda: len(_authenticated(boxes, since)) >= 2, 15, "sessions")
        client.stdin.write(json.dumps({"type": "stop"}) + "\n")
        client.stdin.flush()
        code, lines = _until_done(client)
        assert code == 0, lines

        client.stdin.close()  # end of the run
        assert client.wait(10) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    reasons = {s.protocol: s.fields["close_reason"] for s in _authenticated(boxes, since)}
    assert reasons == {"imap": "client-logout", "smtp": "client-quit"}


def test_crl_reader_agrees_with_cryptography(tmp_path: Path) -> None:
    # The client reads CRL dates with its own DER walker; check it against cryptography
    # on UTCTime and GeneralizedTime dates, with and without entries.
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from simulators.mss.refclient.tls import crl_info, crl_pem

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "CRL TEST")])
    cases = (
        (0, dt.datetime(2020, 1, 1), dt.datetime(2020, 2, 1)),  # out of date
        (3, dt.datetime(2049, 12, 31, 23, 59, 59), dt.datetime(2051, 5, 6, 7, 8, 9)),
        (0, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), dt.datetime(2100, 1, 1)),
    )
    for entries, last, nxt in cases:
        builder = x509.CertificateRevocationListBuilder().issuer_name(name)
        builder = builder.last_update(last).next_update(nxt)
        for serial in range(1, entries + 1):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(dt.datetime(2020, 1, 1))
                .build()
            )
        crl = builder.sign(key, hashes.SHA256())
        der = crl.public_bytes(serialization.Encoding.DER)
        info = crl_info(der)
        assert (info.this_update, info.next_update) == (crl.last_update_utc, crl.next_update_utc)
        assert info.revoked == entries
        assert crl_pem(der) == crl.public_bytes(serialization.Encoding.PEM)
    assert [crl_info(_signed(c, key, name)).current() for c in cases] == [False, False, True]
    with pytest.raises(ValueError):
        crl_info(b"\x30\x82\x01")


def _signed(case: tuple[int, Any, Any], key: Any, name: Any) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    _entries, last, nxt = case
    builder = x509.CertificateRevocationListBuilder().issuer_name(name)
    crl = builder.last_update(last).next_update(nxt).sign(key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)
