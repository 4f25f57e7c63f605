"""Real mail clients against the IMAP server: curl and fetchmail (Debian packages).

CI installs them (``apt-get install -y curl fetchmail``); a test skips only when its
binary is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_harness import ImapHarness, harness_fixture

MESSAGE = (
    b"From: Dr Martin <dr.martin@mssante.localhost>\r\n"
    b"Subject: compte-rendu\r\n"
    b"Message-ID: <client-test@lps.example>\r\n"
    b"\r\n"
    b"Bonjour depuis le simulateur\r\n"
)


@pytest.fixture(scope="module")
def h(tmp_path_factory: Any) -> Iterator[ImapHarness]:
    yield from harness_fixture(tmp_path_factory)


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (CI installs it with apt-get)")
    return path


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=60, check=False, **kwargs)


def test_curl_reads_an_app_mailbox_over_imaps_with_client_certificate(h: ImapHarness) -> None:
    curl = need("curl")
    box = h.app()
    h.deliver(box.address, MESSAGE)
    base = [
        curl,
        "-sS",
        "--cacert",
        str(h.services.pki.ca_bundle_path),
        "--cert",
        str(box.creds.chain_path),
        "--key",
        str(box.creds.key_path),
        "-u",
        f"{box.address}:x",
    ]
    listing = run([*base, f"imaps://127.0.0.1:{h.imaps_port}/"])
    assert listing.returncode == 0, listing.stderr
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in listing.stdout
    assert b"\\Sent" in listing.stdout
    fetched = run([*base, f"imaps://127.0.0.1:{h.imaps_port}/INBOX;UID=1"])
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == MESSAGE
    rec = h.session_of(box.address)
    assert rec.get("sasl_mechanism") == "PLAIN" and rec.get("auth_ok") is True
    assert "ORG AUTH_CLI" in rec.get("client_cert_subject", "")


def test_curl_without_client_certificate_is_refused(h: ImapHarness) -> None:
    curl = need("curl")
    box = h.app()
    result = run(
        [
            curl,
            "-sS",
            "--cacert",
            str(h.services.pki.ca_bundle_path),
            "-u",
            f"{box.address}:x",
            f"imaps://127.0.0.1:{h.imaps_port}/INBOX;UID=1",
        ]
    )
    assert result.returncode == 67, result  # CURLE_LOGIN_DENIED
    rec = [s for s in h.sessions("imaps") if s.get("auth_user") == box.address][-1]
    assert "no client certificate" in rec.get("auth_error", "")


def test_curl_reads_a_per_mailbox_over_starttls_with_xoauth2(h: ImapHarness) -> None:
    curl = need("curl")
    box = h.per()
    h.deliver(box.address, MESSAGE)
    result = run(
        [
            curl,
            "-sS",
            "--ssl-reqd",
            "--cacert",
            str(h.services.pki.ca_bundle_path),
            "--login-options",
            "AUTH=XOAUTH2",
            "--oauth2-bearer",
            box.token,
            "-u",
            f"{box.address}:",
            f"imap://127.0.0.1:{h.starttls_port}/INBOX;UID=1",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == MESSAGE
    rec = h.session_of(box.address)
    assert rec.get("starttls") is True and rec.get("sasl_mechanism") == "XOAUTH2"
    assert rec.get("sasl_ir") is True  # curl uses SASL-IR when advertised
    assert box.token not in h.transcript(rec)


def test_fetchmail_fetches_from_an_app_mailbox(h: ImapHarness, tmp_path: Path) -> None:
    fetchmail = need("fetchmail")
    box = h.app()
    h.deliver(box.address, MESSAGE)
    out = tmp_path / "delivered.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 service {h.imaps_port} protocol IMAP auth password\n"
        f'  user "{box.address}" password "x" is "tester" here\n'
        f'  ssl sslcommonname "localhost" sslcertck'
        f' sslcertfile "{h.services.pki.ca_bundle_path}"\n'
        f'  sslcert "{box.creds.chain_path}" sslkey "{box.creds.key_path}"\n'
        "  keep fetchall\n"
        f"  mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)  # fetchmail refuses a readable run-control file
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    result = run([fetchmail, "--nodetach", "-f", str(rc)], env=env)
    assert result.returncode == 0, result.stderr.decode()
    delivered = out.read_bytes()
    assert b"Subject: compte-rendu" in delivered
    assert b"Bonjour depuis le simulateur" in delivered
    rec = h.session_of(box.address)
    assert rec.get("sasl_mechanism") == "LOGIN" and rec.get("auth_ok") is True
    assert rec.get("close_reason") == "client-logout"
    # fetchmail marked it \Seen once delivered
    store = h.services.store
    folder = store.get_folder(box.mailbox.id, "INBOX")
    assert folder is not None
    assert "\\Seen" in store.list_uids(folder.id)[0][1]
