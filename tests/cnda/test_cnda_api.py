"""The CNDA REST API: both roles, JSON errors, uploads, pages and the attestation."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cnda_support import DMP_PSC, BundleMaker
from fastapi.testclient import TestClient

from simulators.cnda.api import ROLE_HEADER, create_app
from simulators.cnda.service import CndaService
from simulators.core.pki import TestPKI

EDITOR = {ROLE_HEADER: "editor"}
AGENT = {ROLE_HEADER: "agent"}


@pytest.fixture
def client(service: CndaService) -> Iterator[TestClient]:
    with TestClient(create_app(service=service)) as test_client:
        yield test_client


def zipped(bundle: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                zf.write(path, f"{bundle.name}/{path.relative_to(bundle).as_posix()}")
    return buffer.getvalue()


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def open_dossier(client: TestClient) -> str:
    nie = ok(client.post("/api/cnda/editors", json={"name": "API SAS"}, headers=EDITOR), 201)["nie"]
    software = ok(
        client.post(
            f"/api/cnda/editors/{nie}/software",
            json={"name": "DPI", "version": "2.0"},
            headers=EDITOR,
        ),
        201,
    )
    component = ok(
        client.post(
            f"/api/cnda/software/{software['nil']}/components",
            json={"name": "Module DMP", "version": "0.9"},
            headers=EDITOR,
        ),
        201,
    )
    assert component["parent_nil"] == software["nil"]
    body = {"nie": nie, "nil": software["nil"], "service": "DMP", "perimeter": DMP_PSC}
    status = ok(client.post("/api/cnda/requests", json=body, headers=EDITOR), 201)
    assert status["components"][0]["nil"] == component["nil"]
    return str(status["id"])


def deposit(client: TestClient, rid: str, doc_type: str) -> Any:
    return client.post(
        f"/api/cnda/requests/{rid}/documents",
        data={"doc_type": doc_type},
        files={"file": (f"{doc_type}.pdf", b"%PDF-1.7 simulated", "application/pdf")},
        headers=EDITOR,
    )


def act(client: TestClient, rid: str, action: str, role: dict[str, str], **body: str) -> Any:
    return client.post(f"/api/cnda/requests/{rid}/actions/{action}", json=body, headers=role)


def test_end_to_end_over_rest(client: TestClient, make_bundle: BundleMaker, pki: TestPKI) -> None:
    rid = open_dossier(client)
    for doc_type in ("contract_request", "signed_conditions", "psc_maturity_attestation"):
        ok(deposit(client, rid, doc_type), 201)
    status = ok(act(client, rid, "send-test-plan", AGENT))
    assert status["portalStatus"] == "En cours actif" and status["expectedReturnDate"]

    failed = client.post(
        f"/api/cnda/requests/{rid}/proofs",
        files={"file": ("failed.zip", zipped(make_bundle("FAILED")), "application/zip")},
        headers=EDITOR,
    )
    assert ok(failed, 201)["result"] == "FAILED"
    ok(act(client, rid, "refuse", AGENT, reason="MSS-IMAP-02"))
    passed = client.post(
        f"/api/cnda/requests/{rid}/proofs",
        files={"file": ("passed.zip", zipped(make_bundle()), "application/zip")},
        headers=EDITOR,
    )
    assert ok(passed, 201)["kind"] == "bundle"
    screenshot = client.post(
        f"/api/cnda/requests/{rid}/proofs",
        files={"file": ("capture.png", b"\x89PNG simulated", "image/png")},
        headers=EDITOR,
    )
    assert ok(screenshot, 201)["kind"] == "file"
    ok(act(client, rid, "resubmit", EDITOR))
    ok(act(client, rid, "validate", AGENT))
    ok(act(client, rid, "schedule-exam", AGENT, exam_date="2025-04-10", exam_mode="in_person"))
    ok(act(client, rid, "fail-exam", AGENT, reason="VIHF", exam_date="2025-04-20"))
    ok(act(client, rid, "pass-exam", AGENT))
    assert ok(act(client, rid, "finalise", AGENT))["productionNumber"].startswith("SIMU-PROD-")
    ok(deposit(client, rid, "psc_habilitation_receipt"), 201)
    ok(deposit(client, rid, "satisfaction_questionnaire"), 201)
    assert ok(act(client, rid, "complete", EDITOR))["state"] == "conforme"

    assert ok(client.get(f"/api/cnda/requests/{rid}/attestation/verify")) == {
        "ok": True,
        "problems": [],
    }
    document = ok(client.get(f"/api/cnda/requests/{rid}/attestation"))
    assert document["exam"] == {"date": "2025-04-20", "mode": "in_person", "attempts": 2}
    signature = client.get(f"/api/cnda/requests/{rid}/attestation.p7s")
    assert signature.headers["content-type"] == "application/pkcs7-signature"
    assert signature.content[:1] == b"\x30"  # DER SEQUENCE
    page = client.get(f"/api/cnda/requests/{rid}/attestation.html")
    assert "SIMULATION" in page.text and document["productionNumber"] in page.text
    chain = ok(client.get(f"/api/cnda/requests/{rid}/events/verify"))
    assert chain == {"ok": True, "problems": []}
    events = ok(client.get(f"/api/cnda/requests/{rid}/events"))
    assert events[0]["action"] == "open" and events[-1]["to_state"] == "conforme"


def test_status_page_stands_in_for_the_portal_screenshot(client: TestClient) -> None:
    rid = open_dossier(client)
    page = client.get(f"/api/cnda/requests/{rid}/page")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "NOT an official ANS / CNDA proof" in text
    for expected in (rid, "DPI", "2.0", "Initialisation", "Date de retour prévue", "SIMU-NIL-"):
        assert expected in text
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_agent_rules_over_rest(client: TestClient, make_bundle: BundleMaker) -> None:
    rid = open_dossier(client)
    for doc_type in ("contract_request", "signed_conditions", "psc_maturity_attestation"):
        ok(deposit(client, rid, doc_type), 201)
    run = ok(client.post(f"/api/cnda/requests/{rid}/agent/run", headers=AGENT))
    assert [e["action"] for e in run["done"]] == ["send-test-plan"]
    cases = [c["id"] for c in run["status"]["testPlan"]["cases"]]
    # A PASSED bundle that names none of the plan's cases is not enough for the rules.
    ok(
        client.post(
            f"/api/cnda/requests/{rid}/proofs",
            files={"file": ("mss.zip", zipped(make_bundle()), "application/zip")},
            headers=EDITOR,
        ),
        201,
    )
    run = ok(client.post(f"/api/cnda/requests/{rid}/agent/run", headers=AGENT, json={}))
    assert run["done"] == [] and run["status"]["state"] == "pre_examen"
    assert run["status"]["coverage"]["uncovered"] == cases
    assert ", ".join(cases) in run["waiting_for"][0]
    covering = make_bundle(passed=cases)
    ok(
        client.post(
            f"/api/cnda/requests/{rid}/proofs",
            files={"file": ("dmp.zip", zipped(covering), "application/zip")},
            headers=EDITOR,
        ),
        201,
    )
    coverage = ok(client.get(f"/api/cnda/requests/{rid}/coverage"))
    assert coverage["complete"] is True and coverage["passed"] == cases
    run = ok(client.post(f"/api/cnda/requests/{rid}/agent/run", headers=AGENT, json={}))
    assert run["status"]["state"] == "attestation_emise"
    assert run["waiting_for"] == [
        "editor: deposit psc_habilitation_receipt",
        "editor: deposit satisfaction_questionnaire",
    ]


def test_errors_are_json_with_the_right_codes(client: TestClient, make_bundle: BundleMaker) -> None:
    rid = open_dossier(client)
    before = ok(client.get(f"/api/cnda/requests/{rid}"))

    def assert_error(response: Any, status: int, fragment: str) -> None:
        assert response.status_code == status, response.text
        assert fragment in str(response.json()["detail"])

    assert_error(client.get("/api/cnda/requests/SIMU-DOS-ZZZZZZ"), 404, "SIMU-DOS-ZZZZZZ")
    assert_error(client.get("/api/cnda/editors/SIMU-NIE-ZZZZZZ"), 404, "SIMU-NIE-ZZZZZZ")
    assert_error(client.get("/api/cnda/software/SIMU-NIL-ZZZZZZ"), 404, "SIMU-NIL-ZZZZZZ")
    assert_error(act(client, "SIMU-DOS-ZZZZZZ", "validate", AGENT), 404, "SIMU-DOS-ZZZZZZ")
    assert_error(act(client, rid, "finalise", AGENT), 409, "cannot finalise")
    assert_error(act(client, rid, "validate", EDITOR), 403, "not the editor")
    assert_error(act(client, rid, "abandon", AGENT), 422, "needs a reason")
    assert_error(act(client, rid, "teleport", AGENT), 422, "unknown action")
    assert_error(
        client.post(f"/api/cnda/requests/{rid}/actions/validate", json={}), 422, ROLE_HEADER
    )
    assert_error(act(client, rid, "validate", {ROLE_HEADER: "admin"}), 422, "")
    assert_error(client.post("/api/cnda/editors", json={"name": "x"}, headers=AGENT), 403, "")
    assert_error(deposit(client, rid, "invoice"), 422, "unknown document type")
    assert_error(client.get(f"/api/cnda/requests/{rid}/attestation"), 404, "no attestation")
    body = {"nie": before["editor"]["nie"], "nil": before["software"]["nil"], "service": "DMP"}
    assert_error(
        client.post("/api/cnda/requests", json={**body, "perimeter": {}}, headers=EDITOR),
        422,
        "choose at least one",
    )
    assert ok(client.get(f"/api/cnda/requests/{rid}"))["state"] == before["state"]

    # A tampered bundle is refused at deposit with the reason.
    for doc_type in ("contract_request", "signed_conditions", "psc_maturity_attestation"):
        deposit(client, rid, doc_type)
    ok(act(client, rid, "send-test-plan", AGENT))
    assert_error(act(client, rid, "validate", AGENT), 409, "no proof deposited")
    bundle = make_bundle()
    (bundle / "report.html").write_text("<p>all green, trust me</p>")
    refused = client.post(
        f"/api/cnda/requests/{rid}/proofs",
        files={"file": ("tampered.zip", zipped(bundle), "application/zip")},
        headers=EDITOR,
    )
    assert_error(refused, 422, "report.html: modified")
    assert ok(client.get(f"/api/cnda/requests/{rid}"))["proofs"] == []
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.txt", b"x")
    assert_error(
        client.post(
            f"/api/cnda/requests/{rid}/proofs",
            files={"file": ("evil.zip", evil.getvalue(), "application/zip")},
            headers=EDITOR,
        ),
        422,
        "..",
    )


def test_openapi_documents_both_roles(client: TestClient) -> None:
    schema = ok(client.get("/openapi.json"))
    assert "SIMULATION" in schema["info"]["title"]
    assert "mirrors none" in schema["info"]["description"]
    paths = schema["paths"]
    for path in (
        "/api/cnda/editors",
        "/api/cnda/requests",
        "/api/cnda/requests/{request_id}/actions/{action}",
        "/api/cnda/requests/{request_id}/proofs",
        "/api/cnda/requests/{request_id}/page",
    ):
        assert path in paths
    parameters = paths["/api/cnda/requests/{request_id}/actions/{action}"]["post"]["parameters"]
    assert any(p["name"] == ROLE_HEADER for p in parameters)
    services = ok(client.get("/api/cnda/services"))
    assert {"DMP", "INSi", "e-prescription", "ApCV"} <= {s["id"] for s in services}


def test_create_app_from_a_data_dir(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path / "standalone")) as standalone:
        created = standalone.post("/api/cnda/editors", json={"name": "E"}, headers=EDITOR)
        assert created.status_code == 201 and created.json()["nie"].startswith("SIMU-NIE-")
    assert (tmp_path / "standalone" / "segur-sim.sqlite3").exists()
