"""What ``segur-sim serve`` does, or leaves for later, to be ready quickly.

- RSA keys of a new data directory are generated ahead, in a background thread, and
  each is handed out once;
- a new CRL URL (a new HTTP port) renews the server certificate for the key it has,
  and a torn key file is replaced rather than reused;
- when ``endpoints.json`` appears, every part of the web app answers: console, CNDA,
  Gazelle EVS, conformance runs (what it imports lazily, it imports on a request).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cryptography import x509

from simulators.core.pki import TestPKI, _KeysAhead

DOMAIN = "mssante.localhost"
URL_1 = "http://127.0.0.1:10080/crl/org.crl"
URL_2 = "http://127.0.0.1:20080/crl/org.crl"


def _public(cert: x509.Certificate) -> object:
    return cert.public_key().public_numbers()  # type: ignore[union-attr]


def _crl_urls(cert: x509.Certificate) -> list[str]:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [name.value for point in points for name in point.full_name or ()]


def test_keys_generated_ahead_are_each_handed_out_once() -> None:
    ahead = _KeysAhead()
    ahead.start(3)
    keys = [ahead.take() for _ in range(5)]  # three prepared, two made on demand
    assert len({key.private_numbers().d for key in keys}) == 5
    assert all(key.key_size == 2048 for key in keys)


def test_a_new_crl_url_renews_the_server_certificate_for_its_key(tmp_path: Path) -> None:
    pki = TestPKI.load_or_create(tmp_path / "pki", DOMAIN)
    first = pki.server_credentials("valid", URL_1)
    key_pem = first.key_path.read_bytes()
    second = pki.server_credentials("valid", URL_2)
    assert second.fingerprint != first.fingerprint
    assert _crl_urls(second.cert) == [URL_2]
    assert _public(second.cert) == _public(first.cert)
    assert second.key_path.read_bytes() == key_pem  # kept, not rewritten
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(second.chain_path, second.key_path)
    # Same URL again: nothing is re-issued.
    assert pki.server_credentials("valid", URL_2).fingerprint == second.fingerprint


def test_a_torn_server_key_is_replaced_not_reused(tmp_path: Path) -> None:
    pki = TestPKI.load_or_create(tmp_path / "pki", DOMAIN)
    first = pki.server_credentials("valid", URL_1)
    first.key_path.write_bytes(first.key_path.read_bytes()[:200])  # killed mid-write
    second = pki.server_credentials("valid", URL_2)
    assert _public(second.cert) != _public(first.cert)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(second.chain_path, second.key_path)


def _wait_ready(proc: subprocess.Popen[bytes], endpoints_file: Path) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited before being ready"
        try:
            info = json.loads(endpoints_file.read_text())
        except (OSError, ValueError):
            info = None
        if info and info.get("pid") == proc.pid:
            return info
        time.sleep(0.01)
    raise AssertionError("serve was not ready in 60 s")


def test_every_part_of_the_web_app_answers_when_ready(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        command = [sys.executable, "-m", "simulators", "serve", "--data-dir", str(data_dir)]
        proc = subprocess.Popen(
            [*command, "--port-base", "0", "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        info = _wait_ready(proc, data_dir / "endpoints.json")
        ctx = ssl.create_default_context(cafile=str(info["ca_bundle"]))
        base = str(info["console_url"]).rstrip("/")
        for path, kind in (
            ("/", "text/html"),  # console: templates load on this first page
            ("/runs", "text/html"),  # conformance runs pages
            ("/api/cnda/services", "application/json"),
            ("/evs/rest/validations", ""),
            ("/api/mss/runs", "application/json"),
            ("/healthz", "application/json"),
        ):
            with urllib.request.urlopen(base + path, context=ctx, timeout=30) as response:
                assert response.status == 200, path
                assert response.headers.get("content-type", "").startswith(kind), path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text(errors="replace")
