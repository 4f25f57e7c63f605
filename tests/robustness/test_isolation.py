"""Isolation and authentication against the real ``segur-sim serve`` process.

tests/mss already checks, in-process: XOAUTH2/LOGIN refused before STARTTLS, a PSC
token of mailbox A refused for mailbox B, expired/revoked/foreign/personal client
certificates on the implicit-TLS ports, back-off within one session, and a drop in
the middle of DATA or of a literal into an empty mailbox. This module adds what is
not covered:

- the STARTTLS command-injection attack on SMTP; PLAIN (APP) before STARTTLS, and
  no ``334``/``+`` credentials prompt in clear text, on both protocols;
- a certificate of one organisation cannot open another organisation's APP
  mailbox; an authenticated IMAP session cannot reach another mailbox's folders by
  name tricks;
- expired and revoked certificates on the STARTTLS ports, and a certificate revoked
  *while the server runs* refused at the next login, on all four mail endpoints;
- brute force across new connections and across SMTP and IMAP, and in parallel:
  the delay grows step by step up to its cap, and a success resets it;
- a client that vanishes mid-command (mid DATA, at each byte of the end marker, mid
  literal, after the literal but before its CRLF, mid AUTH) loses none of the
  messages already acknowledged in the same session and leaves no partial one.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from simulators.core.pki import TestPKI

from .support import (
    DOMAIN,
    AppCredentials,
    ImapWire,
    LiveServer,
    PerCredentials,
    SmtpWire,
    live_server,
    message_ids_in_inbox,
)

STEP, CAP = 0.1, 0.6  # the back-off of this module's server: +0.1 s per failure, 0.6 s max
CAP_STEPS = round(CAP / STEP)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("isolation")
    with live_server(root, auth_failure_delay=STEP, auth_failure_delay_max=CAP) as live:
        yield live
        assert live.server.alive()
        assert not live.tracebacks(), live.tracebacks()[0]


_names = iter(range(1, 10_000))


def fresh_per(server: LiveServer) -> PerCredentials:
    return server.per(f"dr.iso{next(_names)}")


def reset_backoff(server: LiveServer, per: PerCredentials) -> None:
    """A successful login resets the per-address back-off (earlier tests failed some)."""
    wire = server.smtp("smtps")
    wire.auth(per)
    wire.close()


def message(mid: str, size: int = 200) -> bytes:
    return (f"Message-ID: <{mid}>\r\nSubject: {mid}\r\n\r\n" + "z" * size + "\r\n").encode()


# ---- no authentication in clear text -------------------------------------------------------
def test_smtp_starttls_command_injection_is_discarded(server: LiveServer) -> None:
    per = fresh_per(server)
    wire = SmtpWire.connect(server.port("smtp_starttls"), None)
    wire.ehlo()
    # Pipelined in clear text right behind STARTTLS: must not run once TLS is up.
    wire.send(b"STARTTLS\r\nAUTH XOAUTH2 " + per.xoauth2().encode() + b"\r\nMAIL FROM:<>\r\n")
    assert wire.reply()[0] == 220
    wire.file.close()
    wire.sock = server.context().wrap_socket(wire.sock, server_hostname="127.0.0.1")
    wire.file = wire.sock.makefile("rb")
    code, text = wire.cmd("NOOP")  # the first answer after the handshake is NOOP's
    assert code == 250, text
    wire.ehlo()
    code, text = wire.cmd(f"MAIL FROM:<{per.address}>")
    assert code == 530, text  # not authenticated: the injected AUTH never ran
    wire.close()


def test_no_credentials_are_asked_or_accepted_before_starttls(server: LiveServer) -> None:
    app = server.app("labo.clear")
    plain = base64.b64encode(f"\0{app.address}\0x".encode()).decode()
    smtp = SmtpWire.connect(server.port("smtp_starttls"), None)
    features = smtp.ehlo()
    assert b"STARTTLS" in features and b"AUTH" not in features
    for line in (f"AUTH PLAIN {plain}", "AUTH PLAIN", "AUTH LOGIN", "AUTH XOAUTH2"):
        code, text = smtp.cmd(line)
        assert code == 530 and b"STARTTLS" in text, (line, text)  # never a 334 prompt
    smtp.close()
    imap = ImapWire(server.port("imap_starttls"), None)
    assert b"LOGINDISABLED" in imap.greeting and b"AUTH=" not in imap.greeting
    for command in (f"AUTHENTICATE PLAIN {plain}", "AUTHENTICATE PLAIN", "AUTHENTICATE XOAUTH2"):
        lines = imap.command(command)
        assert len(lines) == 1 and b"NO [PRIVACYREQUIRED]" in lines[0], lines  # no "+" prompt
    imap.close()


# ---- one mailbox cannot reach another ------------------------------------------------------
def _app_login_answer(
    server: LiveServer, endpoint: str, creds: AppCredentials, login: str
) -> bytes:
    if endpoint.startswith("smtp"):
        wire = server.smtp(endpoint, app=creds)
        plain = base64.b64encode(f"\0{login}\0x".encode()).decode()
        code, text = wire.cmd(f"AUTH PLAIN {plain}")
        wire.close()
        return b"%d " % code + text
    imap = server.imap(endpoint, app=creds)
    answer = imap.command(f'LOGIN "{login}" "x"')[-1]
    imap.close()
    return answer


@pytest.mark.parametrize("endpoint", ["smtps", "imap_starttls"])
def test_certificate_of_one_organisation_cannot_open_another_organisations_mailbox(
    server: LiveServer, endpoint: str
) -> None:
    own = server.app(f"labo.a.{endpoint}", entity="LABO A")
    other = server.app(f"labo.b.{endpoint}", entity="LABO B")
    assert re.match(rb"(235|w\d+ OK)", _app_login_answer(server, endpoint, own, own.address))
    refused = _app_login_answer(server, endpoint, own, other.address)
    assert b"not issued for" in refused and not refused.startswith(b"235"), refused


def test_an_imap_session_cannot_reach_another_mailboxs_folders(server: LiveServer) -> None:
    alice, bob = fresh_per(server), fresh_per(server)
    bob_wire = server.imap()
    bob_wire.login_per(bob)
    assert b" OK " in bob_wire.append(message("bob-secret@x"))
    bob_wire.ok("CREATE Private")
    bob_wire.close()
    wire = server.imap()
    wire.login_per(alice)
    bob_local = bob.address.split("@")[0]
    for name in (
        f'"{bob.address}/INBOX"',
        f'"{bob.address}"',
        '"../INBOX"',
        f'"../{bob_local}/INBOX"',
        f'"#shared/{bob_local}"',
        '"/INBOX/../Private"',
        '"Private"',
        f'"Other Users/{bob_local}/INBOX"',
    ):
        for command in (f"SELECT {name}", f"STATUS {name} (MESSAGES)", f"DELETE {name}"):
            answer = wire.command(command)[-1]
            assert b" NO " in answer[:8] or b" BAD " in answer[:8], (command, answer)
    listing = b"".join(wire.ok('LIST "" "*"'))
    assert b"Private" not in listing and bob_local.encode() not in listing
    wire.ok("SELECT INBOX")
    assert wire.ok('SEARCH TEXT "bob-secret"')[0] == b"* SEARCH\r\n"
    wire.close()
    assert message_ids_in_inbox(server, bob) == [b"bob-secret@x"]


# ---- certificates: expired, revoked, revoked while running ---------------------------------
@pytest.mark.parametrize("endpoint", ["smtp_starttls", "imap_starttls"])
@pytest.mark.parametrize(("kind", "reason"), [("expired", b"expired"), ("revoked", b"revoked")])
def test_expired_and_revoked_certificates_are_refused_over_starttls(
    server: LiveServer, endpoint: str, kind: str, reason: bytes
) -> None:
    box = server.app(f"labo.{kind}.{endpoint.replace('_', '-')}")
    bad = server.app(box.address.split("@")[0], kind=kind)
    answer = _app_login_answer(server, endpoint, bad, box.address)
    assert reason in answer and b"refused" in answer, answer


@pytest.mark.parametrize("endpoint", ["smtps", "smtp_starttls", "imaps", "imap_starttls"])
def test_certificate_revoked_while_the_server_runs_is_refused_at_next_login(
    server: LiveServer, endpoint: str
) -> None:
    creds = server.app(f"labo.live.{endpoint.replace('_', '-')}")
    assert re.match(rb"(235|w\d+ OK)", _app_login_answer(server, endpoint, creds, creds.address))
    # What `segur-sim pki` or a CRL update does: revoke it in the data directory.
    pki = TestPKI.load_or_create(server.data_dir / "pki", DOMAIN)
    pki.revoke(x509.load_pem_x509_certificates(Path(creds.cert).read_bytes())[0])
    answer = _app_login_answer(server, endpoint, creds, creds.address)
    assert b"revoked" in answer and not answer.startswith(b"235"), answer


# ---- brute force ---------------------------------------------------------------------------
def _failed_attempt(server: LiveServer, per: PerCredentials, protocol: str) -> float:
    """One wrong token on a new connection; seconds from the AUTH to the refusal."""
    wrong = per.xoauth2("not-a-token")
    if protocol == "smtp":
        wire = server.smtp("smtps")
        started = time.perf_counter()
        code, _ = wire.cmd("AUTH XOAUTH2 " + wrong)
        if code == 334:  # the XOAUTH2 error challenge
            code, _ = wire.cmd("")
        elapsed = time.perf_counter() - started
        assert code == 535
        wire.close()
        return elapsed
    imap = server.imap("imaps")
    tag = imap.next_tag()
    started = time.perf_counter()
    imap.send(f"{tag} AUTHENTICATE XOAUTH2 {wrong}\r\n".encode())
    line = imap.response_line()
    if line.startswith(b"+"):
        imap.send(b"\r\n")
        line = imap.until_tagged(tag)[-1]
    elapsed = time.perf_counter() - started
    assert b"NO [AUTHENTICATIONFAILED]" in line, line
    imap.close()
    return elapsed


def test_brute_force_across_connections_and_protocols_is_slowed_down(server: LiveServer) -> None:
    per = fresh_per(server)
    reset_backoff(server, per)
    delays = [
        _failed_attempt(server, per, "smtp" if i % 2 else "imap") for i in range(CAP_STEPS + 2)
    ]
    # attempt i waits min(i * STEP, CAP): it grows at each failure, then stays at the cap
    for i, delay in enumerate(delays):
        expected = min(i * STEP, CAP)
        assert expected - 0.02 <= delay < expected + 1.0, (i, delays)
    growth = [delays[i + 1] - delays[i] for i in range(CAP_STEPS)]
    assert all(step > STEP / 2 for step in growth), delays
    reset_backoff(server, per)  # a success resets it: the next failure answers at once
    assert _failed_attempt(server, per, "smtp") < STEP


def test_parallel_brute_force_does_not_dodge_the_delay(server: LiveServer) -> None:
    per = fresh_per(server)
    reset_backoff(server, per)
    delays: list[float] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        delay = _failed_attempt(server, per, "smtp" if i % 2 else "imap")
        with lock:
            delays.append(delay)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    delays.sort()
    assert len(delays) == 6
    # six concurrent failures queue up behind 0, 0.1, ..., 0.5 s of delay
    assert delays[-1] >= 5 * STEP - 0.02 and delays[-2] >= 4 * STEP - 0.02, delays
    reset_backoff(server, per)


# ---- clients that vanish mid-command  -------------------------------------------------------
def _smtp_session_with_acknowledged(
    server: LiveServer, per: PerCredentials, count: int
) -> tuple[SmtpWire, list[bytes]]:
    wire = server.smtp("smtps")
    wire.auth(per)
    acked = []
    for i in range(count):
        mid = f"acked-{i}-{per.address}"
        assert wire.cmd(f"MAIL FROM:<{per.address}>")[0] == 250
        assert wire.cmd(f"RCPT TO:<{per.address}>")[0] == 250
        assert wire.cmd("DATA")[0] == 354
        wire.send(message(mid) + b".\r\n")
        code, text = wire.reply()
        assert code == 250, text
        acked.append(mid.encode())
    return wire, acked


@pytest.mark.parametrize(
    "tail",
    [
        b"Subject: cut\r\n\r\nhalf a bo",  # mid body
        b"Subject: cut\r\n\r\nbody\r\n",  # at each byte of the end marker
        b"Subject: cut\r\n\r\nbody\r\n.",
        b"Subject: cut\r\n\r\nbody\r\n.\r",
        b"Subject: cut\r\n\r\nbody\n.\n",  # bare-LF "end" (not an end for us)
    ],
)
def test_smtp_drop_mid_data_keeps_what_was_acknowledged_and_nothing_partial(
    server: LiveServer, tail: bytes
) -> None:
    per = fresh_per(server)
    wire, acked = _smtp_session_with_acknowledged(server, per, 3)
    assert wire.cmd(f"MAIL FROM:<{per.address}>")[0] == 250
    assert wire.cmd(f"RCPT TO:<{per.address}>")[0] == 250
    assert wire.cmd("DATA")[0] == 354
    wire.send(b"Message-ID: <partial@x>\r\n" + tail)
    wire.abort()
    time.sleep(0.2)
    assert sorted(message_ids_in_inbox(server, per)) == sorted(acked)


@pytest.mark.parametrize("where", ["mid-command-line", "mid-auth", "after-rcpt"])
def test_smtp_drop_elsewhere_stores_nothing_and_the_server_goes_on(
    server: LiveServer, where: str
) -> None:
    per = fresh_per(server)
    if where == "mid-auth":
        wire = server.smtp("smtps")
        assert wire.cmd("AUTH XOAUTH2")[0] == 334
        wire.send(per.xoauth2()[:20].encode())
        acked: list[bytes] = []
    else:
        wire, acked = _smtp_session_with_acknowledged(server, per, 2)
        if where == "after-rcpt":
            assert wire.cmd(f"MAIL FROM:<{per.address}>")[0] == 250
            assert wire.cmd(f"RCPT TO:<{per.address}>")[0] == 250
        else:
            wire.send(f"MAIL FROM:<{per.address}".encode())
    wire.abort()
    other = server.smtp("smtp_starttls")
    other.auth(per)
    assert other.cmd("NOOP")[0] == 250
    other.close()
    assert sorted(message_ids_in_inbox(server, per)) == sorted(acked)


@pytest.mark.parametrize(
    "cut", ["half-literal", "literal-without-crlf", "literal-plus-half", "before-literal"]
)
def test_imap_drop_mid_append_keeps_what_was_acknowledged_and_nothing_partial(
    server: LiveServer, cut: str
) -> None:
    per = fresh_per(server)
    wire = server.imap()
    wire.login_per(per)
    acked = []
    for i in range(3):
        mid = f"appended-{i}-{per.address}"
        assert b" OK " in wire.append(message(mid))
        acked.append(mid.encode())
    partial = message("partial@x", size=5000)
    tag = wire.next_tag()
    if cut == "literal-plus-half":
        wire.send(f"{tag} APPEND INBOX {{{len(partial)}+}}\r\n".encode() + partial[:2500])
    elif cut == "before-literal":
        wire.send(f"{tag} APPEND INBOX {{{len(partial)}}}\r\n".encode())
        assert wire.response_line().startswith(b"+")
    else:
        wire.send(f"{tag} APPEND INBOX {{{len(partial)}}}\r\n".encode())
        assert wire.response_line().startswith(b"+")
        wire.send(partial if cut == "literal-without-crlf" else partial[:2500])
    time.sleep(0.05)
    wire.abort()
    time.sleep(0.2)
    assert sorted(message_ids_in_inbox(server, per)) == sorted(acked)
