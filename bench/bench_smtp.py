"""SMTP acceptance benchmark: durable messages/s over loopback TLS, and server CPU.

Run by hand:  python bench/bench_smtp.py [--messages 2000] [--connections 1 8] [--new-connections]

It starts ``segur-sim serve`` as a separate process on free ports (``bench/_server.py``;
its CPU is read from /proc), creates a PER mailbox, and runs N sender processes over
implicit TLS with XOAUTH2. Every message counted got its 250, i.e. it is fsynced (group
commit). Server CPU per message = (utime + stime of the server) / messages.
Prints one line per configuration. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import smtplib
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServerProcess, per_mailbox

BAL = "bench@mssante.localhost"
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30 + "\r\n") * 1


def message(i: int) -> bytes:
    headers = (
        f"From: Bench <{BAL}>\r\nTo: <{BAL}>\r\nSubject: bench {i}\r\n"
        f"Message-ID: <bench-{i}-{os.getpid()}@lps.example>\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nX-MSS-NIL: DEV935997\r\n\r\n"
    )
    return (headers + BODY).encode()[:2048]


def sender(port: int, ca: str, token: str, count: int, new_connection: bool, out: mp.Queue) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    auth = base64.b64encode(f"user={BAL}\x01auth=Bearer {token}\x01\x01".encode()).decode()

    def connect() -> smtplib.SMTP_SSL:
        client = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=30)
        client.ehlo("bench")
        client.docmd("AUTH", "XOAUTH2 " + auth)
        return client

    done = 0
    client = None if new_connection else connect()
    for i in range(count):
        if new_connection:
            client = connect()
        assert client is not None
        client.sendmail(BAL, [BAL], message(i))
        done += 1
        if new_connection:
            client.quit()
    if client is not None and not new_connection:
        client.quit()
    out.put(done)


def run(data_dir: Path, connections: int, messages: int, new_connection: bool) -> str:
    creds = per_mailbox(data_dir, BAL, lifetime=3600)
    with ServerProcess(data_dir) as server:
        time.sleep(0.2)
        port = server.port("smtps")
        per = messages // connections
        queue: mp.Queue = mp.Queue()
        cpu0 = server.cpu_seconds()
        started = time.perf_counter()
        procs = [
            mp.Process(
                target=sender,
                args=(port, server.ca_bundle, creds.token, per, new_connection, queue),
            )
            for _ in range(connections)
        ]
        for p in procs:
            p.start()
        total = sum(queue.get() for _ in procs)
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu0
    mode = "new connection per message" if new_connection else "persistent connections"
    return (
        f"{connections:2d} sender(s), {mode:27}: {total} msgs in {elapsed:6.2f} s = "
        f"{total / elapsed:7.1f} durable msg/s; server CPU {cpu * 1000 / total:.3f} ms/msg"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="also measure one new TLS connection per message",
    )
    args = parser.parse_args()
    print(
        f"segur-sim SMTP benchmark: 2 KB messages, implicit TLS, XOAUTH2, fsync per commit, "
        f"{os.cpu_count()} CPU(s)"
    )
    for connections in args.connections:
        with tempfile.TemporaryDirectory() as tmp:
            print(run(Path(tmp), connections, args.messages, False), flush=True)
    if args.new_connections:
        for connections in args.connections:
            with tempfile.TemporaryDirectory() as tmp:
                print(run(Path(tmp), connections, args.messages // 4, True), flush=True)


if __name__ == "__main__":
    main()
