"""IMAP authentication over real sockets and TLS: XOAUTH2 (PER/ORG) and mTLS + PLAIN (APP)."""

from __future__ import annotations

import base64
import imaplib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from imap_harness import ImapHarness, RawClient, b64, harness_fixture

MESSAGE = b"From: a@example.org\r\nSubject: hello\r\n\r\nBonjour\r\n"


@pytest.fixture(scope="module")
def h(tmp_path_factory: Any) -> Iterator[ImapHarness]:
    yield from harness_fixture(tmp_path_factory)


def test_starttls_xoauth2_with_imaplib(h: ImapHarness) -> None:
    box = h.per()
    h.deliver(box.address, MESSAGE)
    client = imaplib.IMAP4("127.0.0.1", h.starttls_port, timeout=10)
    before = set(client.capabilities)
    assert "STARTTLS" in before and "LOGINDISABLED" in before
    assert not any(c.startswith("AUTH=") for c in before)
    client.starttls(h.client_context())
    after = set(client.capabilities)
    assert {"AUTH=XOAUTH2", "AUTH=PLAIN", "SASL-IR"} <= after
    assert "LOGINDISABLED" not in after and "STARTTLS" not in after
    typ, _ = client.authenticate("XOAUTH2", lambda _c: box.xoauth2())
    assert typ == "OK"
    assert client.select("INBOX") == ("OK", [b"1"])
    client.logout()
    rec = h.session_of(box.address)
    assert rec.get("auth_ok") is True
    assert rec.get("sasl_mechanism") == "XOAUTH2"
    assert rec.get("sasl_ir") is False  # imaplib sends the response after "+ "
    assert rec.get("starttls") is True and rec.get("tls_version") in ("TLSv1.2", "TLSv1.3")
    assert rec.get("close_reason") == "client-logout"
    assert not rec.get("auth_before_tls")
    text = h.transcript(rec)
    assert box.token not in text and b64(box.xoauth2()) not in text
    assert "<SASL response, redacted" in text


def test_xoauth2_sasl_ir_on_the_authenticate_line(h: ImapHarness) -> None:
    box = h.per()
    raw = RawClient(h.starttls_port)
    raw.starttls(h.client_context())
    lines = raw.command(f"AUTHENTICATE XOAUTH2 {b64(box.xoauth2())}")
    assert lines[-1].startswith(b"r2 OK [CAPABILITY IMAP4rev1"), lines
    assert raw.command("NOOP")[-1].startswith(b"r3 OK")
    raw.command("LOGOUT")
    raw.close()
    rec = h.session_of(box.address)
    assert rec.get("sasl_ir") is True and rec.get("auth_ok") is True
    transcript = h.transcript(rec)
    assert "AUTHENTICATE XOAUTH2 <redacted" in transcript
    assert box.token not in transcript


def test_expired_token_gets_the_error_challenge_then_no(h: ImapHarness) -> None:
    box = h.per()
    expired = h.services.psc.issue(box.mailbox, access_lifetime=-60).access_token
    raw = RawClient(h.starttls_port)
    raw.starttls(h.client_context())
    raw.send(f"a1 AUTHENTICATE XOAUTH2 {b64(box.xoauth2(expired))}\r\n".encode())
    challenge = raw.readline()
    assert challenge.startswith(b"+ "), challenge
    body = json.loads(base64.b64decode(challenge[2:].strip()))
    assert body["status"] == "401"
    raw.send(b"\r\n")  # as Gmail expects: an empty response, then the final NO
    final = raw.readline()
    assert final.startswith(b"a1 NO [AUTHENTICATIONFAILED]"), final
    assert b"expired" in final
    # The session stays usable for a new attempt with a good token.
    assert raw.command(f"AUTHENTICATE XOAUTH2 {b64(box.xoauth2())}")[-1].startswith(b"r2 OK")
    raw.close()
    sessions = [s for s in h.sessions() if s.get("auth_user") == box.address]
    assert sessions[-1].get("auth_ok") is True
    assert "expired" in sessions[-1].get("auth_error", "")


def test_expired_token_with_imaplib_is_refused(h: ImapHarness) -> None:
    box = h.per()
    expired = h.services.psc.issue(box.mailbox, access_lifetime=-60).access_token
    client = h.imap_starttls()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate("XOAUTH2", lambda _c: box.xoauth2(expired))
    client.shutdown()


def test_token_of_mailbox_a_cannot_open_mailbox_b(h: ImapHarness) -> None:
    a, b = h.per(), h.per()
    forged = f"user={b.address}\x01auth=Bearer {a.token}\x01\x01".encode()
    client = h.imap_starttls()
    with pytest.raises(imaplib.IMAP4.error, match="no right on"):
        client.authenticate("XOAUTH2", lambda _c: forged)
    client.shutdown()
    rec = [s for s in h.sessions() if s.get("auth_user") == b.address][-1]
    assert rec.get("auth_ok") is False


def test_auth_before_starttls_is_refused_and_recorded(h: ImapHarness) -> None:
    box = h.per()
    raw = RawClient(h.starttls_port)
    assert b"LOGINDISABLED" in raw.greeting and b"AUTH=" not in raw.greeting
    lines = raw.command(f"AUTHENTICATE XOAUTH2 {b64(box.xoauth2())}")
    assert lines[-1].startswith(b"r1 NO [PRIVACYREQUIRED]"), lines
    assert len(lines) == 1  # no continuation: nothing more is read in clear text
    lines = raw.command(f"LOGIN {box.address} secret")
    assert lines[-1].startswith(b"r2 NO [PRIVACYREQUIRED]"), lines
    assert raw.command("SELECT INBOX")[-1].startswith(b"r3 BAD")
    raw.close()
    rec = h.sessions("imap_starttls")[-1]
    assert rec.get("auth_before_tls") is True
    assert rec.get("auth_ok") is None
    transcript = h.transcript(rec)
    assert box.token not in transcript and "secret" not in transcript


def test_app_imaps_login_with_client_certificate(h: ImapHarness) -> None:
    box = h.app()
    h.deliver(box.address, MESSAGE)
    client = h.imaps(box.creds)
    assert "AUTH=PLAIN" in client.capabilities and "STARTTLS" not in client.capabilities
    assert client.login(box.address, "anything")[0] == "OK"
    assert client.select("INBOX")[1] == [b"1"]
    client.logout()
    rec = h.session_of(box.address)
    assert rec.get("auth_ok") is True and rec.get("sasl_mechanism") == "LOGIN"
    assert "ORG AUTH_CLI" in rec.get("client_cert_subject", "")
    assert rec.get("starttls") is False
    assert "anything" not in h.transcript(rec)


def test_app_authenticate_plain_with_sasl_ir(h: ImapHarness) -> None:
    box = h.app()
    raw = RawClient(h.imaps_port, context=h.client_context(box.creds))
    plain = b64(f"\x00{box.address}\x00x".encode())
    assert raw.command(f"AUTHENTICATE PLAIN {plain}")[-1].startswith(b"r1 OK")
    raw.close()
    rec = h.session_of(box.address)
    assert rec.get("sasl_mechanism") == "PLAIN" and rec.get("sasl_ir") is True


def test_app_authenticate_plain_over_starttls_with_imaplib(h: ImapHarness) -> None:
    box = h.app()
    client = h.imap_starttls(box.creds)
    typ, _ = client.authenticate("PLAIN", lambda _c: f"\x00{box.address}\x00x".encode())
    assert typ == "OK"
    client.logout()
    assert h.session_of(box.address).get("sasl_ir") is False


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (None, "no client certificate"),
        ("expired", "expired"),
        ("revoked", "revoked"),
        ("foreign", "not the IGC Santé ORG authority"),
        ("personal", "personal certificate"),
    ],
)
def test_app_login_refused_with_a_bad_certificate(
    h: ImapHarness, kind: str | None, reason: str
) -> None:
    box = h.app()
    creds = h.app(box.address.split("@")[0], kind).creds if kind else None
    client = h.imaps(creds)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(box.address, "x")
    client.shutdown()
    rec = [s for s in h.sessions("imaps") if s.get("auth_user") == box.address][-1]
    assert rec.get("auth_ok") is False
    assert reason in rec.get("auth_error", "")


def test_per_mailbox_cannot_use_login(h: ImapHarness) -> None:
    box = h.per()
    client = h.imaps()
    with pytest.raises(imaplib.IMAP4.error, match="use XOAUTH2"):
        client.login(box.address, box.token)
    client.shutdown()


def test_failed_auth_is_slowed_down(h: ImapHarness) -> None:
    import time

    throttle = h.services.auth.throttle
    saved = throttle.step, throttle.maximum
    throttle.step, throttle.maximum = 0.2, 1.0
    throttle.succeeded("127.0.0.1")  # forget the failures of earlier tests
    try:
        box = h.per()
        client = h.imap_starttls()
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(imaplib.IMAP4.error):
                client.authenticate("XOAUTH2", lambda _c: box.xoauth2("not-a-token"))
        # delays 0, 0.2, 0.4: the third failure answers at least 0.6 s after the first try
        assert 0.55 <= time.monotonic() - started < 3
        assert client.authenticate("XOAUTH2", lambda _c: box.xoauth2())[0] == "OK"
        assert throttle.failures("127.0.0.1") == 0  # a success resets the back-off
        client.logout()
    finally:
        throttle.step, throttle.maximum = saved


def test_id_fields_are_recorded_and_answered(h: ImapHarness) -> None:
    box = h.per()
    client = h.login_per(box)
    typ, _ = client.xatom("ID", '("name" "LPS-Test" "version" "4.2" "os" NIL)')
    assert typ == "OK"
    answer = client.untagged_responses.get("ID", [b""])[0]
    assert b'"name" "segur-sim"' in answer and b"SIMULATION" in answer
    client.logout()
    rec = h.session_of(box.address)
    assert rec.get("imap_id") == {"name": "LPS-Test", "version": "4.2", "os": None}
