"""The Gazelle EVS-compatible endpoint."""

from __future__ import annotations

import base64

from fastapi import FastAPI
from fastapi.testclient import TestClient
from interop_helpers import FIXTURES, mutate
from lxml import etree

from simulators.interop.api import (
    InMemoryValidationRepository,
    get_repository,
    kind_for_validator,
    router,
)
from simulators.interop.report import GVR_NS

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
