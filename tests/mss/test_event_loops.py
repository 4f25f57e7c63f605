"""The mail servers on both event loops: the standard asyncio loop and uvloop.

TLS is the loop's own transport (``loop.start_tls`` for STARTTLS, accepted sockets
handed to ``connect_accepted_socket`` for implicit TLS), and the loops order their
callbacks differently: a client that speaks first after the handshake, or many
sessions starting at once, must be served the same way on both.
"""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.controller import SimulatorController
from simulators.core import eventloop
from tests.conftest import PerBox, make_per

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def loop_sim(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimulatorController]:
    monkeypatch.setenv(eventloop.ENV, request.param)
    with SimulatorController(tmp_path / "data", auth_failure_delay=0.05) as controller:
        yield controller


async def _smtp_starttls_session(port: int, ctx: ssl.SSLContext, per: PerBox) -> str:
    """One STARTTLS session that sends EHLO the moment its handshake is done."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> str:
        lines = []
        while True:
            line = (await reader.readline()).decode()
            if not line:
                raise ConnectionError("closed by the server")
            lines.append(line)
            if line[3:4] != "-":
                return "".join(lines)

    async def cmd(line: str, code: str) -> None:
        writer.write(line.encode() + b"\r\n")
        answer = await reply()
        if not answer.startswith(code):
            raise AssertionError(f"{line[:20]!r} -> {answer!r}")

    try:
        await reply()
        await cmd("EHLO lps.example", "250")
        await cmd("STARTTLS", "220")
        await writer.start_tls(ctx, server_hostname="127.0.0.1")
        await cmd("EHLO lps.example", "250")
        await cmd("AUTH XOAUTH2 " + per.xoauth2(), "235")
        await cmd(f"MAIL FROM:<{per.address}>", "250")
        await cmd(f"RCPT TO:<{per.address}>", "250")
        await cmd("DATA", "354")
        await cmd("Subject: loops\r\n\r\nhello\r\n.", "250")
        await cmd("QUIT", "221")
        return "ok"
    finally:
        writer.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_endpoints_name_the_event_loop(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(eventloop.ENV, kind)
    with SimulatorController(tmp_path / "data") as controller:
        assert controller.endpoints["event_loop"] == kind
        assert type(controller.loop).__module__.split(".")[0] == kind


def test_many_starttls_sessions_at_once_are_all_served(loop_sim: SimulatorController) -> None:
    # On the standard loop the client's first command after the handshake used to be
    # thrown away with the clear-text leftovers: most of these sessions hung.
    per = make_per(loop_sim)
    assert loop_sim.services is not None
    ctx = loop_sim.services.pki.client_ssl_context(None)
    port = loop_sim.port("smtp_starttls")

    async def all_sessions() -> list[str | BaseException]:
        sessions = [asyncio.wait_for(_smtp_starttls_session(port, ctx, per), 15) for _ in range(40)]
        return await asyncio.wait_for(asyncio.gather(*sessions, return_exceptions=True), 60)

    results = asyncio.run(all_sessions())
    failures = [repr(r) for r in results if r != "ok"]
    assert failures == [], f"{len(failures)} of 40 sessions failed: {failures[:3]}"
    box = loop_sim.services.store.get_mailbox(per.address)
    assert box is not None
    folder = loop_sim.services.store.get_folder(box.id, "INBOX")
    assert folder is not None
    assert len(loop_sim.services.store.list_uids(folder.id)) == 40


def test_implicit_tls_serves_smtp_and_imap(loop_sim: SimulatorController) -> None:
    per = make_per(loop_sim)
    assert loop_sim.services is not None
    ctx = loop_sim.services.pki.client_ssl_context(None)
    with smtplib.SMTP_SSL("127.0.0.1", loop_sim.port("smtps"), context=ctx, timeout=10) as smtp:
        smtp.ehlo("lps.example")
        assert "XOAUTH2" in smtp.esmtp_features["auth"]
        assert smtp.docmd("AUTH", "XOAUTH2 " + per.xoauth2())[0] == 235
        assert smtp.sendmail(per.address, [per.address], b"Subject: 465\r\n\r\nhi\r\n") == {}
    imap = imaplib.IMAP4_SSL("127.0.0.1", loop_sim.port("imaps"), ssl_context=ctx, timeout=10)
    try:
        raw = f"user={per.address}\x01auth=Bearer {per.token}\x01\x01".encode()
        imap.authenticate("XOAUTH2", lambda _: raw)
        status, data = imap.select("INBOX")
        assert status == "OK" and data == [b"1"]
    finally:
        imap.logout()
    loop_sim.services.recorder.flush()
    for endpoint in ("smtps", "imaps"):
        fields = loop_sim.services.recorder.sessions(endpoint=endpoint)[-1].fields
        assert fields["tls"] is True and fields["starttls"] is False, fields


@pytest.mark.parametrize("endpoint", ["smtps", "imaps"])
def test_refused_implicit_handshake_is_recorded(
    loop_sim: SimulatorController, endpoint: str
) -> None:
    assert loop_sim.services is not None
    distrustful = ssl.create_default_context(cafile=str(loop_sim.services.pki.foreign_root_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        if endpoint == "smtps":
            smtplib.SMTP_SSL("127.0.0.1", loop_sim.port(endpoint), context=distrustful, timeout=10)
        else:
            imaplib.IMAP4_SSL(
                "127.0.0.1", loop_sim.port(endpoint), ssl_context=distrustful, timeout=10
            )
    recorder = loop_sim.services.recorder
    for _ in range(100):
        recorder.flush()
        sessions = recorder.sessions(endpoint=endpoint)
        if sessions and sessions[-1].ended_at is not None:
            break
        asyncio.run(asyncio.sleep(0.02))
    fields = sessions[-1].fields
    assert fields["tls_error"] == "TLSV1_ALERT_UNKNOWN_CA"
    assert fields["close_reason"] == "tls-handshake-failed"
    transcript = recorder.transcript(sessions[-1].id)
    assert "TLS handshake failed: TLSV1_ALERT_UNKNOWN_CA" in transcript


def test_loop_choice_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    loop = eventloop.new_event_loop()
    try:
        assert eventloop.loop_name(loop) == "asyncio"
    finally:
        loop.close()
    monkeypatch.setenv(eventloop.ENV, "tokio")
    with pytest.raises(ValueError, match="expected one of auto, asyncio, uvloop"):
        eventloop.loop_factory()


@pytest.mark.parametrize("endpoint", ["smtps", "imaps", "smtp_starttls"])
def test_a_tls_profile_switch_reaches_new_connections(
    loop_sim: SimulatorController, endpoint: str
) -> None:
    # The conformance runner presents an expired certificate for MSS-05 and friends:
    # the implicit-TLS listeners must take the new context for the next connection.
    assert loop_sim.services is not None and loop_sim.simulator is not None
    ctx = loop_sim.services.pki.client_ssl_context(None)
    loop_sim.simulator.set_tls_profile("cert-expired")
    port = loop_sim.port(endpoint)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        if endpoint == "smtps":
            smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10)
        elif endpoint == "imaps":
            imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=10)
        else:
            smtplib.SMTP("127.0.0.1", port, timeout=10).starttls(context=ctx)
    loop_sim.simulator.set_tls_profile("normal")
    if endpoint == "imaps":
        imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=10).logout()
    elif endpoint == "smtps":
        smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10).quit()
