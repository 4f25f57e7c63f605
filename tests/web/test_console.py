"""The web console over HTTP (TestClient): pages, CSRF, upload limits, webmail, CNDA.

The browser tests (test_browser.py) drive the same pages in Chromium; these cover the
rules one by one, quickly.
"""

from __future__ import annotations

import base64
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from web_helpers import CDA_FIXTURE, DOMAIN, Console, build_app

from simulators import DISCLAIMER
from simulators.core import proof
from simulators.core.store.mail import Mailbox
from simulators.interop.xds.xdm import build_xdm
from simulators.mss.services import MssServices
from simulators.web.security import CSRF_COOKIE

API = "/api/mss/mailboxes"


def send(console: Console, to: str, **body: object) -> dict[str, object]:
    response = console.http.post(f"{API}/{to}/messages", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


def last_uid(console: Console, address: str, folder: str = "INBOX") -> int:
    listing = console.http.get(f"{API}/{address}/messages", params={"folder": folder}).json()
    return int(listing["messages"][0]["uid"])


# ---- layout -----------------------------------------------------------------------------------
def test_every_page_carries_the_disclaimer_and_a_strict_csp(
    console: Console, new_box: object
) -> None:
    box: Mailbox = new_box()  # type: ignore[operator]
    pages = [
        "/",
        "/mailboxes",
        f"/mailboxes/{box.address}",
        f"/webmail/{box.address}",
        f"/webmail/{box.address}/compose",
        "/validators",
        "/cnda",
        "/cnda/agent",
        "/runs",
        "/runs/coverage",
    ]
    for url in pages:
        response = console.http.get(url)
        assert response.status_code == 200, url
        assert DISCLAIMER in response.text, url
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, url
        assert "<script>" not in response.text  # scripts only from /static
    runs = console.http.get("/runs").text
    # without a running simulator (no RunService) the page says how to start a run
    assert 'id="runs-unavailable"' in runs and "segur-sim mss run" in runs
    coverage = console.http.get("/runs/coverage").text
    assert 'id="coverage"' in coverage and "ECO.1.0.1" in coverage
    assert console.http.get("/runs/SIMU-MSS-20000101-0001").status_code == 404
    refused = console.post_form("/runs", {"suite": "per-org", "mailbox": box.address, "nil": "X"})
    assert refused.status_code == 409 and "segur-sim serve" in refused.text
    assert console.http.post("/runs", data={"suite": "per-org"}).status_code == 403  # no token


def test_the_console_is_https_only(web_services: MssServices) -> None:
    from fastapi.testclient import TestClient

    plain = TestClient(build_app(web_services), base_url="http://testserver")
    response = plain.get("/mailboxes?x=1", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "https://127.0.0.1:10443/mailboxes?x=1"
    refused = plain.post("/mailboxes", data={"address": "a", "type": "PER"})
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/json"
    # The API and the other simulators' routes stay on both ports.
    assert plain.get("/healthz").status_code == 200


# ---- mailboxes -----------------------------------------------------------------------------
def test_create_mailboxes_of_each_type_and_download_the_app_certificate(
    console: Console, web_services: MssServices
) -> None:
    for type_, local in (("PER", "dr.console"), ("ORG", "service.console"), ("APP", "app.console")):
        created = console.post_form(
            "/mailboxes",
            {"address": local, "type": type_, "entity": "CH SIMU"},
            follow_redirects=False,
        )
        assert created.status_code == 303, created.text
        assert created.headers["location"] == f"/mailboxes/{local}@{DOMAIN}"
        box = web_services.store.get_mailbox(f"{local}@{DOMAIN}")
        assert box is not None and box.type.value == type_
    listing = console.http.get("/mailboxes").text
    assert f"app.console@{DOMAIN}" in listing and f"dr.console@{DOMAIN}" in listing

    page = console.http.get(f"/mailboxes/app.console@{DOMAIN}").text
    assert 'id="download-p12"' in page and "ORG AUTH_CLI" in page
    p12 = console.http.get(f"{API}/app.console@{DOMAIN}/certificate.p12")
    assert p12.status_code == 200 and p12.headers["content-type"] == "application/x-pkcs12"
    key, cert, _chain = pkcs12.load_key_and_certificates(p12.content, b"segur-sim")
    assert key is not None and cert is not None
    assert f"app.console@{DOMAIN}" in cert.subject.rfc4514_string()

    duplicate = console.post_form("/mailboxes", {"address": "dr.console", "type": "PER"})
    assert duplicate.status_code == 422 and "already exists" in duplicate.text
    foreign = console.post_form("/mailboxes", {"address": "x@example.org", "type": "PER"})
    assert foreign.status_code == 422 and "not simulated here" in foreign.text


def test_psc_token_from_the_console_is_a_valid_token(
    console: Console, web_services: MssServices, new_box: object
) -> None:
    box: Mailbox = new_box("ORG")  # type: ignore[operator]
    page = console.post_form(f"/mailboxes/{box.address}/token")
    assert page.status_code == 200
    match = re.search(
        r'<textarea readonly rows="5" id="access-token">([^<]+)</textarea>', page.text
    )
    assert match
    info = web_services.psc.validate(match.group(1), box)
    assert info.subject == web_services.psc.subject_for(box)


def test_delete_a_mailbox_from_its_page(
    console: Console, web_services: MssServices, new_box: object
) -> None:
    box: Mailbox = new_box()  # type: ignore[operator]
    send(console, box.address, subject="avant", text="Bonjour")
    page = console.http.get(f"/mailboxes/{box.address}").text
    assert 'id="delete-mailbox"' in page and f'action="/mailboxes/{box.address}/delete"' in page
    # no token, no deletion
    assert console.http.post(f"/mailboxes/{box.address}/delete").status_code == 403
    assert web_services.store.get_mailbox(box.address) is not None

    done = console.post_form(f"/mailboxes/{box.address}/delete", follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"/mailboxes?deleted={box.address}"
    assert web_services.store.get_mailbox(box.address) is None
    listing = console.http.get(done.headers["location"]).text
    assert 'id="deleted-notice"' in listing and f"Deleted {box.address}" in listing
    assert f'href="/mailboxes/{box.address}"' not in listing
    again = console.post_form(f"/mailboxes/{box.address}/delete")
    assert again.status_code == 404
    assert again.json() == {"detail": f"unknown mailbox {box.address}"}
    # the notice is only shown for a mailbox that is really gone
    other: Mailbox = new_box()  # type: ignore[operator]
    spoofed = console.http.get(f"/mailboxes?deleted={other.address}").text
    assert 'id="deleted-notice"' not in spoofed


# ---- CSRF ------------------------------------------------------------------------------------
def test_csrf_token_is_required_on_every_state_changing_console_route(
    console: Console, new_box: object
) -> None:
    box: Mailbox = new_box()  # type: ignore[operator]
    console.token  # noqa: B018 - the session cookie is set
    assert console.http.cookies.get(CSRF_COOKIE)
    routes = [
        "/mailboxes",
        f"/mailboxes/{box.address}/token",
        f"/mailboxes/{box.address}/delete",
        f"/webmail/{box.address}/compose",
        f"/webmail/{box.address}/messages/1/validate",
        "/validators",
        "/cnda/editors",
        "/cnda/editors/SIMU-NIE-X/software",
        "/cnda/editors/SIMU-NIE-X/requests",
        "/cnda/requests/R/documents",
        "/cnda/requests/R/proofs",
        "/cnda/requests/R/actions",
        "/cnda/requests/R/agent-run",
    ]
    for url in routes:
        missing = console.http.post(url, data={"address": "a", "type": "PER"})
        assert missing.status_code == 403, url
        assert "CSRF" in missing.json()["detail"], url
        wrong = console.http.post(url, data={"csrf_token": "x" * 43})
        assert wrong.status_code == 403, url
    # the header form of the token works (for scripts)
    ok = console.http.post(
        "/mailboxes",
        data={"address": "via.header", "type": "PER"},
        headers={"X-CSRF-Token": console.token},
        follow_redirects=False,
    )
    assert ok.status_code == 303


def test_cross_origin_requests_are_refused_even_with_the_token(console: Console) -> None:
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        response = console.post_form(
            "/mailboxes", {"address": "evil", "type": "PER"}, headers=headers
        )
        assert response.status_code == 403, headers
        api = console.http.post(
            API, json={"address": f"evil@{DOMAIN}", "type": "PER"}, headers=headers
        )
        assert api.status_code == 403, headers
        assert api.headers["content-type"] == "application/json"
    same = console.post_form(
        "/mailboxes",
        {"address": "same.origin", "type": "PER"},
        headers={"Origin": "https://testserver", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert same.status_code == 303


# ---- upload limits and JSON errors ----------------------------------------------------------
@pytest.fixture(scope="module")
def small(web_services: MssServices) -> Console:
    return Console(build_app(web_services, max_upload_bytes=4096))


def test_uploads_over_the_limit_get_413_json(small: Console, new_box: object) -> None:
    box: Mailbox = new_box()  # type: ignore[operator]
    big = b"x" * 10_000
    for response in (
        small.post_form("/validators", files={"file": ("big.xml", big)}),
        small.http.post("/api/validations", files={"file": ("big.xml", big)}),
        small.http.post(f"{API}/{box.address}/messages", json={"text": "y" * 10_000}),
        small.post_form(
            f"/webmail/{box.address}/compose",
            {"to": box.address},
            files={"attachment": ("a.bin", big)},
        ),
    ):
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/json"
        assert "limit" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"text": "'
        for _ in range(10):
            yield b"z" * 1000
        yield b'"}'

    streamed = small.http.post(
        f"{API}/{box.address}/messages",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert streamed.status_code == 413 and streamed.json()["detail"]
    assert (
        small.http.post(
            "/api/validations", files={"file": ("ok.xml", CDA_FIXTURE.read_bytes()[:3000])}
        ).status_code
        == 201
    )


def test_errors_are_json_never_a_stack_trace(console: Console) -> None:
    cases = [
        ("GET", "/no/such/page", None, 404),
        ("GET", "/api/mss/nothing", None, 404),
        ("DELETE", API, None, 405),
        ("PUT", "/validators", None, 405),
        ("POST", API, {"address": 5}, 422),
        ("POST", API, {"address": f"a@{DOMAIN}", "type": "NOPE"}, 422),
        ("GET", f"{API}/nobody@{DOMAIN}/messages", None, 404),
        ("GET", f"{API}/nobody@{DOMAIN}/messages/abc", None, 422),
        ("POST", f"{API}/nobody@{DOMAIN}/token", None, 404),
        ("GET", "/webmail/nobody@x/messages/1", None, 404),
        ("GET", "/validators/1.2.3", None, 404),
        ("GET", "/cnda/editors/SIMU-NIE-NONE", None, 404),
    ]
    for method, url, body, status in cases:
        response = console.http.request(method, url, json=body)
        assert response.status_code == status, (method, url, response.text)
        assert response.headers["content-type"] == "application/json", url
        assert "detail" in response.json()
        assert "Traceback" not in response.text
    allow = console.http.delete(API).headers["allow"]
    assert set(allow.split(", ")) == {"GET", "POST"}
    garbage = console.http.post(
        API, content=b"\xff\xfe{not json", headers={"Content-Type": "application/json"}
    )
    assert garbage.status_code in (400, 422)
    assert garbage.headers["content-type"] == "application/json"


# ---- webmail ---------------------------------------------------------------------------------
def test_compose_delivers_through_the_store_and_is_recorded(
    console: Console, web_services: MssServices, new_box: object
) -> None:
    sender: Mailbox = new_box("APP")  # type: ignore[operator]
    rcpt: Mailbox = new_box()  # type: ignore[operator]
    sent = console.post_form(
        f"/webmail/{sender.address}/compose",
        {
            "to": f"{rcpt.address}, someone@example.org",
            "subject": "Résultats",
            "text": "Bonjour",
            "header_name": "X-Mss-Test-Case",
            "header_value": "MSS-1",
        },
        files={"attachment": ("CR.xml", CDA_FIXTURE.read_bytes(), "text/xml")},
        follow_redirects=False,
    )
    assert sent.status_code == 303, sent.text
    assert "folder=Sent" in sent.headers["location"]
    inbox = console.http.get(f"{API}/{rcpt.address}/messages").json()
    assert inbox["total"] == 1 and inbox["messages"][0]["subject"] == "Résultats"
    parsed = console.http.get(f"{API}/{rcpt.address}/messages/{inbox['messages'][0]['uid']}")
    body = parsed.json()
    assert body["mss_headers"] == [{"name": "X-Mss-Test-Case", "value": "MSS-1"}]
    assert [p["filename"] for p in body["parts"]] == [None, "CR.xml"]
    assert body["text"][0]["text"].strip() == "Bonjour"
    assert any(h["name"] == "Received" and "segur-sim" in h["value"] for h in body["headers"])
    assert console.http.get(f"{API}/{sender.address}/messages?folder=Sent").json()["total"] == 1
    subs = console.http.get("/api/mss/submissions", params={"mailbox": sender.address}).json()
    assert subs[-1]["local_rcpts"] == [rcpt.address]
    assert subs[-1]["outbound_rcpts"] == ["someone@example.org"]
    web_services.recorder.flush()
    row = web_services.db.read_one(
        "SELECT protocol, fields FROM wire_sessions WHERE id = ?", (subs[-1]["session_id"],)
    )
    assert row is not None and row["protocol"] == "webmail"
    assert sender.address in row["fields"]

    unknown = console.post_form(
        f"/webmail/{sender.address}/compose", {"to": f"ghost@{DOMAIN}", "text": "x"}
    )
    assert unknown.status_code == 422 and "no such test mailbox" in unknown.text


def test_message_view_escapes_mail_content_and_highlights_mss_headers(
    console: Console, new_box: object
) -> None:
    box: Mailbox = new_box()  # type: ignore[operator]
    send(
        console,
        box.address,
        subject="<script>alert('subject')</script>",
        text="<script>alert('text')</script> <img src=x onerror=alert(1)>",
        html="<p>Hi</p><script>alert('html')</script><img src=x onerror=alert(2)>",
        headers={"X-MSS-Acknowledgement": "<b>bold</b>"},
    )
    uid = last_uid(console, box.address)
    page = console.http.get(f"/webmail/{box.address}/messages/{uid}")
    assert page.status_code == 200
    text = page.text
    assert "<script>alert" not in text, text
    assert "<img src=x" not in text
    assert "&lt;script&gt;alert(&#39;text&#39;)&lt;/script&gt;" in text
    assert "<mark>X-MSS-Acknowledgement</mark>" in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert '<iframe class="mailhtml" sandbox=""' in text
    assert 'id="mime-tree"' in text and "multipart/alternative" in text
    frame_src = re.search(r'src="(/webmail/[^"]+/html/[^"]+)"', text)
    assert frame_src
    frame = console.http.get(frame_src.group(1).replace("&amp;", "&"))
    assert frame.status_code == 200
    csp = frame.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    raw = console.http.get(f"{API}/{box.address}/messages/{uid}/raw")
    assert (
        raw.headers["content-type"] == "message/rfc822" and b"X-MSS-Acknowledgement" in raw.content
    )


def test_xdm_attachment_is_listed_and_validated_in_one_click(
    console: Console, new_box: object
) -> None:
    box: Mailbox = new_box("APP")  # type: ignore[operator]
    xdm = build_xdm([CDA_FIXTURE.read_bytes()])
    send(
        console,
        box.address,
        subject="CR de biologie",
        text="Voir IHE_XDM.ZIP",
        attachments=[
            {
                "filename": "IHE_XDM.ZIP",
                "content_type": "application/zip",
                "content_base64": base64.b64encode(xdm).decode(),
            }
        ],
    )
    uid = last_uid(console, box.address)
    page = console.http.get(f"/webmail/{box.address}/messages/{uid}").text
    assert "IHE_XDM/SUBSET01/METADATA.XML" in page and "Validate as IHE XDM" in page
    assert "IHE_XDM/SUBSET01/DOC0001.XML" in page
    report = console.post_form(
        f"/webmail/{box.address}/messages/{uid}/validate", {"folder": "INBOX", "section": "2"}
    )
    assert report.status_code == 200 and str(report.url).split("/validators/")[1]
    assert 'id="result"' in report.text and "IHE_XDM.ZIP" in report.text
    entry = console.post_form(
        f"/webmail/{box.address}/messages/{uid}/validate",
        {"folder": "INBOX", "section": "2", "entry": "IHE_XDM/SUBSET01/DOC0001.XML"},
    )
    assert entry.status_code == 200
    assert re.search(r'id="result" class="result result-passed">PASSED<', entry.text)


# ---- validators -----------------------------------------------------------------------------
def test_validator_upload_gives_a_report(console: Console) -> None:
    good = console.post_form(
        "/validators", {"kind": "auto"}, files={"file": ("cr-bio.xml", CDA_FIXTURE.read_bytes())}
    )
    assert good.status_code == 200
    assert re.search(r'id="result" class="result result-passed">PASSED<', good.text)
    oid = str(good.url).rsplit("/", 1)[1]
    assert console.http.get(f"/evs/rest/validations/{oid}/report").status_code == 200
    html = console.http.get(f"/api/validations/{oid}/report.html")
    assert "sandbox" in html.headers["content-security-policy"]
    bad = console.post_form(
        "/validators", {"kind": "cda"}, files={"file": ("bad.xml", b"<ClinicalDocument/>")}
    )
    assert re.search(r'id="result" class="result result-failed">FAILED<', bad.text)
    assert int(re.search(r'id="errors">(\d+)<', bad.text).group(1)) > 0  # type: ignore[union-attr]


# ---- CNDA -------------------------------------------------------------------------------------
def test_cnda_editor_and_agent_views(console: Console) -> None:
    editor = console.post_form(
        "/cnda/editors", {"name": "Éditeur Console", "contact_email": "qa@example.test"}
    )
    assert editor.status_code == 200 and "Editor view" in editor.text
    nie = str(editor.url).rsplit("/", 1)[1]
    software = console.post_form(
        f"/cnda/editors/{nie}/software", {"name": "DPI Console", "version": "1.0"}
    )
    nil = re.search(r"<code>(SIMU-NIL-[A-Z0-9]+)</code>", software.text).group(1)  # type: ignore[union-attr]
    opened = console.post_form(
        f"/cnda/editors/{nie}/requests",
        {
            "service": "DMP",
            "nil": nil,
            "dim:DMP:profiles": "consultation",
            "dim:DMP:auth_modes": "indirecte-certificat-es",
        },
    )
    assert opened.status_code == 200, opened.text
    assert 'id="portal-status"' in opened.text and "Initialisation" in opened.text
    request_id = str(opened.url).split("/cnda/requests/")[1].split("?")[0]

    agent_list = console.http.get("/cnda/agent").text
    assert request_id in agent_list
    too_early = console.post_form(
        f"/cnda/requests/{request_id}/actions", {"role": "agent", "action": "send-test-plan"}
    )
    assert too_early.status_code == 422 and "contract_request" in too_early.text
    for doc_type in ("contract_request", "signed_conditions"):
        deposited = console.post_form(
            f"/cnda/requests/{request_id}/documents",
            {"doc_type": doc_type},
            files={"file": (f"{doc_type}.pdf", b"%PDF-1.4 simulated")},
        )
        assert deposited.status_code == 200 and doc_type in deposited.text
    sent = console.post_form(
        f"/cnda/requests/{request_id}/actions", {"role": "agent", "action": "send-test-plan"}
    )
    assert sent.status_code == 200 and "En cours actif" in sent.text
    agent_page = console.http.get(f"/cnda/requests/{request_id}?role=agent").text
    assert "Agent view" in agent_page and 'id="agent-run"' in agent_page
    # the editor may not act as the agent
    refused = console.post_form(
        f"/cnda/requests/{request_id}/actions", {"role": "editor", "action": "validate"}
    )
    assert refused.status_code == 422


def test_run_pages_escape_verdicts_and_link_evidence(
    console: Console, web_services: MssServices
) -> None:
    import asyncio

    from simulators.core.verdict import Evidence, Status, Verdict
    from simulators.mss.conformance.runs import RunRecord, RunRepository, StepResult, TestResult

    hostile = "<script>alert('verdict')</script>"
    verdict = Verdict(
        Status.FAIL,
        hostile,
        expected="X-MSS-NIL: DEV1",
        observed=hostile,
        evidence=[Evidence("session", "smtp-<x>", "the session"), Evidence("submission", "7")],
        requirements=("ECO.2.4.3",),
    )
    step = StepResult("1", "none", "send-mail", hostile, Status.FAIL, verdict)
    test = TestResult("MSS-08", "X-MSS-NIL", "title", ("ECO.2.4.3",), [step], Status.FAIL, verdict)
    run = RunRecord(
        "SIMU-MSS-20000101-0042", "per-org", "MSS-LPS", "a@b", "PER", hostile, "scripted", [test]
    )
    run.ended_at, run.status = run.started_at + 1, Status.FAIL
    asyncio.run(RunRepository(web_services.db).save(run))

    page = console.http.get(f"/runs/{run.run_id}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text
    assert 'data-live="0"' in page.text
    assert 'href="/api/mss/sessions/smtp-%3Cx%3E/transcript"' in page.text
    assert 'href="/api/mss/submissions/7/message"' in page.text
    listing = console.http.get("/runs").text
    assert run.run_id in listing and "<script>alert" not in listing


def cnda_dossier_in_pre_examen(console: Console, editor_name: str) -> str:
    """A DMP dossier (consultation, indirect ES certificate) with its test plan sent."""
    editor = console.post_form("/cnda/editors", {"name": editor_name, "contact_email": ""})
    nie = str(editor.url).rsplit("/", 1)[1]
    software = console.post_form(
        f"/cnda/editors/{nie}/software", {"name": "DPI Couverture", "version": "2.0"}
    )
    nil = re.search(r"<code>(SIMU-NIL-[A-Z0-9]+)</code>", software.text).group(1)  # type: ignore[union-attr]
    opened = console.post_form(
        f"/cnda/editors/{nie}/requests",
        {
            "service": "DMP",
            "nil": nil,
            "dim:DMP:profiles": "consultation",
            "dim:DMP:auth_modes": "indirecte-certificat-es",
        },
    )
    request_id = str(opened.url).split("/cnda/requests/")[1].split("?")[0]
    assert 'id="test-plan"' not in opened.text and "Not sent yet" in opened.text
    for doc_type in ("contract_request", "signed_conditions"):
        console.post_form(
            f"/cnda/requests/{request_id}/documents",
            {"doc_type": doc_type},
            files={"file": (f"{doc_type}.pdf", b"%PDF-1.4 simulated")},
        )
    sent = console.post_form(
        f"/cnda/requests/{request_id}/actions", {"role": "agent", "action": "send-test-plan"}
    )
    assert sent.status_code == 200 and "En cours actif" in sent.text
    return request_id


def plan_rows(page: str) -> dict[str, tuple[str, str]]:
    """Each test-plan row of the request page: case ID -> (coverage, proofs cell)."""
    table = page.split('id="test-plan"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(
        r'<tr data-case="([^"]+)">.*?<td class="coverage coverage-(\w+)">\2</td>\s*'
        r'<td class="case-proofs">(.*?)</td></tr>',
        table,
        re.S,
    )
    return {case: (status, proofs) for case, status, proofs in rows}


def zipped_bundle(bundle: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                zf.write(path, f"{bundle.name}/{path.relative_to(bundle).as_posix()}")
    return buffer.getvalue()


def test_cnda_request_page_shows_plan_coverage_and_declares_cases(
    console: Console, web_services: MssServices, tmp_path: Path
) -> None:
    request_id = cnda_dossier_in_pre_examen(console, "Éditeur Couverture")
    page = console.http.get(f"/cnda/requests/{request_id}?role=editor").text
    cases = ["0.1-210", "0.2-100", "3.1-100", "3.2-100"]
    assert plan_rows(page) == {c: ("uncovered", "-") for c in cases}
    assert '<strong id="coverage-count">0/4</strong>' in page
    assert re.search(
        r'id="coverage-not-passed">' + ", ".join(f"<code>{c}</code>" for c in cases), page
    )
    # the deposit form offers the plan's case IDs
    form = page.split('id="deposit-proof"', 1)[1].split("</form>", 1)[0]
    assert re.findall(r'name="cases" value="([^"]+)"', form) == cases
    assert "No proof yet." in page.split('id="proofs"', 1)[1]
    # the agent is told what validating an incomplete plan means
    agent = console.http.get(f"/cnda/requests/{request_id}?role=agent").text
    note = re.search(r'id="validate-coverage-note">(.*?)</small>', agent, re.S)
    assert note and "0/4 cases passed" in note.group(1)
    assert "validating records the incomplete coverage in the event" in note.group(1)
    assert 'id="deposit-proof"' not in agent

    # a case outside the plan: the page says why (422), nothing is recorded
    refused = console.post_form(
        f"/cnda/requests/{request_id}/proofs",
        {"cases": ["0.1-210", "9.9-999"]},
        files={"file": ("captures.pdf", b"%PDF-1.4 captures")},
    )
    assert refused.status_code == 422
    assert re.search(r'<p class="error" role="alert">not cases of ' + request_id, refused.text)
    assert "9.9-999" in refused.text and "No proof yet." in refused.text
    kept = refused.text.split('id="deposit-proof"', 1)[1].split("</form>", 1)[0]
    assert 'value="0.1-210" checked' in kept  # the form keeps the editor's choice
    assert plan_rows(refused.text)["0.1-210"] == ("uncovered", "-")

    # a file declaring a case (a hostile file name stays text)
    hostile = "<img src=x onerror=alert(1)>.pdf"
    declared = console.post_form(
        f"/cnda/requests/{request_id}/proofs",
        {"cases": "0.1-210"},
        files={"file": (hostile, b"%PDF-1.4 captures DMP")},
    )
    assert declared.status_code == 200, declared.text
    assert "<img src=x" not in declared.text
    escaped = "&lt;img src=x onerror=alert(1)&gt;.pdf"
    rows = plan_rows(declared.text)
    assert rows["0.1-210"] == ("declared", f"{escaped} <small>(declared)</small>")
    assert rows["0.2-100"] == ("uncovered", "-")
    assert '<strong id="coverage-count">0/4</strong>' in declared.text
    proofs = declared.text.split('id="proofs"', 1)[1].split("</table>", 1)[0]
    assert re.search(
        r"<td>" + re.escape(escaped) + r"</td><td>-</td>\s*<td class=\"covered-cases\">"
        r'<code>0.1-210</code> <span class="coverage coverage-declared">declared</span></td>',
        proofs,
    )

    # a signed bundle naming a case passes it: the count and the list change
    bundle = proof.write_bundle(
        tmp_path / "bundle",
        kind="interop",
        predicate={"result": "PASSED", "passedTests": ["0.2-100"], "failedTests": []},
        artefacts={"transcript.txt": b"DMP 0.2-100\r\n"},
        html="<p>0.2-100</p>",
        pki=web_services.pki,
        run_id="console-coverage",
    )
    verified = console.post_form(
        f"/cnda/requests/{request_id}/proofs",
        files={"file": ("dmp-0.2-100.zip", zipped_bundle(bundle), "application/zip")},
    )
    assert verified.status_code == 200, verified.text
    rows = plan_rows(verified.text)
    assert rows["0.2-100"] == ("passed", "dmp-0.2-100.zip <small>(passed)</small>")
    assert '<strong id="coverage-count">1/4</strong>' in verified.text
    not_passed = re.search(r'id="coverage-not-passed">(.*?)</span>', verified.text)
    assert not_passed and "0.2-100" not in not_passed.group(1) and "0.1-210" in not_passed.group(1)
    assert re.search(
        r'<td>dmp-0.2-100.zip</td><td>PASSED</td>\s*<td class="covered-cases"><code>0.2-100</code>'
        r' <span class="coverage coverage-passed">passed</span></td>',
        verified.text,
    )
    listing = console.http.get("/cnda/agent").text
    row = listing.split(request_id, 2)[2].split("</tr>", 1)[0]
    assert '<td class="plan-coverage">1/4 passed</td>' in row

    # the agent validates anyway: the event records the incomplete coverage
    agent = console.http.get(f"/cnda/requests/{request_id}?role=agent").text
    assert "1/4 cases passed; not passed: 0.1-210, 3.1-100, 3.2-100" in agent
    validated = console.post_form(
        f"/cnda/requests/{request_id}/actions", {"role": "agent", "action": "validate"}
    )
    assert validated.status_code == 200 and 'id="validate-coverage-note"' not in validated.text
    events = console.http.get(f"/api/cnda/requests/{request_id}/events").json()
    event = next(e for e in events if e["action"] == "validate")
    assert event["data"]["coverage"]["complete"] is False
    assert event["data"]["coverage"]["passed"] == ["0.2-100"]
    assert event["data"]["coverage"]["declared"] == ["0.1-210"]
