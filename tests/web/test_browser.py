"""The console in real headless Chromium (Debian's ``chromium``, driven by Playwright).

Chromium trusts exactly the simulator's HTTPS key, not every certificate: it is
started with ``--ignore-certificate-errors-spki-list`` holding the SHA-256 of the
server key's SubjectPublicKeyInfo (no ``ignore_https_errors``). Any other
certificate error still fails the navigation.
"""

from __future__ import annotations

import email
import imaplib
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import chromium_for, new_tab, requires_chromium
from cryptography.hazmat.primitives.serialization import pkcs12
from web_helpers import CDA_FIXTURE

from simulators.controller import SimulatorController
from simulators.core.proof import verify_bundle
from simulators.core.store.mail import MailboxType
from simulators.pytest_plugin import SegurMailbox, segur_make_mailbox

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = requires_chromium


@pytest.fixture(scope="module")
def web_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    with SimulatorController(tmp_path_factory.mktemp("browser") / "data") as controller:
        yield controller


@pytest.fixture(scope="module")
def browser(web_sim: SimulatorController) -> Iterator[Any]:
    with chromium_for(web_sim) as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with new_tab(browser, accept_downloads=True) as tab:
        yield tab


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


# ---- a run driven by a person -------------------------------------------------------------------
def start_person_run(page: Any, sim: SimulatorController, mailbox: str, tests: str) -> str:
    page.goto(base(sim) + "/runs")
    form = page.locator("#start-run")
    form.locator("select[name=suite]").select_option("per-org")
    form.locator("select[name=mailbox]").select_option(mailbox)
    form.locator("input[name=nil]").fill("DEV935997")
    form.locator("input[name=tests]").fill(tests)
    form.locator("input[value=person]").check()
    form.locator("input[name=step_timeout]").fill("300")
    form.locator("input[name=settle]").fill("0.5")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/runs/SIMU-MSS-*")
    run_id = page.locator("#run").get_attribute("data-run-id")
    assert run_id and run_id.startswith("SIMU-MSS-")
    assert page.locator("#run").get_attribute("data-live") == "1"
    return str(run_id)


def send_as_the_software(box: SegurMailbox, correspondent: str, nil: str) -> None:
    """The software under test, played by the test: one mail, SMTP 587 STARTTLS XOAUTH2."""
    mail = EmailMessage()
    mail["From"] = box.address
    mail["To"] = correspondent
    mail["Subject"] = "Compte rendu"
    mail["X-MSS-NIL"] = nil
    mail.set_content("Bonjour,\nun message de test.\n", charset="utf-8")
    with box.smtp() as smtp:
        smtp.send_message(mail)


def test_a_person_drives_a_run_and_sees_its_verdict(
    page: Any, web_sim: SimulatorController
) -> None:
    box = segur_make_mailbox(web_sim, "PER", "dr.person")
    run_id = start_person_run(page, web_sim, box.address, "MSS-08")

    # console.js shows the instruction the runner waits on, without a reload
    page.locator("#current-step").wait_for(state="visible")
    assert page.locator("#current-where").inner_text() == "MSS-08 step main (up to 300 s)"
    instruction = page.locator("#instruction").inner_text()
    assert "send one ordinary mail (no attachment)" in instruction
    assert page.locator("#test-MSS-08 .test-status").inner_text() == "running"
    correspondent = page.locator("#correspondent").inner_text()
    assert correspondent.endswith("@mssante.localhost")

    send_as_the_software(box, correspondent, "DEV935997")
    page.locator("#test-MSS-08[data-status=pass]").wait_for(timeout=60_000)
    page.locator("#proof").wait_for(state="visible")
    assert page.locator("#run-status").inner_text() == "pass"
    assert page.locator("#current-step").is_hidden()
    verdict = page.locator("#test-MSS-08 .test-verdict").inner_text()
    assert "X-MSS-NIL" in verdict and "ECO.2.4.3" in verdict
    assert page.locator("#test-MSS-08 a.evidence-submission").count() >= 1
    page.goto(base(web_sim) + "/runs")
    assert page.locator(f"#runs tr[data-run-id='{run_id}']", has_text="pass").count() == 1


def test_cancel_a_waiting_run_from_its_page(
    page: Any, web_sim: SimulatorController, tmp_path: Path
) -> None:
    box = segur_make_mailbox(web_sim, "ORG", "secretariat.cancel")
    run_id = start_person_run(page, web_sim, box.address, "MSS-01, MSS-08")
    page.locator("#current-step").wait_for(state="visible")
    assert page.locator("#current-where").inner_text().startswith("MSS-01 step main")

    page.click("#cancel-run button[type=submit]")
    page.locator("#cancelled-notice").wait_for(state="visible")
    assert page.url.endswith(f"/runs/{run_id}")
    assert page.locator("#run-status").inner_text() == "cancel"
    assert page.locator("#run").get_attribute("data-live") == "0"
    assert page.locator("#cancel-run").count() == 0
    assert page.locator("#test-MSS-01 .test-status").inner_text() == "cancel"
    assert "run cancelled while the runner waited for step main" in (
        page.locator("#test-MSS-01 .test-verdict").inner_text()
    )
    assert page.locator("#test-MSS-08 .test-status").inner_text() == "omit"

    with page.expect_download() as info:
        page.click("#proof-link")
    archive = tmp_path / "proof.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unzipped")
    bundle = tmp_path / "unzipped" / run_id
    checked = subprocess.run(
        [sys.executable, "-m", "simulators", "proof", "verify", str(bundle),
         "--data-dir", str(web_sim.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"VALID: {bundle}")
    assert "This run was CANCELLED" in (bundle / "report.html").read_text()
    assert "from the console" in (bundle / "report.html").read_text()


def test_delete_a_mailbox_from_its_page(page: Any, web_sim: SimulatorController) -> None:
    assert web_sim.services is not None
    address = create(web_sim, "dr.todelete", "PER")
    page.goto(f"{base(web_sim)}/mailboxes/{address}")
    answers = iter([False, True])  # first "Cancel" in the confirmation, then "OK"
    questions: list[str] = []

    def on_dialog(dialog: Any) -> None:
        questions.append(dialog.message)
        if next(answers):
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    page.click("#delete-mailbox button[type=submit]")
    assert questions == [f"Delete {address} and every message in it? This cannot be undone."]
    assert page.url.endswith(f"/mailboxes/{address}")
    assert web_sim.services.store.get_mailbox(address) is not None

    page.click("#delete-mailbox button[type=submit]")
    page.wait_for_url("**/mailboxes?deleted=*")
    assert f"Deleted {address}" in page.locator("#deleted-notice").inner_text()
    assert web_sim.services.store.get_mailbox(address) is None
    assert page.locator("#mailboxes", has_text=address).count() == 0
