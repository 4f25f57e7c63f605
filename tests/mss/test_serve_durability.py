"""``segur-sim serve`` as a real process: endpoints.json, clean SIGTERM, and kill -9.

A message acknowledged with 250 must be in the store after the server is killed
with SIGKILL and restarted.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

from simulators.core.config import DataDir
from simulators.core.store.database import Database
from simulators.core.store.mail import SqliteMailStore

BAL = "dr.durable@mssante.localhost"


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulators", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    endpoints_file = data_dir / "endpoints.json"
    if endpoints_file.exists():
        endpoints_file.unlink()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port-base",
            "0",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not endpoints_file.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.05)
    time.sleep(0.05)  # the file is written in one call, but let the write finish
    return proc, json.loads(endpoints_file.read_text())


def stored_message_ids(data_dir: Path) -> list[bytes]:
    data = DataDir.open(data_dir)
    with Database(data.db_path) as db:
        store = SqliteMailStore(db, [data.settings.domain])
        box = store.get_mailbox(BAL)
        assert box is not None
        folder = store.get_folder(box.id, "INBOX")
        assert folder is not None
        rows = store.fetch_rows(folder.id, [uid for uid, _ in store.list_uids(folder.id)])
        ids = []
        for row in rows:
            raw = store.blob(row.blob_id)
            ids += [line for line in raw.split(b"\r\n") if line.startswith(b"Message-ID:")]
        return ids


def test_serve_writes_endpoints_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc, endpoints = start_server(tmp_path)
    try:
        assert endpoints["simulation"] is True
        eps = endpoints["endpoints"]
        assert isinstance(eps, dict)
        for name in ("smtp_starttls", "smtps", "http", "https"):
            assert eps[name]["host"] == "127.0.0.1" and eps[name]["port"] > 0
        assert Path(str(endpoints["ca_bundle"])).exists()
        assert "openid-connect/token" in str(endpoints["psc"]["token_endpoint"])  # type: ignore[index]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    assert cli("bal", "create", "--type", "PER", BAL, data_dir=tmp_path).returncode == 0
    token = cli("psc", "token", BAL, data_dir=tmp_path).stdout.strip()
    proc, endpoints = start_server(tmp_path)
    port = endpoints["endpoints"]["smtps"]["port"]  # type: ignore[index]
    ctx = ssl.create_default_context(cafile=str(endpoints["ca_bundle"]))
    acknowledged: list[bytes] = []
    try:
        client = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10)
        client.ehlo("lps.example")
        auth = base64.b64encode(f"user={BAL}\x01auth=Bearer {token}\x01\x01".encode()).decode()
        assert client.docmd("AUTH", "XOAUTH2 " + auth)[0] == 235
        for i in range(30):
            message_id = f"Message-ID: <durable-{i}@lps.example>".encode()
            client.sendmail(BAL, [BAL], message_id + b"\r\nSubject: n\r\n\r\nbody\r\n")
            acknowledged.append(message_id)  # only after the 250
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert acknowledged
    # Restart on the same data: everything acknowledged is there, exactly once.
    proc, _ = start_server(tmp_path)
    try:
        assert sorted(stored_message_ids(tmp_path)) == sorted(acknowledged)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_cli_manages_mailboxes_tokens_and_pki(tmp_path: Path) -> None:
    created = cli(
        "bal",
        "create",
        "--type",
        "APP",
        "lab@mssante.localhost",
        "--entity",
        "LAB",
        "--json",
        data_dir=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["type"] == "APP" and Path(info["client_p12"]).exists()
    duplicate = cli("bal", "create", "--type", "PER", "lab@mssante.localhost", data_dir=tmp_path)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listing = json.loads(cli("bal", "list", "--json", data_dir=tmp_path).stdout)
    assert [b["address"] for b in listing] == ["lab@mssante.localhost"]
    refused = cli("psc", "token", "lab@mssante.localhost", data_dir=tmp_path)
    assert refused.returncode == 1 and "APP mailbox" in refused.stderr
    exported = cli(
        "pki",
        "export",
        "--out",
        str(tmp_path / "out"),
        "--bal",
        "lab@mssante.localhost",
        data_dir=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "ca-bundle.pem",
        "lab_at_mssante.localhost.crt.pem",
        "lab_at_mssante.localhost.key.pem",
        "lab_at_mssante.localhost.p12",
    ]
    unknown = cli("psc", "token", "ghost@mssante.localhost", data_dir=tmp_path)
    assert unknown.returncode == 1 and "unknown mailbox" in unknown.stderr


def test_one_https_site_serves_psc_cnda_and_the_gazelle_endpoint(tmp_path: Path) -> None:
    """Every simulator's HTTP routes answer on the same loopback HTTPS port."""
    import httpx

    proc, endpoints = start_server(tmp_path)
    try:
        https = endpoints["endpoints"]["https"]  # type: ignore[index]
        base = f"https://127.0.0.1:{https['port']}"
        with httpx.Client(
            verify=ssl.create_default_context(cafile=str(endpoints["ca_bundle"])), timeout=10
        ) as client:
            jwks = client.get(f"{base}/psc/auth/realms/esante-wallet/protocol/openid-connect/certs")
            assert jwks.status_code == 200 and jwks.json()["keys"][0]["alg"] == "RS256"
            services = client.get(
                f"{base}/api/cnda/services", headers={"X-Segur-Sim-Role": "editor"}
            )
            assert services.status_code == 200, services.text
            missing = client.get(f"{base}/no/such/route")
            assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
            crl = client.get(str(endpoints["crl_url"]))
            assert crl.headers["content-type"] == "application/pkix-crl"
            openapi = client.get(f"{base}/openapi.json").json()
            assert any(path.startswith("/evs/rest") for path in openapi["paths"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_a_schema_registered_after_opening_is_applied(tmp_path: Path) -> None:
    from simulators.core.store.database import Schema

    late = Schema("late_test_schema", ("CREATE TABLE late_things (id INTEGER PRIMARY KEY)",))
    with Database(tmp_path / "db.sqlite3") as db:
        db.ensure_schema(late)
        db.ensure_schema(late)  # idempotent
        db.write_sync(lambda conn: conn.execute("INSERT INTO late_things DEFAULT VALUES"))
        assert db.read_one("SELECT count(*) FROM late_things")[0] == 1  # type: ignore[index]


def test_recorded_rows_are_committed_without_any_other_write(tmp_path: Path) -> None:
    # The recorder has no commits of its own: its rows ride in the next batch, and a
    # poke makes the writer run one within lazy_delay when nothing else is written.
    from simulators.core.recorder import Recorder

    with Database(tmp_path / "store.db", lazy_delay=0.02) as db:
        recorder = Recorder(db)
        record = recorder.open_session("smtp", "smtps", ("127.0.0.1", 4242))
        record.client("EHLO lps.example")
        record.server("250 OK")
        deadline = time.monotonic() + 10
        events = recorder.events(record.id)  # a read only: no flush, no other job
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
            events = recorder.events(record.id)
        assert [(e.direction, e.data) for e in events] == [
            ("C", "EHLO lps.example"),
            ("S", "250 OK"),
        ]
        assert recorder.session(record.id) is not None


def test_a_failing_batch_hook_costs_no_acknowledged_write(tmp_path: Path) -> None:
    with Database(tmp_path / "store.db") as db:

        def broken_hook(conn: object) -> None:
            raise RuntimeError("hook failure")

        db.add_batch_hook(broken_hook)
        db.write_sync(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
        db.write_sync(lambda conn: conn.execute("INSERT INTO t VALUES (42)"))
        assert [tuple(r) for r in db.read("SELECT x FROM t")] == [(42,)]


def test_recorded_events_of_both_chunk_formats_read_back_in_order(tmp_path: Path) -> None:
    # Rows written before the compact format ([seq, ts, dir, data] per event) stay
    # readable next to new ones ([ts_us, dir, data], seqs from first_seq).
    import json

    from simulators.core.recorder import Recorder

    with Database(tmp_path / "store.db") as db:
        recorder = Recorder(db)
        record = recorder.open_session("smtp", "smtps", ("127.0.0.1", 4242))
        old = [[1, 1764000000.25, "C", "EHLO old.example"], [2, 1764000000.5, "S", "250 OK"]]
        db.write_sync(
            lambda conn: conn.execute(
                "INSERT INTO wire_event_chunks(session_id, first_seq, events) VALUES (?,?,?)",
                (record.id, 1, json.dumps(old)),
            )
        )
        record._seq = 2  # the session goes on after the old rows
        record.client("MAIL FROM:<a@b.example>")
        record.server("250 2.1.0 Sender OK")
        recorder.flush()
        events = recorder.events(record.id)
        assert [(e.seq, e.direction, e.data) for e in events] == [
            (1, "C", "EHLO old.example"),
            (2, "S", "250 OK"),
            (3, "C", "MAIL FROM:<a@b.example>"),
            (4, "S", "250 2.1.0 Sender OK"),
        ]
        assert events[0].ts == 1764000000.25
        assert abs(events[2].ts - time.time()) < 60  # microseconds back to seconds
