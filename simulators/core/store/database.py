"""SQLite in WAL mode with one writer thread that group-commits.

Why a writer thread: every acknowledged message must be on disk (fsync) before its
``250``, and an fsync costs about 0.45 ms here. The writer drains all pending jobs,
runs each in its own SAVEPOINT inside one transaction and commits once, so N
concurrent SMTP sessions share one fsync. A failing job rolls back to its savepoint
and only its own future gets the exception.

Like PostgreSQL's ``commit_delay``/``commit_siblings``, a batch waits up to
``commit_delay`` for more jobs, but only while *announced* writers exist: a caller that
knows it will write soon (an SMTP session between MAIL and the end of DATA) holds an
:class:`Expected` token. With eight concurrent senders this halves the commits (and
their WAL frames and fsyncs); a lone client never waits, since its own token is
returned just before its write is queued.

Rows nobody waits for (the wire recorder's) do not get commits of their own: a
*batch hook* writes them inside whatever batch runs next, and :meth:`Database.poke`
makes sure a batch runs within ``lazy_delay`` if no other write comes. Without this,
the recorder cost one more fsync'd commit per SMTP message.

Reads use one connection per thread (WAL lets readers run beside the writer).
Each package declares its tables with :func:`register_schema`; they are created
or migrated when a database opens. A PostgreSQL implementation would provide the
same repository classes over another connection type.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("segur_sim.store")

WriteJob = Callable[[sqlite3.Connection], Any]
BatchHook = Callable[[sqlite3.Connection], None]

_POKE = object()  # queue marker: lazy rows are waiting, run the batch hooks soon
LAZY_DELAY = 0.02
COMMIT_DELAY = 0.003  # the longest a batch waits for announced writers
MAX_BATCH = 512

# What waits for a job: a concurrent future (write_sync, other threads) or an asyncio
# future with its loop (write), settled from the loop's thread in one hop per batch.
Waiter = concurrent.futures.Future[Any] | tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]


@dataclass(frozen=True)
class Schema:
    """Versioned DDL of one package. ``migrations[i]`` brings version i to i+1."""

    name: str
    migrations: tuple[str, ...]


_SCHEMAS: dict[str, Schema] = {}


def register_schema(schema: Schema) -> None:
    _SCHEMAS[schema.name] = schema


class Expected:
    """A write announced ahead: while it is held, batches wait (a little) for it."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db: Database | None = db
        db._expected += 1
        if db._expected == 1:
            db._all_in.clear()

    def release(self) -> None:
        """Idempotent: the write was queued, or will not come."""
        db = self._db
        if db is not None:
            self._db = None
            db._expected -= 1
            # No wake-up here: the write that follows does it (``_queue``); a token
            # given back without a write costs a waiting batch its delay at most.


class Database:
    """Owns the connections. Thread-safe; one instance per data directory."""

    def __init__(
        self,
        path: Path,
        *,
        durable: bool = True,
        lazy_delay: float = LAZY_DELAY,
        commit_delay: float = COMMIT_DELAY,
    ) -> None:
        self.path = path
        self.durable = durable
        self.lazy_delay = lazy_delay
        self.commit_delay = commit_delay
        # Announced writers (Expected tokens). Changed by the threads that announce (an
        # event loop's), only read by the writer: a stale read costs a little batching.
        self._expected = 0
        # Set while no write is announced: a batch waiting for announced writes sleeps
        # on it rather than waking at every job that arrives.
        self._all_in = threading.Event()
        self._all_in.set()
        self._local = threading.local()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._after_commit: list[Callable[[], None]] = []
        self._batch_hooks: list[BatchHook] = []
        self._writer_conn = self._connect()
        self._writer_conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (name TEXT PRIMARY KEY, version INTEGER)"
        )
        self._migrate()
        self._writer = threading.Thread(target=self._writer_loop, name="db-writer", daemon=True)
        self._closed = False
        self._writer.start()

    # ---- connections ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so a 250 survives power loss, not
        # only kill -9. Group commit keeps the cost per message low.
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        # The statement journals of the per-job SAVEPOINTs in memory: as files, SQLite
        # created, truncated and unlinked one per batch (a third of the writer's
        # system time in bench_smtp.py). They hold only the pages one job changed.
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    @property
    def reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def read(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self.reader.execute(sql, params).fetchall()

    def read_one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.reader.execute(sql, params).fetchone()
        return row

    # ---- schema --------------------------------------------------------------------
    def _migrate(self) -> None:
        conn = self._writer_conn
        for schema in list(_SCHEMAS.values()):
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._apply(conn, schema)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def ensure_schema(self, schema: Schema) -> None:
        """Apply a schema registered after this database opened (lazy imports)."""
        register_schema(schema)
        # Runs as a writer job, i.e. inside the batch transaction and its savepoint.
        self.write_sync(lambda conn: self._apply(conn, schema))

    @staticmethod
    def _apply(conn: sqlite3.Connection, schema: Schema) -> None:
        """Bring ``schema`` to its last version; the caller owns the transaction."""
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE name = ?", (schema.name,)
        ).fetchone()
        current = row[0] if row else 0
        for version in range(current, len(schema.migrations)):
            for statement in _split_sql(schema.migrations[version]):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_versions(name, version) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET version = excluded.version",
                (schema.name, version + 1),
            )

    # ---- writes --------------------------------------------------------------------
    def submit(self, job: WriteJob) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue((job, future))
        return future

    def _queue(self, item: tuple[WriteJob, Waiter]) -> None:
        if self._closed:
            raise RuntimeError("database is closed")
        self._jobs.put(item)
        if self._expected == 0:
            self._all_in.set()  # every announced write is queued: the batch can go

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` in the writer thread; returns once it is committed (durable)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._queue((job, (loop, waiter)))
        return await waiter

    def expect(self) -> Expected:
        """Announce a write to come soon; release the token just before writing."""
        return Expected(self)

    def write_sync(self, job: Callable[[sqlite3.Connection], T]) -> T:
        result: T = self.submit(job).result()
        return result

    def add_batch_hook(self, hook: BatchHook) -> None:
        """Run ``hook(conn)`` inside every batch, after its jobs, before the commit."""
        self._batch_hooks.append(hook)

    def poke(self) -> None:
        """A batch hook has rows waiting: run a batch within ``lazy_delay`` seconds."""
        if not self._closed:
            self._jobs.put(_POKE)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the writer thread) after the current batch commits.

        The same callback registered twice in one batch runs once.
        """
        if callback not in self._after_commit:
            self._after_commit.append(callback)

    def _writer_loop(self) -> None:
        conn = self._writer_conn
        while True:
            first = self._jobs.get()
            if first is _POKE:
                # Give real jobs a moment to come and carry the hooks' rows.
                try:
                    first = self._jobs.get(timeout=self.lazy_delay)
                except queue.Empty:
                    first = _POKE
            if first is None:
                break
            batch = [] if first is _POKE else [first]
            stop = self._gather(batch)
            self._run_batch(conn, batch)
            if stop:
                break
        self._run_batch(conn, [])  # what the hooks still hold
        conn.close()

    def _gather(self, batch: list[tuple[WriteJob, Waiter]]) -> bool:
        """Add the queued jobs to ``batch``, waiting for announced ones. True: stop."""
        deadline = 0.0
        while True:
            while len(batch) < MAX_BATCH:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    return True
                if item is not _POKE:
                    batch.append(item)
            else:
                return False  # full
            if not (batch and self._expected > 0 and self.commit_delay > 0):
                return False
            now = time.monotonic()
            if not deadline:
                deadline = now + self.commit_delay
            if now >= deadline:
                return False
            # Woken once every announced write is queued (or at the deadline), not at
            # each job: each wake-up of this thread is a futex and a GIL hand-over.
            self._all_in.wait(deadline - now)

    def _run_batch(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[WriteJob, Waiter]],
    ) -> None:
        results: list[tuple[Waiter, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, future in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = job(conn)
                except BaseException as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((future, False, exc))
                else:
                    conn.execute("RELEASE job")
                    results.append((future, True, value))
            for hook in self._batch_hooks:
                conn.execute("SAVEPOINT hook")
                try:
                    hook(conn)
                except Exception:
                    # Lazy rows must never cost the batch's acknowledged writes.
                    log.exception("batch hook %r failed; its rows are dropped", hook)
                    conn.execute("ROLLBACK TO hook")
                conn.execute("RELEASE hook")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._after_commit.clear()
            _settle([(waiter, False, exc) for _job, waiter in batch])
            return
        callbacks, self._after_commit = self._after_commit, []
        _settle(results)
        for callback in callbacks:
            with contextlib.suppress(Exception):  # a listener must not kill the writer
                callback()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._writer.join(timeout=30)
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _settle(results: list[tuple[Waiter, bool, Any]]) -> None:
    """Give each waiter its outcome: one hop into each event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for waiter, ok, value in results:
        if isinstance(waiter, tuple):
            loop, future = waiter
            by_loop.setdefault(loop, []).append((future, ok, value))
        elif not waiter.done():
            # A caller in another thread may cancel it between the test and the set.
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                _resolve(waiter, ok, value)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle_in_loop, items)


def _settle_in_loop(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if not future.done():  # done: cancelled, its session went away; the write stands
            _resolve(future, ok, value)


def _resolve(
    future: asyncio.Future[Any] | concurrent.futures.Future[Any], ok: bool, value: Any
) -> None:
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _split_sql(script: str) -> list[str]:
    """Split a DDL script on ';' at statement ends (our DDL has no ';' in literals)."""
    return [part.strip() for part in script.split(";") if part.strip()]
