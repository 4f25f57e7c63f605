"""The Gazelle EVS-compatible endpoint."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from interop_helpers import FIXTURES, mutate
from lxml import etree

from simulators.core.store.database import Database
from simulators.interop.api import (
    InMemoryValidationRepository,
    get_repository,
    kind_for_validator,
    router,
)
from simulators.interop.report import GVR_NS
from simulators.interop.store import SqliteValidationRepository

GOOD = (FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml").read_bytes()


def _client() -> tuple[TestClient, InMemoryValidationRepository]:
    app = FastAPI()
    app.include_router(router)
    repo = InMemoryValidationRepository()
    app.dependency_overrides[get_repository] = lambda: repo
    return TestClient(app), repo


def _request(content: bytes) -> bytes:
    return f"""<validation xmlns="http://evsobjects.gazelle.ihe.net/">
  <validationService name="Schematron Based CDA Validator"
    validator=".Structuration minimale des documents de santé v1.16"/>
  <object originalFileName="doc.xml"><content>{base64.b64encode(content).decode()}</content>
  </object></validation>""".encode()


def test_post_then_get_report_like_the_ans_ci_action() -> None:
    client, _repo = _client()
    answer = client.post(
        "/evs/rest/validations",
        content=_request(GOOD),
        headers={"Content-Type": "application/xml", "Authorization": "GazelleAPIKey anything"},
    )
    assert answer.status_code == 201
    link = answer.headers["X-Validation-Report-Redirect"]
    report = client.get(
        link, params={"severityThreshold": "WARNING"}, headers={"Accept": "application/xml"}
    )
    assert report.status_code == 200
    root = etree.fromstring(report.content)
    assert root.tag == f"{{{GVR_NS}}}validationReport" and root.get("result") == "PASSED"
    bad = mutate(GOOD, b'confidentialityCode code="N"', b'confidentialityCode code="X"')
    link2 = client.post(
        "/evs/rest/validations", content=_request(bad), headers={"Content-Type": "application/xml"}
    ).headers["X-Validation-Report-Redirect"]
    assert etree.fromstring(client.get(link2).content).get("result") == "FAILED"
    as_json = client.get(link2, headers={"Accept": "application/json"}).json()
    assert as_json["result"] == "FAILED"


def test_json_request_and_errors() -> None:
    client, _ = _client()
    body = {
        "validationService": {
            "name": "Gazelle HL7v2.x validator",
            "validator": "1.3.6.1.4.1.12559.11.36.8.3.27",
        },
        "object": {
            "originalFileName": "ack.hl7",
            "content": base64.b64encode(
                (FIXTURES / "hl7v2" / "segur-sim_ACK_T02.hl7").read_bytes()
            ).decode(),
        },
    }
    answer = client.post("/evs/rest/validations", json=body)
    assert answer.status_code == 201 and answer.json()["result"] == "PASSED"
    assert client.get("/evs/rest/validations/1.2.3/report").status_code == 404
    assert (
        client.post(
            "/evs/rest/validations", content=b"<nope", headers={"Content-Type": "application/xml"}
        ).status_code
        == 400
    )
    xxe = b'<!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]><v>&x;</v>'
    assert (
        client.post(
            "/evs/rest/validations", content=xxe, headers={"Content-Type": "application/xml"}
        ).status_code
        == 400
    )


def test_validator_names_map_to_our_kinds() -> None:
    assert kind_for_validator("Schematron Based CDA Validator", "x", b"<a/>", "a") == "cda"
    assert (
        kind_for_validator(
            "Model-based XDS Validator",
            "ASIP XDM ITI-32 FR Distribute Document Set on Media",
            b"PK\x03\x04",
            "a",
        )
        == "xdm"
    )
    assert (
        kind_for_validator("Gazelle HL7v2.x validator", "2.16.840.1.113883.2.8.3.1.1", b"MSH", "a")
        == "hl7v2"
    )


def _post(client: TestClient, content: bytes, name: str = "doc.xml") -> str:
    body = _request(content).replace(
        b'originalFileName="doc.xml"', f'originalFileName="{name}"'.encode()
    )
    answer = client.post(
        "/evs/rest/validations", content=body, headers={"Content-Type": "application/xml"}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["oid"])


def _warned_and_broken() -> bytes:
    content = mutate(GOOD, b'extension="2023.01"', b'extension="2031.01"')  # WARNING
    return mutate(content, b'confidentialityCode code="N"', b'confidentialityCode code="X"')


def test_severity_threshold_filters_the_report_like_gazelle() -> None:
    client, _ = _client()
    oid = _post(client, _warned_and_broken())
    link = f"/evs/rest/validations/{oid}/report"
    ns = {"g": GVR_NS}

    def severities(params: dict[str, str]) -> tuple[set[str], etree._Element]:
        root = etree.fromstring(client.get(link, params=params).content)
        return {c.get("severity") or "" for c in root.iter(f"{{{GVR_NS}}}constraint")}, root

    every, root = severities({})
    assert every == {"ERROR", "WARNING", "INFO"}
    total = int(root.find("g:counters", ns).get("numberOfConstraints"))  # type: ignore[union-attr]
    warning_up, root = severities({"severityThreshold": "WARNING"})
    assert warning_up == {"ERROR", "WARNING"} and root.get("result") == "FAILED"
    counters = root.find("g:counters", ns)
    assert counters is not None and int(counters.get("numberOfConstraints") or 0) < total
    assert counters.get("numberOfWarnings") == "1"
    errors, root = severities({"severityThreshold": "ERROR"})
    assert errors == {"ERROR"} and root.get("result") == "FAILED"
    assert root.find("g:counters", ns).get("numberOfWarnings") == "0"  # type: ignore[union-attr]
    as_json = client.get(
        link, params={"severityThreshold": "error"}, headers={"Accept": "application/json"}
    ).json()
    assert as_json["counters"]["numberOfWarnings"] == 0 and as_json["result"] == "FAILED"
    assert client.get(link, params={"severityThreshold": "LOUD"}).status_code == 400


def test_report_formats_listing_paging_and_one_validation() -> None:
    client, repo = _client()
    oids = [_post(client, GOOD, f"doc{i}.xml") for i in range(3)]
    bad = _post(client, _warned_and_broken(), "bad.xml")
    listing = client.get("/evs/rest/validations", params={"limit": 2}).json()
    assert listing["total"] == 4 and listing["limit"] == 2 and len(listing["items"]) == 2
    newest = listing["items"][0]
    assert newest["oid"] == bad and newest["objectName"] == "bad.xml"
    assert newest["result"] == "FAILED" and newest["counters"]["errors"] >= 1
    assert newest["counters"]["warnings"] == 1 and newest["kind"] == "cda"
    rest = client.get("/evs/rest/validations", params={"offset": 2, "limit": 2}).json()
    assert [i["oid"] for i in rest["items"]] == [oids[1], oids[0]]
    assert client.get("/evs/rest/validations", params={"limit": 0}).status_code == 422

    one = client.get(f"/evs/rest/validations/{bad}").json()
    assert one["status"] == "DONE" and one["sha256"] == newest["sha256"]
    assert one["validationService"] == "Schematron Based CDA Validator"
    links = one["links"]
    gvr = client.get(links["gvr"])
    assert gvr.headers["content-type"].startswith("application/xml")
    assert etree.fromstring(gvr.content).get("result") == "FAILED"
    assert client.get(links["json"]).json()["uuid"] == one["uuid"]
    page = client.get(links["html"])
    assert page.headers["content-type"].startswith("text/html")
    assert "bad.xml" in page.text and "FR-HDR-CONF-01" in page.text
    text = client.get(links["gvr"], params={"format": "text"}).text
    assert "FR-HDR-CONF-01" in text
    assert client.get(links["gvr"], params={"format": "pdf"}).status_code == 400
    assert client.get("/evs/rest/validations/9.9.9").status_code == 404
    assert repo.get(bad) is not None


def test_validations_go_to_the_sqlite_store_of_the_app(tmp_path: Path) -> None:
    """With ``app.state.interop_repository`` (what `serve` sets), validations are rows
    of the project's store and outlive the application."""
    db_path = tmp_path / "segur-sim.sqlite3"
    with Database(db_path) as db:
        app = FastAPI()
        app.include_router(router)
        app.state.interop_repository = SqliteValidationRepository(db)
        client = TestClient(app)
        oid = _post(client, _warned_and_broken(), "stored.xml")
        _post(client, GOOD, "good.xml")
    with Database(db_path) as db:
        row = db.read_one("SELECT * FROM validations WHERE oid = ?", (oid,))
        assert row is not None
        assert row["object_name"] == "stored.xml" and row["result"] == "FAILED"
        assert row["kind"] == "cda" and row["origin"] == "api" and row["warnings"] == 1
        assert row["sha256"] == hashlib.sha256(_warned_and_broken()).hexdigest()
        assert row["size"] == len(_warned_and_broken())
        assert json.loads(row["report_json"])["uuid"] == row["uuid"]
        app = FastAPI()
        app.include_router(router)
        app.state.interop_repository = SqliteValidationRepository(db)
        client = TestClient(app)
        listing = client.get("/evs/rest/validations").json()
        assert listing["total"] == 2
        assert [i["objectName"] for i in listing["items"]] == ["good.xml", "stored.xml"]
        report = client.get(f"/evs/rest/validations/{oid}/report").content
        assert etree.fromstring(report).get("result") == "FAILED"
        filtered = client.get(
            f"/evs/rest/validations/{oid}/report", params={"severityThreshold": "ERROR"}
        )
        assert b'severity="WARNING"' not in filtered.content
