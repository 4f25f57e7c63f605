"""Garbage, limits, dropped clients, server-side drops and timeouts."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from imap_harness import ImapHarness, PerMailbox, RawClient, b64, harness_fixture

MAX_MESSAGE = 100_000


@pytest.fixture(scope="module")
def h(tmp_path_factory: Any) -> Iterator[ImapHarness]:
    yield from harness_fixture(tmp_path_factory, max_message_size=MAX_MESSAGE)


def logged_in(h: ImapHarness, box: PerMailbox) -> RawClient:
    raw = RawClient(h.imaps_port, context=h.client_context())
    assert raw.command(f"AUTHENTICATE XOAUTH2 {b64(box.xoauth2())}")[-1].startswith(b"r1 OK")
    return raw


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"\x01\x02garbage", b"* BAD"),
        (b"g1 FOOBAR", b"g1 BAD unknown command FOOBAR"),
        (b"g2 FETCH", b"g2 BAD"),
        (b"g3 SELECT", b"g3 BAD"),
        (b"g4 FETCH 1 (BODY[)", b"g4 BAD"),
        (b'g5 SELECT "INBOX', b"g5 BAD syntax error: unterminated quoted string"),
        (b"g6 NOOP )", b"g6 BAD"),
        (b"g7 FETCH 1:x FLAGS", b"g7 BAD"),
        (b"g8 FETCH 99 FLAGS", b"g8 BAD"),
        (b"g9 SEARCH OR SEEN", b"g9 BAD"),
        (b"g10 STORE 1 +FLAGS (\\Bogus)", b"g10 BAD"),
        (b"g11 UID FROB 1", b"g11 BAD"),
        (b"g12 APPEND INBOX notaliteral", b"g12 BAD"),
        (b"+ plus is not a tag", b"* BAD"),
        (b"", b"* BAD"),
    ],
)
def test_garbage_gets_bad_and_the_session_continues(
    h: ImapHarness, line: bytes, answer: bytes
) -> None:
    box = h.per()
    h.deliver(box.address, b"Subject: x\r\n\r\nx\r\n")
    raw = logged_in(h, box)
    raw.command("SELECT INBOX")
    raw.send(line + b"\r\n")
    reply = raw.readline()
    assert reply.startswith(answer), reply
    assert raw.command("NOOP")[-1].startswith(b"r3 OK")
    raw.close()


def test_line_too_long_is_refused_and_the_session_continues(h: ImapHarness) -> None:
    raw = logged_in(h, h.per())
    raw.send(b"t1 NOOP " + b"x" * 70_000 + b"\r\n")
    assert raw.readline().startswith(b"* BAD command line over")
    assert raw.command("NOOP")[-1].startswith(b"r2 OK")
    raw.close()


def test_oversize_literals_are_refused(h: ImapHarness) -> None:
    raw = logged_in(h, h.per())
    raw.send(b"t1 APPEND INBOX {%d}\r\n" % (MAX_MESSAGE + 1))
    assert raw.readline().startswith(b"t1 NO [TOOBIG]")
    raw.send(b"t2 SELECT {70000}\r\n")  # outside APPEND, literals are capped at 64 KB
    assert raw.readline().startswith(b"t2 BAD [TOOBIG]")
    assert raw.command("NOOP")[-1].startswith(b"r2 OK")
    # LITERAL+: the data is already coming, so the server says why and hangs up.
    raw.send(b"t3 APPEND INBOX {%d+}\r\n" % (MAX_MESSAGE + 1))
    assert raw.readline().startswith(b"t3 BAD [TOOBIG]")
    assert raw.readline().startswith(b"* BYE")
    raw.close()


def test_literal_plus_append(h: ImapHarness) -> None:
    box = h.per()
    raw = logged_in(h, box)
    message = b"Subject: lp\r\n\r\nbody\r\n"
    raw.send(b"t1 APPEND INBOX (\\Seen) {%d+}\r\n%s\r\n" % (len(message), message))
    reply = raw.readline()
    assert reply.startswith(b"t1 OK [APPENDUID "), reply
    raw.close()


def test_client_dropping_mid_literal_does_not_disturb_others(h: ImapHarness) -> None:
    box = h.per()
    steady = logged_in(h, box)
    steady.command("SELECT INBOX")
    quitter = logged_in(h, box)
    quitter.send(b"t1 APPEND INBOX {5000}\r\n")
    assert quitter.readline().startswith(b"+ ")
    quitter.send(b"Subject: half a message")
    quitter.sock.shutdown(socket.SHUT_RDWR)
    quitter.close()
    assert steady.command("NOOP")[-1].startswith(b"r3 OK")
    assert steady.command("FETCH 1:* (FLAGS)") == [b"r4 OK FETCH completed\r\n"]  # empty
    # A new session works too, and nothing half-appended was stored.
    fresh = logged_in(h, box)
    assert fresh.command("STATUS INBOX (MESSAGES)")[0] == b'* STATUS "INBOX" (MESSAGES 0)\r\n'
    fresh.close()
    steady.close()
    dropped = wait_for(
        lambda: [
            s
            for s in h.sessions()
            if s.get("auth_user") == box.address and s.get("close_reason") == "client-dropped"
        ]
    )
    assert dropped


def test_starttls_injection_is_discarded(h: ImapHarness) -> None:
    raw = RawClient(h.starttls_port)
    raw.send(b"s1 STARTTLS\r\ns2 CAPABILITY\r\n")  # s2 arrives in clear text, pipelined
    assert raw.readline().startswith(b"s1 OK")
    import ssl as _ssl

    raw.file.close()
    raw.sock = h.client_context().wrap_socket(raw.sock, server_hostname="127.0.0.1")
    raw.file = raw.sock.makefile("rb")
    lines = raw.command("NOOP")
    assert lines == [b"r1 OK NOOP completed\r\n"], lines  # no answer to the injected s2
    raw.close()
    assert _ssl  # the handshake above used real TLS


def test_drop_sessions_of_one_mailbox(h: ImapHarness) -> None:
    victim, bystander = h.per(), h.per()
    a = logged_in(h, victim)
    a.command("SELECT INBOX")
    a.send(b"i1 IDLE\r\n")
    assert a.readline().startswith(b"+ ")
    b = logged_in(h, bystander)
    server = h.imaps_server
    assert {s.mailbox.address for s in server.active_sessions() if s.mailbox} >= {
        victim.address,
        bystander.address,
    }
    # Both listeners share the registry: the STARTTLS server can drop IMAPS sessions.
    count = h.call(h.starttls_server.drop_sessions(victim.address))
    assert count == 1
    assert a.readline().startswith(b"* BYE")
    with pytest.raises(ConnectionError):
        a.readline()
    assert b.command("NOOP")[-1].startswith(b"r2 OK")
    b.close()
    rec = wait_for(
        lambda: [
            s
            for s in h.sessions()
            if s.get("auth_user") == victim.address and s.get("close_reason")
        ]
    )[-1]
    assert rec.get("close_reason") == "server-drop"
    assert "session closed by the server" in h.transcript(rec)


def test_idle_timeout_logs_the_client_out(h: ImapHarness) -> None:
    data = h.services.data
    saved = data.settings
    data.settings = dataclasses.replace(saved, imap_idle_timeout=1)
    try:
        raw = logged_in(h, h.per())
    finally:
        data.settings = saved
    started = time.monotonic()
    assert raw.readline().startswith(b"* BYE Autologout")
    assert 0.8 <= time.monotonic() - started < 5
    raw.close()
    rec = wait_for(lambda: [s for s in h.sessions() if s.get("close_reason") == "timeout"])
    assert rec


def test_logout_and_capability_in_every_state(h: ImapHarness) -> None:
    raw = RawClient(h.starttls_port)
    lines = raw.command("CAPABILITY")
    assert b"STARTTLS" in lines[0] and b"AUTH=" not in lines[0]
    lines = raw.command("LOGOUT")
    assert lines[0].startswith(b"* BYE") and lines[-1].startswith(b"r2 OK")
    with pytest.raises(ConnectionError):
        raw.readline()
    raw.close()
