"""Crash safety: ``segur-sim serve`` killed with SIGKILL 10 times while clients send.

The campaign itself is ``bench/crash_safety.py`` (``--kills 100`` is the long run):
four SMTP senders (implicit TLS and STARTTLS) and one IMAP APPEND client, every
message with its own Message-ID and never retried; random kill moments, some of them
during the server's own start-up; a restart on the same data directory each time.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from .support import BENCH

assert BENCH.is_dir()
from crash_safety import run_campaign  # noqa: E402  (bench/ is on sys.path via .support)

KILLS = 10


def test_every_acknowledged_message_survives_kill_9_exactly_once(tmp_path: Path) -> None:
    seed = int(os.environ.get("SEGUR_SIM_CRASH_SEED", random.randrange(1 << 30)))
    result = run_campaign(tmp_path / "data", kills=KILLS, seed=seed, up_seconds=(0.2, 0.9))
    summary = f"seed {seed}: " + result.summary()
    print(summary)
    assert result.kills == KILLS
    assert len(result.restart_seconds) == KILLS, summary  # it came back after every kill
    # The kills really hit traffic: messages were acknowledged across many incarnations,
    # and some were in flight (sent, answer never received) when the server died.
    assert len(result.acked) >= 100, summary
    assert len(result.attempted - result.acked) >= 3, summary
    assert any(m.startswith("crash-imap-") for m in result.acked), summary
    # What matters: nothing acknowledged is lost, nothing is stored twice or invented,
    # IMAP shows what the store holds, and SQLite is intact.
    assert not result.lost, summary
    assert not result.duplicated, summary
    assert not result.phantoms, summary
    assert result.over_imap == result.in_store, summary
    assert result.integrity == "ok", summary
    assert result.problems() == [], summary
