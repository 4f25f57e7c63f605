"""SMTP submission end to end: real sockets, real TLS, smtplib and curl as clients."""

from __future__ import annotations

import base64
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from simulators.controller import SimulatorController
from simulators.core.store.mail import MailboxType
from tests.conftest import DOMAIN, AppBox, PerBox, inbox_raw, make_app, make_per

MESSAGE = (
    b"From: Dr Martin <dr.martin@mssante.localhost>\r\n"
    b"To: labo@mssante.localhost\r\n"
    b"Subject: test\r\n"
    b"Message-ID: <t1@lps.example>\r\n"
    b"\r\n"
    b"Bonjour\r\n"
    b".leading dot line\r\n"
)


def starttls(sim: SimulatorController, client_creds: object = None) -> smtplib.SMTP:
    assert sim.services is not None
    client = smtplib.SMTP("127.0.0.1", sim.port("smtp_starttls"), timeout=10)
    client.ehlo("lps.example")
    client.starttls(context=sim.services.pki.client_ssl_context(client_creds))  # type: ignore[arg-type]
    client.ehlo("lps.example")
    return client


def smtps(sim: SimulatorController, client_creds: object = None) -> smtplib.SMTP_SSL:
    assert sim.services is not None
    ctx = sim.services.pki.client_ssl_context(client_creds)  # type: ignore[arg-type]
    client = smtplib.SMTP_SSL("127.0.0.1", sim.port("smtps"), context=ctx, timeout=10)
    client.ehlo("lps.example")
    return client


def last_session_fields(sim: SimulatorController, endpoint: str) -> dict[str, object]:
    assert sim.services is not None
    sim.services.recorder.flush()
    sessions = sim.services.recorder.sessions(endpoint=endpoint)
    assert sessions, f"no session recorded on {endpoint}"
    return sessions[-1].fields


def wait_for_field(
    sim: SimulatorController, endpoint: str, name: str, timeout: float = 5
) -> object:
    """The server records asynchronously: poll until the field appears."""
    # A failed implicit-TLS handshake is recorded once the server has seen it fail,
    # which can be after the client has given up: wait for the session too.
    assert sim.services is not None
    deadline = time.monotonic() + timeout
    while True:
        sim.services.recorder.flush()
        sessions = sim.services.recorder.sessions(endpoint=endpoint)
        fields = sessions[-1].fields if sessions else {}
        if name in fields or time.monotonic() > deadline:
            assert sessions, f"no session recorded on {endpoint}"
            return fields.get(name)
        time.sleep(0.02)


def test_xoauth2_over_starttls_delivers_locally_and_keeps_outbound(
    sim: SimulatorController, per: PerBox, app_box: AppBox
) -> None:
    client = starttls(sim)
    assert "XOAUTH2" in client.esmtp_features["auth"]
    code, _ = client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    assert code == 235
    refused = client.sendmail(per.address, [app_box.address, "someone@hopital.example"], MESSAGE)
    assert refused == {}
    client.quit()

    stored = inbox_raw(sim, app_box.address)
    assert len(stored) == 1
    assert stored[0].startswith(b"Received: from lps.example")
    assert b"(authenticated as dr.martin@mssante.localhost)" in stored[0]
    assert stored[0].endswith(b"Bonjour\r\n.leading dot line\r\n")  # dot-stuffing undone
    assert sim.services is not None
    outbound = sim.services.store.list_submissions(outbound_only=True)
    assert [s.outbound_rcpts for s in outbound] == [("someone@hopital.example",)]

    fields = last_session_fields(sim, "smtp_starttls")
    assert fields["starttls"] is True
    assert fields["sasl_mechanism"] == "XOAUTH2"
    assert fields["sasl_ir"] is True
    assert fields["auth_ok"] is True
    assert fields["tls_version"] in {"TLSv1.2", "TLSv1.3"}
    assert wait_for_field(sim, "smtp_starttls", "close_reason") == "client-quit"


def test_transcript_redacts_tokens(sim: SimulatorController, per: PerBox, app_box: AppBox) -> None:
    client = starttls(sim)
    client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    client.sendmail(per.address, [app_box.address], MESSAGE)
    client.quit()
    assert sim.services is not None
    sim.services.recorder.flush()
    session = sim.services.recorder.sessions(endpoint="smtp_starttls")[-1]
    transcript = sim.services.recorder.transcript(session.id)
    assert "AUTH XOAUTH2 <redacted" in transcript
    assert per.token not in transcript
    assert per.xoauth2() not in transcript
    assert "250 2.0.0 OK: queued as" in transcript


def test_xoauth2_without_initial_response(sim: SimulatorController, per: PerBox) -> None:
    client = starttls(sim)
    code, _ = client.docmd("AUTH", "XOAUTH2")
    assert code == 334
    code, _ = client.docmd(per.xoauth2())
    assert code == 235
    client.quit()
    assert last_session_fields(sim, "smtp_starttls")["sasl_ir"] is False


def test_auth_is_neither_offered_nor_accepted_before_starttls(
    sim: SimulatorController, per: PerBox
) -> None:
    client = smtplib.SMTP("127.0.0.1", sim.port("smtp_starttls"), timeout=10)
    client.ehlo("lps.example")
    assert "starttls" in client.esmtp_features
    assert "auth" not in client.esmtp_features
    code, msg = client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    assert code == 530 and b"STARTTLS" in msg
    code, _ = client.docmd("MAIL", f"FROM:<{per.address}>")
    assert code == 530
    client.quit()
    fields = last_session_fields(sim, "smtp_starttls")
    assert fields["auth_before_tls"] is True
    assert fields.get("tls") is None  # never upgraded


def test_expired_token_is_refused_with_the_xoauth2_error_challenge(
    sim: SimulatorController, per: PerBox
) -> None:
    assert sim.services is not None
    expired = sim.services.psc.issue(per.mailbox, access_lifetime=-60).access_token
    client = starttls(sim)
    code, challenge = client.docmd("AUTH", "XOAUTH2 " + per.xoauth2(expired))
    assert code == 334
    assert b'"status": "401"' in base64.b64decode(challenge)
    code, msg = client.docmd("")
    assert code == 535
    assert b"token expired" in msg
    client.quit()
    assert (
        last_session_fields(sim, "smtp_starttls")["auth_error"]
        == "PSC token refused: token expired"
    )


def test_token_of_another_mailbox_cannot_open_this_one(sim: SimulatorController) -> None:
    alice = make_per(sim, "alice")
    bob = make_per(sim, "bob")
    client = starttls(sim)
    code, _ = client.docmd("AUTH", "XOAUTH2 " + bob.xoauth2(alice.token))
    assert code == 334
    code, msg = client.docmd("")
    assert code == 535 and b"has no right on bob@" in msg
    client.quit()


def test_forged_token_is_refused(sim: SimulatorController, per: PerBox) -> None:
    header, payload, signature = per.token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    client = starttls(sim)
    client.docmd("AUTH", "XOAUTH2 " + per.xoauth2(forged))
    code, msg = client.docmd("")
    assert code == 535 and b"bad signature" in msg
    client.quit()


def test_malformed_xoauth2_string_is_refused(sim: SimulatorController, per: PerBox) -> None:
    client = starttls(sim)
    bad = base64.b64encode(f"user={per.address}\x01auth={per.token}".encode()).decode()
    code, msg = client.docmd("AUTH", "XOAUTH2 " + bad)
    assert code == 535 and b"\\x01\\x01" in msg
    client.quit()


def test_app_mailbox_mtls_plain_over_smtps(
    sim: SimulatorController, per: PerBox, app_box: AppBox
) -> None:
    client = smtps(sim, app_box.creds)
    client.login(app_box.address, "unused")
    client.sendmail(app_box.address, [per.address], MESSAGE)
    client.quit()
    assert len(inbox_raw(sim, per.address)) == 1
    fields = last_session_fields(sim, "smtps")
    assert fields["sasl_mechanism"] == "PLAIN"
    assert fields["starttls"] is False
    assert "ORG AUTH_CLI" in str(fields["client_cert_subject"])
    assert fields["client_cert_verdict"] == "valid ORG AUTH_CLI certificate"


def test_app_mailbox_mtls_plain_over_starttls(sim: SimulatorController, app_box: AppBox) -> None:
    client = starttls(sim, app_box.creds)
    client.login(app_box.address, "")
    client.quit()
    assert last_session_fields(sim, "smtp_starttls")["auth_ok"] is True


def test_app_login_refused_without_client_certificate(
    sim: SimulatorController, app_box: AppBox
) -> None:
    client = smtps(sim)
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        client.login(app_box.address, "x")
    assert err.value.smtp_code == 535
    assert b"no client certificate" in err.value.smtp_error


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("expired", b"expired on"),
        ("revoked", b"revoked"),
        ("foreign", b"is not the IGC Sant"),
        ("personal", b"personal certificate"),
    ],
)
def test_app_login_refused_with_a_wrong_client_certificate(
    sim: SimulatorController, kind: str, reason: bytes
) -> None:
    bad = make_app(sim, "labo", kind)
    client = smtps(sim, bad.creds)
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        client.login(bad.address, "x")
    assert reason in err.value.smtp_error
    client.close()


def test_per_mailbox_cannot_use_plain(
    sim: SimulatorController, per: PerBox, app_box: AppBox
) -> None:
    client = smtps(sim, app_box.creds)
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        client.login(per.address, "x")
    assert b"use XOAUTH2" in err.value.smtp_error


def test_sender_must_be_the_authenticated_mailbox(
    sim: SimulatorController, per: PerBox, app_box: AppBox
) -> None:
    client = starttls(sim)
    client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    with pytest.raises(smtplib.SMTPSenderRefused) as err:
        client.sendmail(app_box.address, [per.address], MESSAGE)
    assert err.value.smtp_code == 553
    client.quit()


def test_unknown_local_recipient_is_refused(sim: SimulatorController, per: PerBox) -> None:
    client = starttls(sim)
    client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        client.sendmail(per.address, [f"nobody@{DOMAIN}"], MESSAGE)
    assert err.value.recipients[f"nobody@{DOMAIN}"][0] == 550
    client.quit()


def test_oversize_messages_get_552_and_the_session_goes_on(tmp_path: Path) -> None:
    with SimulatorController(tmp_path / "d", max_message_size=4096) as small:
        per = make_per(small)
        client = starttls(small)
        assert client.esmtp_features["size"] == "4096"
        client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
        code, _ = client.docmd("MAIL", f"FROM:<{per.address}> SIZE=999999")
        assert code == 552
        client.rset()
        big = MESSAGE + b"x" * 8000 + b"\r\n"
        client.mail(per.address)
        client.rcpt(per.address)
        code, msg = client.data(big)
        assert code == 552, msg
        client.sendmail(per.address, [per.address], MESSAGE)  # still usable afterwards
        client.quit()
        assert len(inbox_raw(small, per.address)) == 1


def test_client_dropping_mid_data_stores_nothing_and_others_are_served(
    sim: SimulatorController, per: PerBox, app_box: AppBox
) -> None:
    assert sim.services is not None
    ctx = sim.services.pki.client_ssl_context()
    raw = socket.create_connection(("127.0.0.1", sim.port("smtps")), timeout=10)
    conn = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    reader = conn.makefile("rb")

    def cmd(line: bytes) -> bytes:
        conn.sendall(line + b"\r\n")
        reply = b""
        while True:
            reply_line = reader.readline()
            reply += reply_line
            if reply_line[3:4] != b"-":
                return reply

    assert reader.readline().startswith(b"220")
    cmd(b"EHLO drop.example")
    assert cmd(b"AUTH XOAUTH2 " + per.xoauth2().encode()).startswith(b"235")
    cmd(f"MAIL FROM:<{per.address}>".encode())
    cmd(f"RCPT TO:<{app_box.address}>".encode())
    assert cmd(b"DATA").startswith(b"354")
    conn.sendall(b"Subject: half\r\n\r\nthis message never ends")
    conn.close()

    client = starttls(sim)
    client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    client.sendmail(per.address, [app_box.address], MESSAGE)
    client.quit()
    stored = inbox_raw(sim, app_box.address)
    assert len(stored) == 1 and b"this message never ends" not in stored[0]


def test_garbage_commands_get_errors_and_the_session_continues(
    sim: SimulatorController, per: PerBox
) -> None:
    client = starttls(sim)
    for garbage in ("FOOBAR", "MAIL FRM:<x>", "RCPT TO:<x@y>", "\x01\x02\x03"):
        code, _ = client.docmd(garbage)
        assert 500 <= code < 600, garbage
    code, _ = client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    assert code == 235
    code, _ = client.docmd("MAIL", 'FROM:<"quoted local"@mssante.localhost>')
    assert code == 553  # parsed by the full parser, refused as not the mailbox
    client.quit()


def test_non_utf8_arguments_are_answered_and_recorded(
    sim: SimulatorController, per: PerBox
) -> None:
    # Found by the long fuzz run (under aiosmtpd): "VRFY >\x80" echoed in the 502 with a lone
    # surrogate, which neither the socket nor SQLite could encode (451, lost transcript).
    client = smtps(sim)
    code, _ = client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    assert code == 235
    assert client.sock is not None
    client.sock.sendall(b"VRFY >\x80\r\n")
    code, text = client.getreply()
    assert code == 502, text
    assert text.startswith(b"Could not VRFY >")
    code, _ = client.docmd("NOOP")
    assert code == 250  # the session goes on
    client.quit()
    assert sim.services is not None
    recorder = sim.services.recorder
    recorder.flush()
    session = recorder.sessions(endpoint="smtps")[-1]
    lines = [e.data for e in recorder.events(session.id)]
    assert "VRFY >\\x80" in lines  # the client line, as the octets it sent
    assert any(line.startswith("502 Could not VRFY >") for line in lines)
    assert lines[-1].startswith("221"), lines[-3:]  # nothing of the batch was lost


def test_malformed_mime_is_stored_as_is(sim: SimulatorController, per: PerBox) -> None:
    weird = (
        b'Subject: =?bogus?Q?x?=\r\nContent-Type: multipart/mixed; boundary="nope"\r\n'
        b"X-8bit: \xe9\xff\r\n\r\n--nope\r\nno closing boundary\r\n"
    )
    client = starttls(sim)
    client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    client.sendmail(per.address, [per.address], weird)
    client.quit()
    stored = inbox_raw(sim, per.address)
    assert stored[0].endswith(weird)


def test_repeated_auth_failures_are_slowed_down(sim: SimulatorController, per: PerBox) -> None:
    assert sim.services is not None
    client = starttls(sim)
    bad = base64.b64encode(f"\x00{per.address}\x00x".encode()).decode()
    durations = []
    for _ in range(5):
        started = time.monotonic()
        code, _ = client.docmd("AUTH", "PLAIN " + bad)
        durations.append(time.monotonic() - started)
        assert code == 535
    client.close()
    # 0.05 s more per consecutive failure: the fifth waits at least 0.2 s.
    assert sim.services.auth.throttle.failures("127.0.0.1") >= 5
    assert durations[-1] >= 0.2 > durations[0]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_submits_with_xoauth2_over_starttls(
    sim: SimulatorController, per: PerBox, app_box: AppBox, tmp_path: Path
) -> None:
    assert sim.services is not None
    message = tmp_path / "mail.eml"
    message.write_bytes(MESSAGE)
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--ssl-reqd",
            f"smtp://127.0.0.1:{sim.port('smtp_starttls')}",
            "--cacert",
            str(sim.services.pki.ca_bundle_path),
            "--mail-from",
            per.address,
            "--mail-rcpt",
            app_box.address,
            "--upload-file",
            str(message),
            "--user",
            per.address,
            "--oauth2-bearer",
            per.token,
            "--login-options",
            "AUTH=XOAUTH2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert len(inbox_raw(sim, app_box.address)) == 1


def test_client_refusing_the_server_certificate_is_recorded(sim: SimulatorController) -> None:
    assert sim.services is not None
    distrustful = ssl.create_default_context(cafile=str(sim.services.pki.foreign_root_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL("127.0.0.1", sim.port("smtps"), context=distrustful, timeout=10)
    assert wait_for_field(sim, "smtps", "tls_error") == "TLSV1_ALERT_UNKNOWN_CA"
    assert "auth_user" not in last_session_fields(sim, "smtps")


def test_mailbox_types_are_checked_at_creation(sim: SimulatorController) -> None:
    assert sim.services is not None
    from simulators.core.store.mail import MailStoreError

    with pytest.raises(MailStoreError, match="not simulated here"):
        sim.services.store.create_mailbox("x@gmail.com", MailboxType.PER)
    sim.services.store.create_mailbox(f"x@{DOMAIN}", MailboxType.ORG)
    with pytest.raises(MailStoreError, match="already exists"):
        sim.services.store.create_mailbox(f"X@{DOMAIN}", MailboxType.PER)


def test_sent_over_smtp_read_back_over_imap_and_isolated_from_others(
    sim: SimulatorController, per: PerBox, app_box: AppBox
) -> None:
    import imaplib

    assert sim.services is not None
    client = starttls(sim)
    client.docmd("AUTH", "XOAUTH2 " + per.xoauth2())
    client.sendmail(per.address, [app_box.address], MESSAGE)
    client.quit()

    ctx = sim.services.pki.client_ssl_context(app_box.creds)
    imap = imaplib.IMAP4("127.0.0.1", sim.port("imap_starttls"), timeout=10)
    imap.starttls(ssl_context=ctx)
    imap.login(app_box.address, "unused")
    imap.select("INBOX")
    _typ, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
    body = data[0][1]  # type: ignore[index]
    assert isinstance(body, bytes) and body.endswith(MESSAGE[MESSAGE.index(b"\r\n\r\n") :])
    imap.logout()

    # The PER mailbox sees nothing of it, and its token cannot open the APP mailbox.
    reader = imaplib.IMAP4("127.0.0.1", sim.port("imap_starttls"), timeout=10)
    reader.starttls(ssl_context=sim.services.pki.client_ssl_context())
    reader.authenticate("XOAUTH2", lambda _: base64.b64decode(per.xoauth2()))
    reader.select("INBOX")
    assert reader.search(None, "ALL")[1] == [b""]
    reader.logout()
    intruder = imaplib.IMAP4("127.0.0.1", sim.port("imap_starttls"), timeout=10)
    intruder.starttls(ssl_context=sim.services.pki.client_ssl_context())
    forged = f"user={app_box.address}\x01auth=Bearer {per.token}\x01\x01".encode()
    with pytest.raises(imaplib.IMAP4.error):
        intruder.authenticate("XOAUTH2", lambda _: forged)
    intruder.logout()


def test_repeated_unknown_commands_end_the_session_with_421(sim: SimulatorController) -> None:
    # The session is closed after 5 unknown commands; RFC 5321 says 421 for that.
    assert sim.services is not None
    ctx = sim.services.pki.client_ssl_context(None)
    raw = socket.create_connection(("127.0.0.1", sim.port("smtps")), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock, sock.makefile("rb") as wire:
        assert wire.readline().startswith(b"220")
        answers = []
        for _ in range(5):
            sock.sendall(b"BDAT 10\r\n")
            answers.append(wire.readline())
        assert [a[:3] for a in answers] == [b"500"] * 4 + [b"421"]
        assert b"Too many unrecognized commands (5), closing the session" in answers[-1]
        assert wire.readline() == b""  # closed by the server
    assert wait_for_field(sim, "smtps", "close_reason") == "too-many-unrecognized-commands"


@pytest.mark.parametrize(
    ("data", "stored"),
    [
        (b"Subject: one line\r\n.\r\n", b"Subject: one line\r\n"),
        (b"\r\n.\r\n", b"\r\n"),  # one empty line
        (b".\r\n", b""),  # nothing at all
        (b"..dot\r\n.\r\n", b".dot\r\n"),  # a stuffed dot on the only line
    ],
)
def test_short_messages_end_at_their_terminator(
    sim: SimulatorController, per: PerBox, data: bytes, stored: bytes
) -> None:
    # The end-of-data scan once missed a terminator whose CRLF ended the message's
    # only line: the session hung until its idle timeout (found by the long fuzz run).
    assert sim.services is not None
    ctx = sim.services.pki.client_ssl_context(None)
    raw = socket.create_connection(("127.0.0.1", sim.port("smtps")), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock, sock.makefile("rb") as wire:

        def cmd(line: bytes) -> bytes:
            sock.sendall(line)
            while True:
                answer = wire.readline()
                if answer[3:4] != b"-":
                    return answer

        assert wire.readline().startswith(b"220")
        assert cmd(b"EHLO lps.example\r\n").startswith(b"250")
        assert cmd(b"AUTH XOAUTH2 " + per.xoauth2().encode() + b"\r\n").startswith(b"235")
        assert cmd(f"MAIL FROM:<{per.address}>\r\n".encode()).startswith(b"250")
        assert cmd(f"RCPT TO:<{per.address}>\r\n".encode()).startswith(b"250")
        assert cmd(b"DATA\r\n").startswith(b"354")
        assert cmd(data).startswith(b"250")
        assert cmd(b"QUIT\r\n").startswith(b"221")
    received = inbox_raw(sim, per.address)
    assert len(received) == 1
    assert received[0].split(b";\r\n\t", 1)[1].split(b"\r\n", 1)[1] == stored
