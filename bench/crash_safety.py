"""Crash safety: kill -9 the server at random moments while clients send; count.

    python bench/crash_safety.py [--kills 100] [--senders 4] [--seed N]

``segur-sim serve`` runs as a subprocess on free ports. SMTP senders (implicit TLS
and STARTTLS, XOAUTH2) and one IMAP APPEND client run in threads, each message with
its own Message-ID, never retried. The server is killed with SIGKILL at a random
moment (most often while serving, sometimes during its own start-up) and started
again on the same data directory, ``--kills`` times. Then, on the last server:

- every message that got its ``250`` (SMTP) or tagged ``OK`` (APPEND) is in the
  INBOX exactly once, read both through the store and through IMAP;
- no message is there twice, and nothing is there that was never sent;
- ``PRAGMA integrity_check`` says ``ok``.

Messages whose answer was lost in the kill may or may not be stored (once at most):
the report says how many were. ``tests/robustness/test_crash_safety.py`` runs the
same campaign with 10 kills; this script is the long version. Exit code 1 if a
check fails.
"""

from __future__ import annotations

import argparse
import collections
import imaplib
import random
import re
import smtplib
import socket
import sqlite3
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import PerCredentials, ServerProcess, per_mailbox

BAL = "dr.crash@mssante.localhost"
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.I | re.M)


def message(message_id: str) -> bytes:
    return (
        f"From: <{BAL}>\r\nTo: <{BAL}>\r\nSubject: crash safety {message_id}\r\n"
        f"Message-ID: <{message_id}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "Compte rendu de consultation, ligne de texte.\r\n"
        * 8
    ).encode()


# ---- shared state between the killer and the clients -----------------------------------
class Live:
    """Where the server currently listens; clients wait on ``up`` between kills."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.endpoints: dict[str, Any] = {}

    def publish(self, endpoints: dict[str, Any]) -> None:
        with self.lock:
            self.endpoints = endpoints
        self.up.set()

    def port(self, name: str) -> tuple[int, str]:
        with self.lock:
            return int(self.endpoints["endpoints"][name]["port"]), str(self.endpoints["ca_bundle"])


@dataclass
class Tally:
    attempted: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def attempt(self, mid: str) -> None:
        with self.lock:
            self.attempted.add(mid)

    def ack(self, mid: str) -> None:
        with self.lock:
            self.acked.add(mid)

    def error(self, exc: BaseException) -> None:
        with self.lock:
            self.errors[type(exc).__name__] += 1


_CLIENT_ERRORS = (smtplib.SMTPException, imaplib.IMAP4.error, OSError, EOFError, ValueError)


def smtp_sender(live: Live, tally: Tally, creds: PerCredentials, name: str, endpoint: str) -> None:
    seq = 0
    while not live.stop.is_set():
        if not live.up.wait(0.2):
            continue
        port, ca = live.port(endpoint)
        ctx = ssl.create_default_context(cafile=ca)
        try:
            if endpoint == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10)
                client.ehlo("lps.example")
            else:
                client = smtplib.SMTP("127.0.0.1", port, timeout=10)
                client.ehlo("lps.example")
                client.starttls(context=ctx)
                client.ehlo("lps.example")
            code, reply = client.docmd("AUTH", "XOAUTH2 " + creds.xoauth2())
            if code != 235:
                raise smtplib.SMTPAuthenticationError(code, reply)
            while not live.stop.is_set():
                seq += 1
                mid = f"crash-{name}-{seq}@lps.example"
                tally.attempt(mid)
                client.sendmail(BAL, [BAL], message(mid))
                tally.ack(mid)  # only once the 250 came back
            client.quit()
        except _CLIENT_ERRORS as exc:  # the server went away: reconnect when it is back
            tally.error(exc)
            time.sleep(0.02)


def imap_appender(live: Live, tally: Tally, creds: PerCredentials) -> None:
    seq = 0
    while not live.stop.is_set():
        if not live.up.wait(0.2):
            continue
        port, ca = live.port("imaps")
        ctx = ssl.create_default_context(cafile=ca)
        try:
            client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=10)
            raw = f"user={creds.address}\x01auth=Bearer {creds.token}\x01\x01".encode()
            client.authenticate("XOAUTH2", lambda _challenge, raw=raw: raw)
            while not live.stop.is_set():
                seq += 1
                mid = f"crash-imap-{seq}@lps.example"
                tally.attempt(mid)
                typ, data = client.append("INBOX", None, None, message(mid))
                if typ != "OK":
                    raise imaplib.IMAP4.error(f"APPEND answered {typ} {data!r}")
                tally.ack(mid)
            client.logout()
        except _CLIENT_ERRORS as exc:
            tally.error(exc)
            time.sleep(0.02)


# ---- reading back -----------------------------------------------------------------------
def ids_in_store(data_dir: Path) -> collections.Counter[str]:
    """Message-IDs in the mailbox's INBOX, read straight from the SQLite store."""
    from simulators.core.config import DataDir
    from simulators.core.store.database import Database
    from simulators.core.store.mail import SqliteMailStore

    data = DataDir.open(data_dir)
    found: collections.Counter[str] = collections.Counter()
    with Database(data.db_path) as db:
        store = SqliteMailStore(db, [data.settings.domain])
        box = store.get_mailbox(BAL)
        assert box is not None
        folder = store.get_folder(box.id, "INBOX")
        assert folder is not None
        rows = store.fetch_rows(folder.id, [uid for uid, _ in store.list_uids(folder.id)])
        for row in rows:
            match = _MESSAGE_ID.search(store.blob(row.blob_id))
            found[match.group(1).decode() if match else "<no Message-ID>"] += 1
    return found


def ids_over_imap(server: ServerProcess, creds: PerCredentials) -> collections.Counter[str]:
    ctx = ssl.create_default_context(cafile=server.ca_bundle)
    client = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=ctx, timeout=60)
    raw = f"user={creds.address}\x01auth=Bearer {creds.token}\x01\x01".encode()
    client.authenticate("XOAUTH2", lambda _challenge: raw)
    typ, data = client.select("INBOX", readonly=True)
    assert typ == "OK", data
    found: collections.Counter[str] = collections.Counter()
    if int(data[0] or 0):
        typ, items = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", items
        for item in items:
            if isinstance(item, tuple):
                match = _MESSAGE_ID.search(item[1])
                found[match.group(1).decode() if match else "<no Message-ID>"] += 1
    client.logout()
    return found


def integrity_check(data_dir: Path) -> str:
    from simulators.core.config import DataDir

    conn = sqlite3.connect(DataDir.open(data_dir).db_path, timeout=30)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# ---- the campaign -----------------------------------------------------------------------
@dataclass
class CampaignResult:
    kills: int
    kills_during_startup: int
    seconds: float
    restart_seconds: list[float]
    attempted: set[str]
    acked: set[str]
    in_store: collections.Counter[str]
    over_imap: collections.Counter[str]
    integrity: str
    client_errors: collections.Counter[str]
    server_log: str

    @property
    def lost(self) -> set[str]:
        """Acknowledged but not stored: must be empty."""
        return {m for m in self.acked if self.in_store[m] == 0}

    @property
    def duplicated(self) -> dict[str, int]:
        return {m: n for m, n in self.in_store.items() if n > 1}

    @property
    def phantoms(self) -> set[str]:
        """Stored but never sent: must be empty."""
        return set(self.in_store) - self.attempted

    @property
    def unacked_but_stored(self) -> int:
        """Committed, but the answer was lost in the kill (allowed, at most once)."""
        return sum(1 for m in self.attempted - self.acked if self.in_store[m])

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} acknowledged message(s) lost: {sorted(self.lost)[:5]}")
        if self.duplicated:
            found.append(f"duplicates: {sorted(self.duplicated.items())[:5]}")
        if self.phantoms:
            found.append(f"stored but never sent: {sorted(self.phantoms)[:5]}")
        if self.over_imap != self.in_store:
            found.append("IMAP and the store disagree on the INBOX")
        if self.integrity != "ok":
            found.append(f"PRAGMA integrity_check: {self.integrity}")
        return found

    def summary(self) -> str:
        restarts = sorted(self.restart_seconds)
        median = restarts[len(restarts) // 2] if restarts else 0.0
        return (
            f"{self.kills} kill -9 ({self.kills_during_startup} during start-up) in "
            f"{self.seconds:.1f} s; restart to ready median {median:.2f} s, "
            f"max {max(restarts, default=0.0):.2f} s\n"
            f"sent {len(self.attempted)}, acknowledged {len(self.acked)}, "
            f"in the INBOX {sum(self.in_store.values())} "
            f"(of which {self.unacked_but_stored} committed whose answer was lost in a kill)\n"
            f"acknowledged but lost: {len(self.lost)}; duplicated: {len(self.duplicated)}; "
            f"never sent: {len(self.phantoms)}; IMAP agrees with the store: "
            f"{self.over_imap == self.in_store}; integrity_check: {self.integrity}\n"
            f"client-side errors around kills: {dict(self.client_errors)}"
        )


def run_campaign(
    data_dir: Path,
    *,
    kills: int,
    senders: int = 4,
    seed: int | None = None,
    up_seconds: tuple[float, float] = (0.2, 1.2),
    startup_kill_ratio: float = 0.2,
    progress: bool = False,
) -> CampaignResult:
    rng = random.Random(seed)
    creds = per_mailbox(data_dir, BAL, lifetime=24 * 3600)
    server = ServerProcess(data_dir, ready_timeout=90)
    live, tally = Live(), Tally()
    threads = [
        threading.Thread(
            target=smtp_sender,
            args=(live, tally, creds, f"s{i}", "smtps" if i % 4 != 3 else "smtp_starttls"),
            daemon=True,
        )
        for i in range(senders)
    ]
    threads.append(threading.Thread(target=imap_appender, args=(live, tally, creds), daemon=True))
    started = time.perf_counter()
    restarts: list[float] = []
    during_startup = 0
    try:
        live.publish(server.start())
        for thread in threads:
            thread.start()
        for kill in range(kills):
            if rng.random() < startup_kill_ratio:
                # Kill while the previous incarnation's successor is still starting up.
                live.up.clear()
                server.kill9()
                server.spawn()
                time.sleep(rng.uniform(0.05, 0.6))
                during_startup += not server.is_ready()
                server.kill9()
            else:
                time.sleep(rng.uniform(*up_seconds))
                live.up.clear()
                server.kill9()
            server.spawn()
            endpoints = server.wait_ready()
            restarts.append(server.ready_seconds)
            live.publish(endpoints)
            if progress:
                print(
                    f"kill {kill + 1}/{kills}: acknowledged so far {len(tally.acked)}",
                    flush=True,
                )
        time.sleep(up_seconds[0])  # some traffic on the last incarnation too
        live.stop.set()
        for thread in threads:
            thread.join(30)
        over_imap = ids_over_imap(server, creds)
        in_store = ids_in_store(data_dir)
    finally:
        live.stop.set()
        server.stop()
    return CampaignResult(
        kills=kills,
        kills_during_startup=during_startup,
        seconds=time.perf_counter() - started,
        restart_seconds=restarts,
        attempted=set(tally.attempted),
        acked=set(tally.acked),
        in_store=in_store,
        over_imap=over_imap,
        integrity=integrity_check(data_dir),
        client_errors=tally.errors,
        server_log=server.stderr_text(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--senders", type=int, default=4, help="SMTP sender threads")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, help="keep the data here (default: temp)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"crash safety: {args.kills} kills, {args.senders} SMTP senders + 1 IMAP APPEND, "
          f"seed {seed}, {socket.gethostname()}, {len(__import__('os').sched_getaffinity(0))} "
          "CPU(s)", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        result = run_campaign(
            data_dir, kills=args.kills, senders=args.senders, seed=seed, progress=True
        )
    print(result.summary())
    problems = result.problems()
    for problem in problems:
        print("FAILED:", problem)
    print("OK" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
