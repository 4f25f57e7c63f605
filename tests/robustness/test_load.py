"""A CI-sized load test: 40 IMAP sessions and 10 SMTP senders at once on a real ``serve``.

The same load generator as ``bench/bench_load.py`` (asyncio IMAP and SMTP clients of
our own, in this process), scaled down to a few seconds: IMAP sessions loop over
SELECT, UID SEARCH, UID FETCH of headers and bodies, UID STORE, NOOP and IDLE; SMTP
senders submit 2-5 KB mails (STARTTLS + XOAUTH2, persistent connections and some new
ones) to the mailboxes those sessions read. Required:

- not one error: every command answered OK, no stall (30 s per operation), no
  connection dropped by the server;
- every mail acknowledged with ``250`` is in its recipient's INBOX exactly once, read
  over IMAP afterwards, and nothing is there that was not acknowledged;
- every IMAP session and every sender was served (completed a cycle, got a ``250``)
  while the others ran; a new session after the load is served too (the check reads
  every mailbox over new connections); no traceback on the server's stderr.

No timing assertions: the latencies are printed (``-s``), never checked here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .support import live_server

# bench/ is on sys.path once support.py is imported
bench_load = importlib.import_module("bench_load")


def test_concurrent_imap_sessions_and_smtp_senders_lose_nothing(tmp_path: Path) -> None:
    cfg = bench_load.LoadConfig(
        imap_sessions=40,
        smtp_senders=10,
        duration=4.0,
        ramp=1.0,
        think=0.2,
        smtp_think=0.2,
        idle_every=3,
        idle_wait=0.3,
        reconnect_every=4,
        smtp_new_connection_every=3,
        seed_mails=3,
    )
    with live_server(tmp_path) as live:
        report = bench_load.run_load(live.data_dir, cfg, mailboxes=10, procs=0, server=live.server)
        print(bench_load.format_report(report))
        assert live.server.alive(), live.server.stderr_tail()

    assert report.errors == 0, report.first_errors
    assert report.server_tracebacks == 0, live.tracebacks()[:1]
    # Every acknowledged mail exactly once over IMAP; nothing stored without its 250.
    assert report.acked_deliveries > 10 * cfg.seed_mails, report.acked_deliveries
    assert (report.lost, report.duplicated) == (0, 0), report.check_problems
    assert report.unacked_but_stored == 0 and report.sent_unacked == 0
    assert not report.check_problems, report.check_problems
    # Everyone was served while the others ran.
    assert report.imap_sessions_served == cfg.imap_sessions
    assert report.smtp_senders_served == cfg.smtp_senders
    assert report.imap_cycles >= cfg.imap_sessions
    ops = report.latencies
    for op in (
        "imap SELECT",
        "imap UID SEARCH",
        "imap FETCH headers",
        "imap FETCH bodies",
        "imap STORE",
        "imap NOOP",
        "imap IDLE DONE",
        "imap login",
        "smtp mail",
        "smtp connect+STARTTLS+AUTH",
    ):
        assert ops.get(op, {}).get("count", 0) > 0, f"no {op} ran: {sorted(ops)}"
