"""Start-up time to ready, and RSS of ``segur-sim serve`` idle and after a load.

    python bench/bench_startup_memory.py [--runs 3] [--messages 2000] [--connections 8]

Each run, on a new temporary data directory:

1. cold start: spawn ``segur-sim serve --port-base 0`` (the test PKI and the PSC key
   are generated) and time it until ``endpoints.json`` names the new process;
2. idle RSS (VmRSS from /proc/PID/status) one second after ready;
3. warm start: SIGTERM, start again on the same data directory, time to ready;
4. idle RSS of the warm server;
5. load: the SMTP bench (``bench_smtp.py``: N sender processes, 2 KB messages,
   implicit TLS, XOAUTH2, every message fsynced) then one IMAP session that fetches
   every message (FETCH 1:* (FLAGS ENVELOPE) and BODY.PEEK[]);
6. RSS after the load (VmRSS) and its peak (VmHWM), then again after 5 s idle.

Prints each run and the median of the runs. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import imaplib
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServerProcess, per_mailbox, read_proc_status
from bench_smtp import BAL, sender


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    return read_proc_status(pid)[key] / 1024


def smtp_load(server: ServerProcess, token: str, messages: int, connections: int) -> float:
    queue: mp.Queue = mp.Queue()
    per = messages // connections
    procs = [
        mp.Process(
            target=sender,
            args=(server.port("smtps"), server.ca_bundle, token, per, False, queue),
        )
        for _ in range(connections)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    total = sum(queue.get() for _ in procs)
    for proc in procs:
        proc.join()
    return total / (time.perf_counter() - started)


def imap_read_all(server: ServerProcess, token: str) -> int:
    import ssl

    ctx = ssl.create_default_context(cafile=server.ca_bundle)
    client = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=ctx, timeout=120)
    raw = f"user={BAL}\x01auth=Bearer {token}\x01\x01".encode()
    client.authenticate("XOAUTH2", lambda _challenge: raw)
    typ, data = client.select("INBOX", readonly=True)
    assert typ == "OK", data
    client.fetch("1:*", "(FLAGS ENVELOPE)")
    client.fetch("1:*", "(BODY.PEEK[])")
    client.logout()
    return int(data[0] or 0)


def one_run(messages: int, connections: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        server = ServerProcess(data_dir, stderr_path=Path(tmp) / "serve.log")
        server.start()
        out["cold start to ready (s)"] = server.ready_seconds
        time.sleep(1)
        out["idle RSS, cold (MB)"] = rss_mb(server.pid)
        server.stop()
        server.start()
        out["warm start to ready (s)"] = server.ready_seconds
        time.sleep(1)
        out["idle RSS, warm (MB)"] = rss_mb(server.pid)
        token = per_mailbox(data_dir, BAL, lifetime=3600).token
        out["SMTP load (durable msg/s)"] = smtp_load(server, token, messages, connections)
        stored = imap_read_all(server, token)
        out["messages stored and read back"] = stored
        out["RSS after load (MB)"] = rss_mb(server.pid)
        out["peak RSS, VmHWM (MB)"] = rss_mb(server.pid, "VmHWM")
        time.sleep(5)
        out["RSS 5 s after load (MB)"] = rss_mb(server.pid)
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    print(
        f"segur-sim start-up and memory: {args.runs} runs, load = {args.messages} SMTP "
        f"messages over {args.connections} connections then one IMAP read of all, "
        f"{len(os.sched_getaffinity(0))} CPU(s), load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    runs = []
    for i in range(args.runs):
        result = one_run(args.messages, args.connections)
        runs.append(result)
        print(f"run {i + 1}: " + "; ".join(f"{k} {v:.2f}" for k, v in result.items()), flush=True)
    print(f"\nmedian of {args.runs} runs:")
    for key in runs[0]:
        print(f"  {key:34s} {statistics.median(r[key] for r in runs):10.2f}")


if __name__ == "__main__":
    main()
