"""Group commit of the SQLite store: announced writers, loop futures, cancellation.

Each test counts the batches (one commit each) with a batch hook, so the assertions
are about what was committed together, not about timings. Delays are set far apart
(a commit delay of 30 s where waiting would be the bug) so that nothing is close.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from simulators.core.store.database import Database


def open_db(path: Path, commit_delay: float) -> tuple[Database, list[int]]:
    db = Database(path / "store.db", commit_delay=commit_delay)
    batches: list[int] = []
    db.write_sync(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
    db.add_batch_hook(lambda conn: batches.append(1))
    return db, batches


def insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def job(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        return value

    return job


def test_a_batch_waits_for_an_announced_write(tmp_path: Path) -> None:
    db, batches = open_db(tmp_path, commit_delay=30)

    async def scenario() -> list[int]:
        token = db.expect()
        first = asyncio.ensure_future(db.write(insert(1)))
        await asyncio.sleep(0.3)
        assert not first.done(), "committed without waiting for the announced write"
        token.release()  # as the SMTP handler does just before queueing its message
        second = db.write(insert(2))
        return list(await asyncio.gather(first, second))

    with db:
        assert asyncio.run(asyncio.wait_for(scenario(), timeout=20)) == [1, 2]
        assert len(batches) == 1, "the two writes were committed separately"
        assert sorted(r[0] for r in db.read("SELECT x FROM t")) == [1, 2]
        assert db._expected == 0


def test_without_announcements_a_write_commits_at_once(tmp_path: Path) -> None:
    db, batches = open_db(tmp_path, commit_delay=30)
    with db:
        # Waiting for the 30 s delay would trip the 10 s timeout.
        assert asyncio.run(asyncio.wait_for(db.write(insert(7)), timeout=10)) == 7
        assert len(batches) == 1


def test_a_forgotten_announcement_delays_a_commit_by_the_delay_only(tmp_path: Path) -> None:
    db, batches = open_db(tmp_path, commit_delay=0.2)
    with db:
        db.expect()  # never released (a session that died without cleaning up)
        result = asyncio.run(asyncio.wait_for(db.write(insert(3)), timeout=10))
        assert result == 3
        assert len(batches) == 1


def test_release_is_idempotent(tmp_path: Path) -> None:
    db, _batches = open_db(tmp_path, commit_delay=0.01)
    with db:
        token = db.expect()
        other = db.expect()
        assert db._expected == 2
        token.release()
        token.release()
        assert db._expected == 1
        other.release()
        assert db._expected == 0


def test_a_cancelled_writer_still_commits_and_the_writer_goes_on(tmp_path: Path) -> None:
    db, _batches = open_db(tmp_path, commit_delay=30)

    async def scenario() -> int:
        token = db.expect()
        doomed = asyncio.ensure_future(db.write(insert(4)))
        await asyncio.sleep(0.1)
        doomed.cancel()  # the client went away while its message was being stored
        with pytest.raises(asyncio.CancelledError):
            await doomed
        token.release()
        return await db.write(insert(5))

    with db:
        assert asyncio.run(asyncio.wait_for(scenario(), timeout=20)) == 5
        # Written all the same: once queued, an acknowledged-or-not write is not undone.
        assert sorted(r[0] for r in db.read("SELECT x FROM t")) == [4, 5]
        assert db.write_sync(insert(6)) == 6


def test_a_failing_job_fails_only_its_own_waiter(tmp_path: Path) -> None:
    db, batches = open_db(tmp_path, commit_delay=30)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (99)")
        raise ValueError("broken job")

    async def scenario() -> list[object]:
        token = db.expect()
        bad = asyncio.ensure_future(db.write(broken))
        await asyncio.sleep(0.1)
        token.release()
        good = db.write(insert(8))
        return list(await asyncio.gather(bad, good, return_exceptions=True))

    with db:
        bad, good = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
        assert isinstance(bad, ValueError) and str(bad) == "broken job"
        assert good == 8
        assert len(batches) == 1
        assert [r[0] for r in db.read("SELECT x FROM t")] == [8]  # 99 rolled back alone
