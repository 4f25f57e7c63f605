"""Headless Chromium for the browser tests (Debian's ``chromium``, driven by Playwright).

Chromium trusts exactly the simulator's HTTPS key, not every certificate: it is started
with ``--ignore-certificate-errors-spki-list`` holding the SHA-256 of the server key's
SubjectPublicKeyInfo (no ``ignore_https_errors``). Any other certificate error still
fails the navigation. The flags are the ones this machine needs: without the
background-networking ones Chromium keeps trying hosts the closed network refuses.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from simulators.controller import SimulatorController

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
requires_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def spki_pin(sim: SimulatorController) -> str:
    assert sim.services is not None
    creds = sim.services.pki.server_credentials("valid", sim.endpoints["crl_url"])
    spki = creds.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextlib.contextmanager
def chromium_for(sim: SimulatorController) -> Iterator[Any]:
    """A Chromium that trusts ``sim``'s HTTPS key and nothing else."""
    sync_api = pytest.importorskip("playwright.sync_api")
    playwright = sync_api.sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_pin(sim)}"],
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@contextlib.contextmanager
def new_tab(browser: Any, **context_options: Any) -> Iterator[Any]:
    context = browser.new_context(**context_options)
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()
