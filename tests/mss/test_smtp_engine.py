"""The SMTP command engine at the octet level: pipelining, split terminators, a client
that does not read its replies, the idle timeout. Real TLS sockets, no smtplib (it
never pipelines and always writes whole lines)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.controller import SimulatorController
from simulators.mss.smtp.engine import parse_address
from tests.conftest import PerBox, inbox_raw, make_per

BODY = b"Subject: engine\r\n\r\nline one\r\n..dot-stuffed line\r\nlast line\r\n"


class Wire:
    """A TLS socket to port 465 that reads replies line by line."""

    def __init__(self, sim: SimulatorController, receive_buffer: int = 0) -> None:
        assert sim.services is not None
        ctx = sim.services.pki.client_ssl_context(None)
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(10)
        if receive_buffer:  # before connect, so that the window stays small
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        raw.connect(("127.0.0.1", sim.port("smtps")))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: ssl.SSLSocket = ctx.wrap_socket(raw, server_hostname="localhost")
        self.pending = b""
        assert self.reply().startswith(b"220 ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; pending {self.pending!r}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def reply(self) -> bytes:
        """One whole reply (the last line of a multi-line one)."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line

    def login(self, per: PerBox) -> None:
        self.send(b"EHLO engine.example\r\n")
        assert self.reply().startswith(b"250 ")
        self.send(b"AUTH XOAUTH2 " + per.xoauth2().encode() + b"\r\n")
        assert self.reply().startswith(b"235 ")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def per_sim(tmp_path: Path) -> Iterator[tuple[SimulatorController, PerBox]]:
    with SimulatorController(tmp_path / "data", auth_failure_delay=0.05, smtp_timeout=2) as sim:
        yield sim, make_per(sim)


def body_of(raw: bytes) -> bytes:
    # The stored message starts with our Received header.
    return raw[raw.index(b"Subject: engine") :]


def test_a_pipelined_conversation_is_answered_in_order(
    per_sim: tuple[SimulatorController, PerBox],
) -> None:
    sim, per = per_sim
    wire = Wire(sim)
    wire.login(per)
    envelope = f"MAIL FROM:<{per.address}>\r\nRCPT TO:<{per.address}>\r\nDATA\r\n".encode()
    # Two transactions and QUIT in one write: the second MAIL arrives while the first
    # message is being committed, and must wait its turn in the buffer.
    wire.send(envelope + BODY + b".\r\n" + envelope + BODY + b".\r\nQUIT\r\n")
    replies = [wire.reply() for _ in range(9)]
    codes = [r[:3] for r in replies]
    assert codes == [b"250", b"250", b"354", b"250", b"250", b"250", b"354", b"250", b"221"], (
        replies
    )
    assert b"queued as" in replies[3] and b"queued as" in replies[7]
    stored = inbox_raw(sim, per.address)
    assert [body_of(m) for m in stored] == [BODY.replace(b"\r\n..", b"\r\n.")] * 2


@pytest.mark.parametrize("cut", range(1, 6))
def test_a_terminator_split_across_writes_still_ends_the_message(
    per_sim: tuple[SimulatorController, PerBox], cut: int
) -> None:
    sim, per = per_sim
    wire = Wire(sim)
    wire.login(per)
    wire.send(f"MAIL FROM:<{per.address}>\r\nRCPT TO:<{per.address}>\r\nDATA\r\n".encode())
    assert [wire.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
    # The body ends "...\r\n" and the terminator ".\r\n": cut "\r\n.\r\n" at each place.
    whole = BODY + b".\r\n"
    split = len(whole) - 5 + cut
    wire.send(whole[:split])
    time.sleep(0.1)  # let the server see the first piece on its own
    wire.send(whole[split:])
    reply = wire.reply()
    assert reply.startswith(b"250 2.0.0 OK: queued as"), reply
    wire.send(b"NOOP\r\n")
    assert wire.reply() == b"250 OK"
    assert [body_of(m) for m in inbox_raw(sim, per.address)] == [BODY.replace(b"\r\n..", b"\r\n.")]


def test_a_client_that_does_not_read_its_replies_is_paused_then_fully_answered(
    per_sim: tuple[SimulatorController, PerBox],
) -> None:
    sim, per = per_sim
    assert sim.simulator is not None
    wire = Wire(sim, receive_buffer=4096)
    wire.login(per)
    (session,) = sim.simulator.smtp["smtps"].sessions
    # A congested link: the kernel may not take megabytes of replies for us.
    assert session.transport is not None
    session.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 16384
    )
    count = 60_000  # 360 KB of commands, 480 KB of replies: far over both windows
    sender = threading.Thread(target=wire.send, args=(b"NOOP\r\n" * count,), daemon=True)
    sender.start()
    time.sleep(1.0)  # the client reads nothing meanwhile
    # The server stopped reading instead of queueing replies without bound.
    assert session._read_paused, "the server kept reading a client that does not read"
    assert len(session._buf) < 1 << 19
    answers = [wire.line() for _ in range(count)]
    sender.join(timeout=10)
    assert not sender.is_alive()
    assert set(answers) == {b"250 OK"}
    wire.send(b"QUIT\r\n")
    assert wire.reply().startswith(b"221")


def test_an_idle_client_is_closed_after_the_timeout_and_it_is_recorded(
    per_sim: tuple[SimulatorController, PerBox],
) -> None:
    sim, per = per_sim
    assert sim.services is not None
    wire = Wire(sim)
    wire.login(per)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        wire.line()  # nothing to read until the server closes
    assert time.monotonic() - started >= 1.5  # smtp_timeout=2, counted from the last line
    wire.close()  # answers the server's TLS close_notify: the session ends now
    recorder = sim.services.recorder
    deadline = time.monotonic() + 5
    while True:
        recorder.flush()
        session = recorder.sessions(endpoint="smtps")[-1]
        if session.fields.get("close_reason") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert session.fields.get("close_reason") == "timeout"
    notes = [e.data for e in recorder.events(session.id) if e.direction == "I"]
    assert "idle timeout: the server closes the session" in notes


def test_activity_keeps_a_session_open_past_the_timeout(
    per_sim: tuple[SimulatorController, PerBox],
) -> None:
    sim, per = per_sim
    wire = Wire(sim)
    wire.login(per)
    for _ in range(6):  # 3 s of NOOPs every 0.5 s, timeout 2 s
        time.sleep(0.5)
        wire.send(b"NOOP\r\n")
        assert wire.reply() == b"250 OK"


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("<a@b.example>", ("a@b.example", "")),
        ("<a@b.example> SIZE=10 BODY=8BITMIME", ("a@b.example", "SIZE=10 BODY=8BITMIME")),
        ("<>", ("", "")),
        ('<"quoted local"@b.example>', ('"quoted local"@b.example', "")),
        ("a@b.example", ("a@b.example", "")),
        ("<", (None, None)),
    ],
)
def test_addresses_are_parsed_like_rfc_5321_paths(
    argument: str, expected: tuple[str | None, str | None]
) -> None:
    assert parse_address(argument) == expected


def test_an_endless_sasl_response_is_cut_refused_and_the_session_goes_on(
    per_sim: tuple[SimulatorController, PerBox],
) -> None:
    sim, _per = per_sim
    wire = Wire(sim)
    wire.send(b"EHLO engine.example\r\n")
    assert wire.reply().startswith(b"250 ")
    wire.send(b"AUTH XOAUTH2\r\n")
    assert wire.reply() == b"334 "
    # 40 KB with no line end: more than any SASL response may be (RFC 4954: 12288).
    wire.send(b"A" * 40_000)
    first = wire.reply()
    assert first[:3] in (b"535", b"501", b"334"), first
    if first.startswith(b"334"):  # the XOAUTH2 error challenge: answer it
        wire.send(b"\r\n")
        first = wire.reply()
    assert first[:3] in (b"535", b"501"), first
    wire.send(b"AAAA\r\n")  # the end of the overlong line: discarded, then answered
    assert wire.reply() == b"500 Command line too long"
    wire.send(b"NOOP\r\n")
    assert wire.reply() == b"250 OK"
