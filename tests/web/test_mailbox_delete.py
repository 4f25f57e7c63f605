"""Deleting a mailbox (REST, console, CLI) and the proof bundle of a cancelled run.

Everything runs against a real simulator on loopback (SimulatorController): HTTPS with
httpx trusting the simulated root, IMAP and SMTP with the standard library's clients
over STARTTLS + XOAUTH2, the ``segur-sim`` command line in a subprocess.
"""

from __future__ import annotations

import imaplib
import json
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.controller import SimulatorController
from simulators.core.proof import verify_bundle
from simulators.pytest_plugin import SegurMailbox, segur_make_mailbox

CLI = [sys.executable, "-m", "simulators"]
API = "/api/mss"
NIL = "DEV935997"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    data = tmp_path_factory.mktemp("delete") / "data"
    with SimulatorController(data, auth_failure_delay=0.05) as controller:
        yield controller


@pytest.fixture
def http(sim: SimulatorController) -> Iterator[httpx.Client]:
    base = str(sim.endpoints["console_url"]).rstrip("/")
    trust = ssl.create_default_context(cafile=sim.endpoints["ca_bundle"])
    with httpx.Client(base_url=base, verify=trust, timeout=30) as client:
        yield client


def wait_until(what: str, probe: Callable[[], Any], limit: float = 60) -> Any:
    """Poll ``probe`` until it returns something truthy (a bound, not a measurement)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def imap_login_refused(box: SegurMailbox, token: str) -> str:
    client = imaplib.IMAP4(box.host, box.imap_port, timeout=10)
    try:
        client.starttls(box.ssl_context())
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.authenticate("XOAUTH2", lambda _c: box.xoauth2(token).encode())
        return str(refused.value)
    finally:
        client.shutdown()


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---- REST ---------------------------------------------------------------------------------------
def test_rest_delete_removes_the_mailbox_its_tokens_and_its_sessions(
    sim: SimulatorController, http: httpx.Client
) -> None:
    box = segur_make_mailbox(sim, "PER", "dr.deleted")
    old_token, old_refresh = box.access_token, box.refresh_token
    assert old_token and old_refresh
    sent = http.post(
        f"{API}/mailboxes/{box.address}/messages", json={"subject": "avant", "text": "Bonjour"}
    )
    assert sent.status_code == 201, sent.text
    imap = box.imap()
    typ, data = imap.select("INBOX")
    assert typ == "OK" and data == [b"1"]

    answer = http.delete(f"{API}/mailboxes/{box.address}")
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["address"] == box.address and result["deleted"] is True
    assert result["type"] == "PER" and result["messages"] == 1 and result["folders"] == 4
    assert result["refresh_tokens_revoked"] == 1 and result["sessions_closed"] == 1
    assert result["runs_kept"] == []

    # the server closed the open IMAP session (BYE), and the old token no longer logs in
    with pytest.raises(imaplib.IMAP4.abort):
        imap.noop()
    imap.shutdown()
    assert "unknown mailbox dr.deleted@" in imap_login_refused(box, old_token)
    assert sim.services is not None
    assert sim.services.store.get_mailbox(box.address) is None
    refresh = http.post(
        sim.endpoints["psc"]["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": old_refresh},
    )
    assert refresh.status_code == 400 and "unknown refresh token" in refresh.text

    gone = http.get(f"{API}/mailboxes/{box.address}/folders")
    assert gone.status_code == 404
    again = http.delete(f"{API}/mailboxes/{box.address}")
    assert again.status_code == 404
    assert again.json() == {"detail": f"unknown mailbox {box.address}"}

    # the same address can be created again: it starts empty, new tokens work
    created = http.post(f"{API}/mailboxes", json={"address": box.address, "type": "PER"})
    assert created.status_code == 201, created.text
    listing = http.get(f"{API}/mailboxes/{box.address}/messages").json()
    assert listing["total"] == 0
    box.new_token()
    fresh = box.imap()
    try:
        typ, data = fresh.select("INBOX")
        assert typ == "OK" and data == [b"0"]
    finally:
        fresh.logout()


# ---- a cancelled run: proof bundle; deleting its mailbox keeps the archives --------------------
def run_doc(http: httpx.Client, run_id: str) -> dict[str, Any]:
    answer = http.get(f"{API}/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def waiting_step(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The step the runner waits on now (the last step-start not followed by its end)."""
    current = None
    for event in doc.get("events", []):
        if event["kind"] == "step-start":
            current = event
        elif event["kind"] in ("step-end", "run-end", "run-cancelled"):
            current = None
    return current if doc.get("inProgress") else None


def send_as_the_software(box: SegurMailbox, correspondent: str) -> None:
    """What the instruction asks: one ordinary mail, SMTP 587 + STARTTLS + XOAUTH2."""
    mail = EmailMessage()
    mail["From"] = box.address
    mail["To"] = correspondent
    mail["Subject"] = "Message de test"
    mail["X-MSS-NIL"] = NIL
    mail.set_content("Bonjour,\nun message de test.\n", charset="utf-8")
    with box.smtp() as smtp:
        smtp.send_message(mail)


def test_a_cancelled_run_has_a_signed_proof_and_outlives_its_mailbox(
    sim: SimulatorController, http: httpx.Client
) -> None:
    assert sim.services is not None
    box = segur_make_mailbox(sim, "PER", "dr.cancelled")
    started = http.post(
        f"{API}/runs",
        json={
            "suite": "per-org",
            "mailbox": box.address,
            "nil": NIL,
            "tests": ["MSS-01", "MSS-08", "MSS-14"],
            "client": "person",
            "step_timeout": 600,
            "settle": 0.5,
        },
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["runId"]

    first = wait_until("MSS-01 to wait", lambda: waiting_step(run_doc(http, run_id)))
    assert first["test"] == "MSS-01" and "send one ordinary mail" in first["instruction"]
    send_as_the_software(box, f"correspondant.simu@{sim.services.domain}")
    second = wait_until(
        "MSS-08 to wait",
        lambda: (step := waiting_step(run_doc(http, run_id))) and step["test"] == "MSS-08",
    )
    assert second is True
    doc = run_doc(http, run_id)
    assert [t["status"] for t in doc["tests"]] == ["pass", "running", "wait"]
    # the page as the server renders it says what console.js would (a float timeout
    # once came out as "300.0 s" until the script replaced it)
    run_page = http.get(f"/runs/{run_id}").text
    assert re.search(r'id="current-where">MSS-08 step main \(up to \d+ s\)<', run_page), re.search(
        r'id="current-where">[^<]*<', run_page
    )

    # the mailbox under test cannot be deleted while the run uses it
    busy = http.delete(f"{API}/mailboxes/{box.address}")
    assert busy.status_code == 409 and run_id in busy.json()["detail"]
    page = http.get(f"/mailboxes/{box.address}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the mailbox page"
    refused = http.post(f"/mailboxes/{box.address}/delete", data={"csrf_token": token[1]})
    assert refused.status_code == 409 and 'id="delete-mailbox"' in refused.text
    assert f"run {run_id} is in progress" in refused.text
    assert sim.services.store.get_mailbox(box.address) is not None

    cancelled = http.delete(f"{API}/runs/{run_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancel" and cancelled.json()["proofDir"]
    doc = run_doc(http, run_id)
    assert doc["inProgress"] is False and doc["status"] == "cancel"
    assert [(t["id"], t["status"]) for t in doc["tests"]] == [
        ("MSS-01", "pass"),
        ("MSS-08", "cancel"),
        ("MSS-14", "omit"),
    ]
    message = doc["tests"][1]["verdict"]["message"]
    assert "run cancelled while the runner waited for step main" in message
    assert doc["tests"][2]["verdict"]["message"].startswith("not run")
    assert http.delete(f"{API}/runs/{run_id}").status_code == 409  # no longer in progress

    bundle = Path(doc["proofDir"])
    checked = cli("proof", "verify", str(bundle), data_dir=sim.data_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"VALID: {bundle}")
    predicate = json.loads((bundle / "report.json").read_bytes())["predicate"]
    assert predicate["result"] == "FAILED" and predicate["run"]["status"] == "cancel"
    cancellation = predicate["cancellation"]
    assert cancellation["stoppedIn"] == {"test": "MSS-08", "step": "main", "waiting": True}
    assert cancellation["testsJudged"] == ["MSS-01"]
    assert cancellation["testsNotRun"] == ["MSS-14"]
    assert "DELETE /api/mss/runs" in cancellation["reason"]
    assert [v["status"] for v in predicate["verdicts"]] == ["pass", "cancel", "omit"]
    assert "This run was CANCELLED" in (bundle / "report.html").read_text()
    run_json = json.loads((bundle / "artefacts" / "run.json").read_bytes())
    assert run_json["cancellation"]["stoppedIn"]["test"] == "MSS-08"
    mails = sorted((bundle / "artefacts" / "messages").iterdir())
    assert len(mails) == 1 and b"X-MSS-NIL: " + NIL.encode() in mails[0].read_bytes()
    assert http.get(f"{API}/runs/{run_id}/proof.zip").status_code == 200

    # deleting the mailbox keeps the run, its proof and the mail it submitted
    deleted = http.delete(f"{API}/mailboxes/{box.address}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["runs_kept"] == [run_id]
    assert deleted.json()["submissions_kept"] == 1
    kept = run_doc(http, run_id)
    assert kept["proofDir"] == str(bundle) and kept["mailbox"] == box.address
    assert verify_bundle(bundle).ok
    submission = mails[0].name.removeprefix("submission-").removesuffix(".eml")
    evidence = http.get(f"{API}/submissions/{submission}/message")
    assert evidence.status_code == 200 and evidence.content == mails[0].read_bytes()


# ---- the command line ---------------------------------------------------------------------------
def test_cli_delete_through_the_running_server_closes_sessions(
    sim: SimulatorController,
) -> None:
    box = segur_make_mailbox(sim, "APP", "labo.cli")
    imap = box.imap()
    imap.select("INBOX")
    done = cli("bal", "delete", box.address, "--json", data_dir=sim.data_dir)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["address"] == box.address and result["type"] == "APP"
    assert result["sessions_closed"] == 1  # only a running server can close them
    with pytest.raises(imaplib.IMAP4.abort):
        imap.noop()
    imap.shutdown()
    refused = imaplib.IMAP4(box.host, box.imap_port, timeout=10)
    try:
        refused.starttls(box.ssl_context())
        with pytest.raises(imaplib.IMAP4.error, match=r"unknown mailbox labo\.cli@"):
            refused.login(box.address, "unused")
    finally:
        refused.shutdown()

    unknown = cli("bal", "delete", box.address, data_dir=sim.data_dir)
    assert unknown.returncode == 1
    assert f"unknown mailbox {box.address}" in unknown.stderr


def test_cli_delete_without_a_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    address = "dr.offline@mssante.localhost"
    assert cli("bal", "create", "--type", "PER", address, data_dir=data).returncode == 0
    assert cli("psc", "token", address, data_dir=data).returncode == 0
    done = cli("bal", "delete", address, data_dir=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"deleted PER mailbox {address}: 0 message(s) in 4 folder(s)")
    assert "1 PSC refresh token(s) revoked, 0 open session(s) closed" in done.stdout
    assert "kept: 0 submitted mail(s) (evidence), 0 conformance run(s)" in done.stdout
    listed = cli("bal", "list", "--json", data_dir=data)
    assert json.loads(listed.stdout) == []
    again = cli("bal", "delete", address, data_dir=data)
    assert again.returncode == 1
    assert f"Error: unknown mailbox {address} (see: segur-sim bal list)" in again.stderr
    recreated = cli("bal", "create", "--type", "PER", address, data_dir=data)
    assert recreated.returncode == 0, recreated.stderr
