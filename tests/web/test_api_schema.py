"""The REST API against its own OpenAPI document.

Two layers: a bounded schemathesis run (generated requests on every /api/mss and
/api/validations operation: no 5xx, documented status codes and content types,
responses that match their schemas), then a walk through the real operations with
real data, each response validated against the document.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from web_helpers import CDA_FIXTURE, DOMAIN, build_app

from simulators.interop.xds.xdm import build_xdm
from simulators.mss.services import MssServices

PATHS = r"^/api/(mss|validations)"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    services = MssServices.open(tmp_path_factory.mktemp("api") / "data")
    app = build_app(services)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    services.close()


# GET /api/mss/mailboxes/{address} belongs to mss/http_routes.py, which documents no 404.
fuzzed = (
    schemathesis.pytest.from_fixture("api_schema")
    .include(path_regex=PATHS)
    .exclude(path="/api/mss/mailboxes/{address}", method="GET")
)
# Semantic refusals (a well-formed but unknown domain, base64 that is not a message...)
# are 4xx by design: "schema-valid data must be accepted" does not hold for them.
RELAXED = [positive_data_acceptance]


@fuzzed.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_conform_to_the_openapi_document(case: Any) -> None:
    case.call_and_validate(excluded_checks=RELAXED)


def test_openapi_document_covers_the_cli_operations(api_schema: Any) -> None:
    paths = api_schema.raw_schema["paths"]
    expected = {
        "/api/mss/mailboxes": {"get", "post"},
        "/api/mss/mailboxes/{address}": {"get", "delete"},
        "/api/mss/mailboxes/{address}/credentials": {"get"},
        "/api/mss/mailboxes/{address}/token": {"post"},
        "/api/mss/mailboxes/{address}/token/revoke": {"post"},
        "/api/mss/mailboxes/{address}/certificate.p12": {"get"},
        "/api/mss/mailboxes/{address}/folders": {"get"},
        "/api/mss/mailboxes/{address}/messages": {"get", "post"},
        "/api/mss/mailboxes/{address}/messages/{uid}": {"get"},
        "/api/mss/mailboxes/{address}/messages/{uid}/raw": {"get"},
        "/api/mss/mailboxes/{address}/messages/{uid}/parts/{section}": {"get"},
        "/api/mss/submissions": {"get"},
        "/api/validations": {"post"},
        "/api/cnda/requests": {"get", "post"},
        "/evs/rest/validations": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    # the console's HTML routes are not part of the API document
    assert "/mailboxes" not in paths and "/" not in paths


def _call(schema: Any, method: str, path: str, **kwargs: Any) -> Any:
    operation = schema[path][method]
    case = operation.Case(**kwargs)
    response = case.call()
    case.validate_response(response)
    return response


def test_real_operations_validate_against_the_document(api_schema: Any) -> None:
    per = f"dr.schema@{DOMAIN}"
    app = f"app.schema@{DOMAIN}"
    created = _call(api_schema, "POST", "/api/mss/mailboxes", body={"address": per, "type": "PER"})
    assert created.status_code == 201 and created.json()["credentials"]["psc_subject"]
    created_app = _call(
        api_schema,
        "POST",
        "/api/mss/mailboxes",
        body={"address": app, "type": "APP", "entity": "LABO SCHEMA"},
    )
    assert created_app.json()["credentials"]["client_p12_password"] == "segur-sim"
    again = _call(api_schema, "POST", "/api/mss/mailboxes", body={"address": per, "type": "PER"})
    assert again.status_code == 409
    listed = _call(api_schema, "GET", "/api/mss/mailboxes")
    assert {b["address"] for b in listed.json()} >= {per, app}

    token = _call(
        api_schema,
        "POST",
        "/api/mss/mailboxes/{address}/token",
        path_parameters={"address": per},
        body={"lifetime": 120},
    )
    assert token.json()["expires_in"] == 120 and token.json()["token_type"] == "Bearer"
    refused = _call(
        api_schema, "POST", "/api/mss/mailboxes/{address}/token", path_parameters={"address": app}
    )
    assert refused.status_code == 409
    revoked = _call(
        api_schema,
        "POST",
        "/api/mss/mailboxes/{address}/token/revoke",
        path_parameters={"address": per},
    )
    assert revoked.json()["revoked"] >= 1
    for path in ("credentials", "certificate.p12", "certificate.pem", "key.pem", "folders"):
        response = _call(
            api_schema,
            "GET",
            f"/api/mss/mailboxes/{{address}}/{path}",
            path_parameters={"address": app},
        )
        assert response.status_code == 200, path

    xdm = build_xdm([CDA_FIXTURE.read_bytes()])
    sent = _call(
        api_schema,
        "POST",
        "/api/mss/mailboxes/{address}/messages",
        path_parameters={"address": per},
        body={
            "from": app,
            "subject": "XDM",
            "text": "Bonjour",
            "headers": {"X-MSS-Flow": "1"},
            "attachments": [
                {"filename": "IHE_XDM.ZIP", "content_base64": base64.b64encode(xdm).decode()}
            ],
        },
    )
    assert sent.status_code == 201 and sent.json()["delivered_to"] == [per]
    raw = b"From: <x@example.org>\r\nTo: <" + per.encode() + b">\r\nSubject: raw\r\n\r\nbody\r\n"
    raw_sent = _call(
        api_schema,
        "POST",
        "/api/mss/mailboxes/{address}/messages",
        path_parameters={"address": per},
        body={"raw_base64": base64.b64encode(raw).decode()},
    )
    assert raw_sent.status_code == 201
    listing = _call(
        api_schema,
        "GET",
        "/api/mss/mailboxes/{address}/messages",
        path_parameters={"address": per},
        query={"folder": "INBOX", "limit": 10},
    )
    messages = listing.json()["messages"]
    assert [m["subject"] for m in messages] == ["raw", "XDM"]
    uid = messages[1]["uid"]
    parsed = _call(
        api_schema,
        "GET",
        "/api/mss/mailboxes/{address}/messages/{uid}",
        path_parameters={"address": per, "uid": uid},
    )
    assert parsed.json()["mss_headers"] == [{"name": "X-MSS-Flow", "value": "1"}]
    assert parsed.json()["parts"][1]["filename"] == "IHE_XDM.ZIP"
    part = _call(
        api_schema,
        "GET",
        "/api/mss/mailboxes/{address}/messages/{uid}/parts/{section}",
        path_parameters={"address": per, "uid": uid, "section": "2"},
    )
    assert part.content == xdm
    raw_out = _call(
        api_schema,
        "GET",
        "/api/mss/mailboxes/{address}/messages/{uid}/raw",
        path_parameters={"address": per, "uid": uid},
    )
    assert b"X-MSS-Flow: 1" in raw_out.content
    sent_copy = _call(
        api_schema,
        "GET",
        "/api/mss/mailboxes/{address}/messages",
        path_parameters={"address": app},
        query={"folder": "Sent"},
    )
    assert sent_copy.json()["total"] == 1
    subs = _call(api_schema, "GET", "/api/mss/submissions", query={"mailbox": app})
    assert subs.json()[0]["local_rcpts"] == [per]

    # deleting: the documented body, then 404 for a mailbox that is gone
    gone = _call(
        api_schema, "DELETE", "/api/mss/mailboxes/{address}", path_parameters={"address": per}
    )
    assert gone.status_code == 200
    assert gone.json()["messages"] == 2 and gone.json()["submissions_kept"] == 0
    assert gone.json()["sessions_closed"] == 0  # an app without running mail servers
    unknown = _call(
        api_schema, "DELETE", "/api/mss/mailboxes/{address}", path_parameters={"address": per}
    )
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": f"unknown mailbox {per}"}
    # what the APP mailbox sent to it is still there, as evidence
    assert _call(api_schema, "GET", "/api/mss/submissions", query={"mailbox": app}).json()

    validation = _call(
        api_schema,
        "POST",
        "/api/validations",
        body={"file": CDA_FIXTURE.read_bytes(), "kind": "cda"},
        media_type="multipart/form-data",
    )
    assert validation.status_code == 201 and validation.json()["result"] == "PASSED"
    oid = validation.json()["oid"]
    again_v = _call(api_schema, "GET", "/api/validations/{oid}", path_parameters={"oid": oid})
    assert again_v.json()["sha256"] == validation.json()["sha256"]
