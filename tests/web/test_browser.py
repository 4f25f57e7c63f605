"""The console in real headless Chromium (Debian's ``chromium``, driven by Playwright).

Chromium trusts exactly the simulator's HTTPS key, not every certificate: it is
started with ``--ignore-certificate-errors-spki-list`` holding the SHA-256 of the
server key's SubjectPublicKeyInfo (no ``ignore_https_errors``). Any other
certificate error still fails the navigation.
"""

from __future__ import annotations

import base64
import email
import hashlib
import imaplib
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from web_helpers import CDA_FIXTURE

from simulators.controller import SimulatorController
from simulators.core.proof import verify_bundle
from simulators.core.store.mail import MailboxType

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
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


@pytest.fixture(scope="module")
def web_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    with SimulatorController(tmp_path_factory.mktemp("browser") / "data") as controller:
        yield controller


def spki_pin(sim: SimulatorController) -> str:
    assert sim.services is not None
    creds = sim.services.pki.server_credentials("valid", sim.endpoints["crl_url"])
    spki = creds.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(web_sim: SimulatorController) -> Iterator[Any]:
    playwright = sync_api.sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_pin(web_sim)}"],
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def base(sim: SimulatorController) -> str:
    return str(sim.endpoints["console_url"]).rstrip("/")


def create(sim: SimulatorController, local: str, type_: str) -> str:
    assert sim.services is not None
    address = f"{local}@{sim.services.domain}"
    sim.services.store.create_mailbox(address, MailboxType(type_), entity="LABO SIMU")
    return address


def app_imap(sim: SimulatorController, address: str) -> imaplib.IMAP4:
    assert sim.services is not None
    box = sim.services.store.get_mailbox(address)
    assert box is not None
    creds = sim.services.pki.client_credentials(box.address, box.entity)
    client = imaplib.IMAP4("127.0.0.1", sim.port("imap_starttls"), timeout=10)
    client.starttls(sim.services.pki.client_ssl_context(creds))
    client.login(address, "unused")
    return client


def test_create_a_mailbox_and_download_its_certificate(
    page: Any, web_sim: SimulatorController
) -> None:
    page.goto(base(web_sim) + "/mailboxes")
    assert "SIMULATION" in page.locator("#disclaimer").inner_text()
    page.fill("#create-mailbox input[name=address]", "labo.browser")
    page.check("#create-mailbox input[value=APP]")
    page.fill("#create-mailbox input[name=entity]", "LABO NAVIGATEUR")
    page.click("#create-mailbox button[type=submit]")
    page.wait_for_url("**/mailboxes/labo.browser@mssante.localhost")
    assert "ORG AUTH_CLI" in page.content()
    with page.expect_download() as info:
        page.click("#download-p12")
    p12 = Path(info.value.path()).read_bytes()
    _key, cert, _chain = pkcs12.load_key_and_certificates(p12, b"segur-sim")
    assert cert is not None and "labo.browser@mssante.localhost" in cert.subject.rfc4514_string()
    page.goto(base(web_sim) + "/mailboxes")
    assert page.locator("#mailboxes", has_text="labo.browser@mssante.localhost").count() == 1


def test_send_from_the_webmail_and_read_it_over_imap(
    page: Any, web_sim: SimulatorController
) -> None:
    sender = create(web_sim, "dr.webmail", "PER")
    rcpt = create(web_sim, "lps.webmail", "APP")
    page.goto(f"{base(web_sim)}/webmail/{sender}/compose")
    page.fill("#compose input[name=to]", rcpt)
    page.fill("#compose input[name=subject]", "Envoi depuis le webmail")
    page.fill("#compose textarea[name=text]", "Bonjour depuis Chromium")
    page.click("#add-header")  # console.js runs under the console's CSP
    rows = page.locator("#extra-headers .header-row")
    assert rows.count() == 2
    rows.nth(0).locator("input[name=header_name]").fill("X-Mss-Test-Id")
    rows.nth(0).locator("input[name=header_value]").fill("WEBMAIL-1")
    page.set_input_files("#compose input[name=attachment]", str(CDA_FIXTURE))
    page.click("#compose button[type=submit]")
    page.wait_for_url("**folder=Sent**")
    assert page.locator("#sent-notice").is_visible()

    client = app_imap(web_sim, rcpt)
    try:
        client.select("INBOX")
        _typ, data = client.uid("SEARCH", "ALL")
        uids = data[0].split()
        assert len(uids) == 1
        _typ, fetched = client.uid("FETCH", uids[0], "(RFC822)")
        first = fetched[0]
        assert isinstance(first, tuple)
        message = email.message_from_bytes(first[1])
    finally:
        client.logout()
    assert message["Subject"] == "Envoi depuis le webmail"
    assert message["X-Mss-Test-Id"] == "WEBMAIL-1"
    assert message["From"] == sender
    names = [part.get_filename() for part in message.walk() if part.get_filename()]
    assert names == [CDA_FIXTURE.name]


def test_validate_an_uploaded_cda(page: Any, web_sim: SimulatorController) -> None:
    page.goto(base(web_sim) + "/validators")
    page.set_input_files("#validate-form input[name=file]", str(CDA_FIXTURE))
    page.click("#validate-form button[type=submit]")
    page.wait_for_url("**/validators/*")
    assert page.locator("#result").inner_text() == "PASSED"
    assert page.locator("#report tr").count() > 1
    assert "SIMULATION" in page.locator("#disclaimer").inner_text()


def test_a_script_in_a_mail_does_not_run(page: Any, web_sim: SimulatorController) -> None:
    assert web_sim.services is not None
    rcpt = create(web_sim, "dr.script", "PER")
    beacon = "/pwned-beacon"
    html = (
        "<html><body><p id='hello'>Bonjour</p>"
        f"<script>alert('html'); document.body.setAttribute('data-pwned', '1');"
        f"fetch('{beacon}?html'); parent.document.title = 'pwned';</script>"
        f"<img src='x' onerror=\"alert('img'); fetch('{beacon}?img')\">"
        "</body></html>"
    )
    text = f"<script>alert('text'); fetch('{beacon}?text')</script>"
    with httpx.Client(verify=web_sim.endpoints["ca_bundle"]) as http:
        response = http.post(
            f"{base(web_sim)}/api/mss/mailboxes/{rcpt}/messages",
            json={"subject": "<script>alert('subject')</script>", "text": text, "html": html},
        )
    assert response.status_code == 201, response.text

    dialogs: list[str] = []
    beacons: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on(
        "request", lambda request: beacons.append(request.url) if beacon in request.url else None
    )
    page.goto(f"{base(web_sim)}/webmail/{rcpt}?folder=INBOX")
    page.click("#messages a")
    page.wait_for_url("**/messages/1**")
    frame_element = page.locator("iframe.mailhtml")
    assert frame_element.get_attribute("sandbox") == ""
    frame = frame_element.element_handle().content_frame()
    assert frame is not None
    frame.wait_for_load_state()
    assert frame.locator("#hello").inner_text() == "Bonjour"  # the HTML is shown...
    assert frame.locator("body").get_attribute("data-pwned") is None  # ...its script did not run
    page.wait_for_timeout(300)
    assert dialogs == [] and beacons == []
    assert page.title() != "pwned"
    assert page.locator("#subject").inner_text() == "<script>alert('subject')</script>"
    assert "<script>alert('text')" in page.locator("pre.mailtext").first.inner_text()


def test_cross_site_forms_and_forged_tokens_are_refused(
    page: Any, web_sim: SimulatorController
) -> None:
    assert web_sim.services is not None
    target = base(web_sim) + "/mailboxes"
    page.goto(target)  # the victim has a console session (its CSRF cookie is set)
    attack = (
        "<html><body><form id='f' method='post' action='" + target + "'>"
        "<input name='address' value='csrf.victim'><input name='type' value='PER'>"
        "<input name='csrf_token' value='guessed'></form>"
        "<script>document.getElementById('f').submit()</script></body></html>"
    )
    page.route(
        "https://attacker.example/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body=attack),
    )
    with page.expect_response(target) as answer:
        page.goto("https://attacker.example/page")
    assert answer.value.status == 403
    assert "cross-site request refused" in page.content()
    assert web_sim.services.store.get_mailbox("csrf.victim@mssante.localhost") is None

    # same origin, but the form's token was tampered with
    page.goto(target)
    page.fill("#create-mailbox input[name=address]", "csrf.tampered")
    page.eval_on_selector("#create-mailbox input[name=csrf_token]", "e => e.value = 'x'.repeat(43)")
    with page.expect_response(target) as tampered:
        page.click("#create-mailbox button[type=submit]")
    assert tampered.value.status == 403
    assert "CSRF token" in page.content()
    assert web_sim.services.store.get_mailbox("csrf.tampered@mssante.localhost") is None


def test_run_a_suite_from_the_runs_page_and_verify_its_proof(
    page: Any, web_sim: SimulatorController, tmp_path: Path
) -> None:
    assert web_sim.services is not None
    mailbox = create(web_sim, "dr.runner", "PER")
    page.goto(base(web_sim) + "/runs")
    form = page.locator("#start-run")
    form.locator("select[name=suite]").select_option("per-org")
    form.locator("select[name=mailbox]").select_option(mailbox)
    form.locator("input[name=nil]").fill("DEV935997")
    form.locator("input[name=tests]").fill("MSS-01, MSS-08")
    form.locator("input[value=reference]").check()
    form.locator("input[name=step_timeout]").fill("20")
    form.locator("input[name=settle]").fill("0.5")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/runs/SIMU-MSS-*")
    run_id = page.locator("#run").get_attribute("data-run-id")
    assert run_id and run_id.startswith("SIMU-MSS-")

    # console.js follows the run until it ends, then shows the proof link
    page.locator("#proof").wait_for(state="visible", timeout=60_000)
    assert page.locator("#run-status").inner_text() == "pass"
    assert page.locator("#run-progress-text").inner_text() == "2 / 2 tests"
    for test_id, requirement in (("MSS-01", "ECO.1.0.1"), ("MSS-08", "ECO.2.4.3")):
        row = page.locator(f"#test-{test_id}")
        assert row.locator(".test-status").inner_text() == "pass"
        assert requirement in row.locator(".requirements").inner_text()
    transcript = page.locator("#test-MSS-01 a.evidence-session").first.get_attribute("href")
    submission = page.locator("#test-MSS-08 a.evidence-submission").first.get_attribute("href")
    assert transcript and submission
    with httpx.Client(verify=web_sim.endpoints["ca_bundle"], base_url=base(web_sim)) as http:
        text = http.get(transcript).text
        assert "STARTTLS" in text and "Bearer" not in text
        assert "X-MSS-NIL: DEV935997" in http.get(submission).text

    with page.expect_download() as info:
        page.click("#proof-link")
    archive = tmp_path / "proof.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unzipped")
    bundle = tmp_path / "unzipped" / run_id
    root = web_sim.services.pki.root_cert_path
    result = verify_bundle(bundle, ca_file=root)
    assert result.ok, result.problems
    if shutil.which("openssl"):
        proc = subprocess.run(
            [
                "openssl", "cms", "-verify", "-binary", "-inform", "DER",
                "-in", str(bundle / "report.json.p7s"), "-content", str(bundle / "report.json"),
                "-CAfile", str(root), "-purpose", "any", "-out", "/dev/null",
            ],
            capture_output=True,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr

    # the run is listed, and the coverage page shows its latest verdicts
    page.goto(base(web_sim) + "/runs")
    assert page.locator(f"#runs tr[data-run-id='{run_id}']", has_text="pass").count() == 1
    page.goto(base(web_sim) + "/runs/coverage")
    row = page.locator("#coverage tr[data-requirement='ECO.1.0.1']")
    assert row.locator(".latest").inner_text() == "pass"
    assert row.locator(f"a[href='/runs/{run_id}']").count() == 1
