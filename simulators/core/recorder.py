"""The wire recorder: every SMTP/IMAP/HTTP session and every line, with timestamps.

The unit tests judge from these records, so they keep what a test operator would
look at: client address, TLS version and cipher, the suites the client offered,
the client certificate, the SASL mechanism and whether SASL-IR was used, IMAP ID
fields, and the transcript with credentials and tokens redacted.

Rows are buffered and written by a batch hook of the store: they ride in the next
group commit (a mail being stored, a flag set...) or, when nothing else is written,
in a commit at most ``Database.lazy_delay`` later. Recording costs no commit of its
own; a crash can lose the last few milliseconds of transcript, never a message.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulators.core.store.database import Database, Schema, register_schema

SCHEMA = Schema(
    "recorder",
    (
        """
        CREATE TABLE wire_sessions (
            id TEXT PRIMARY KEY,
            protocol TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            client_addr TEXT,
            client_port INTEGER,
            started_at REAL NOT NULL,
            ended_at REAL,
            fields TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX wire_sessions_started ON wire_sessions(started_at);
        CREATE TABLE wire_events (
            session_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('C', 'S', 'I')),
            data TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)
        ) WITHOUT ROWID
        """,
        # Version 2: the events of one session that reach one commit share a row (about
        # nine per mail, one row instead of nine). ``wire_events`` keeps older data.
        """
        CREATE TABLE wire_event_chunks (
            session_id TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            events TEXT NOT NULL,
            PRIMARY KEY (session_id, first_seq)
        ) WITHOUT ROWID
        """,
    ),
)
register_schema(SCHEMA)

# Session fields the servers fill in; listed here so readers know what to expect.
KNOWN_FIELDS = (
    "tls",  # bool: TLS active at the end (implicit or STARTTLS)
    "starttls",  # bool: upgraded with STARTTLS
    "tls_version",  # e.g. "TLSv1.3"
    "tls_cipher",  # OpenSSL name of the negotiated suite
    "tls_offered",  # suites offered by the client that this server could use
    "tls_error",  # why a handshake failed
    "client_cert_subject",
    "client_cert_fingerprint",
    "client_cert_verdict",  # ok/refused reason from the PKI
    "sasl_mechanism",
    "sasl_ir",  # bool: initial response sent with the AUTH/AUTHENTICATE command
    "auth_user",
    "auth_ok",
    "auth_error",
    "auth_before_tls",  # bool: the client tried to authenticate in clear text
    "imap_id",  # dict of the client's ID fields
    "close_reason",  # "client-quit", "client-dropped", "server-drop", "timeout"...
)

_counter = itertools.count(1)
_PID = os.getpid()


def new_session_id(protocol: str) -> str:
    # Sortable and unique across restarts: time, process, counter.
    return f"{protocol}-{int(time.time() * 1000):x}-{_PID:x}-{next(_counter):x}"


@dataclass(frozen=True)
class WireEvent:
    seq: int
    ts: float
    direction: str
    data: str


@dataclass(frozen=True)
class WireSession:
    id: str
    protocol: str
    endpoint: str
    client_addr: str | None
    client_port: int | None
    started_at: float
    ended_at: float | None
    fields: dict[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


Listener = Callable[["SessionRecord", str, Any], None]


class SessionRecord:
    """The live record of one session. Not thread-safe: use it from its own task."""

    def __init__(
        self,
        recorder: Recorder,
        protocol: str,
        endpoint: str,
        peer: tuple[Any, ...] | None,
    ) -> None:
        self.recorder = recorder
        self.id = new_session_id(protocol)
        self.protocol = protocol
        self.endpoint = endpoint
        self.client_addr = str(peer[0]) if peer else None
        self.client_port = int(peer[1]) if peer and len(peer) > 1 else None
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.fields: dict[str, Any] = {}
        self._seq = 0
        self.closed = False
        recorder._queue_session(self)

    def _event(self, direction: str, data: str) -> None:
        self._seq += 1
        # Integer microseconds: a float's repr was a third of the recorder's JSON time.
        self.recorder._queue_event(self.id, self._seq, time.time_ns() // 1000, direction, data)

    def client(self, data: str | bytes) -> None:
        """A line the client sent (already redacted by the caller when it holds secrets)."""
        self._event("C", _text(data))

    def server(self, data: str | bytes) -> None:
        self._event("S", _text(data))

    def note(self, data: str) -> None:
        """Something that is not on the wire: TLS established, a fault injected..."""
        self._event("I", _storable(data))
        self.recorder._emit(self, "note", data)

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)
        self.recorder._queue_session(self)
        for name, value in fields.items():
            self.recorder._emit(self, name, value)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.fields.setdefault("close_reason", reason)
        self.ended_at = time.time()
        self.recorder._queue_session(self)
        self.recorder._emit(self, "closed", reason)


def _text(data: str | bytes) -> str:
    if isinstance(data, bytes):
        data = data.decode("utf-8", "backslashreplace")
    elif not data.isascii():
        data = _storable(data)
    return data.rstrip("\r\n")


def _storable(text: str) -> str:
    """Non-UTF-8 octets that a server decoded as lone surrogates, shown as ``\\x80``.

    SQLite cannot store a lone surrogate: one such line would cost the whole batch
    of recorded rows it travels in.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


class Recorder:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)
        db.add_batch_hook(self._write_rows)
        # Filled by the servers' threads, drained by the store's writer thread. Deques,
        # not a lock: deque.append and popleft are atomic, and a lock held by the
        # writer stalled every session's next line.
        self._sessions: collections.deque[SessionRecord] = collections.deque()
        self._events: collections.deque[tuple[str, int, int, str, str]] = collections.deque()
        self._flush_pending = False
        self._listeners: list[Listener] = []

    def open_session(
        self, protocol: str, endpoint: str, peer: tuple[Any, ...] | None
    ) -> SessionRecord:
        return SessionRecord(self, protocol, endpoint, peer)

    # ---- listeners (the runner waits on these) --------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, record: SessionRecord, name: str, value: Any) -> None:
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):  # a listener must not break a session
                listener(record, name, value)

    # ---- buffered persistence ---------------------------------------------------------
    def _queue_session(self, record: SessionRecord) -> None:
        self._sessions.append(record)
        self._schedule()

    def _queue_event(self, session_id: str, seq: int, ts: int, direction: str, data: str) -> None:
        self._events.append((session_id, seq, ts, direction, data))
        self._schedule()

    def _schedule(self) -> None:
        # Appended first, then checked: whatever this sees, the row is written by the
        # batch that is pending or by the one this poke asks for.
        if not self._flush_pending:
            self._flush_pending = True
            self.db.poke()

    def _write_rows(self, conn: sqlite3.Connection) -> None:
        if not self._flush_pending:
            return
        self._flush_pending = False
        records: dict[str, SessionRecord] = {}
        rows: list[tuple[str, int, str]] = []
        while self._sessions:
            record = self._sessions.popleft()
            records[record.id] = record
        # One row per session per batch: [ts_us, direction, data] per event, the first
        # event's seq in first_seq and the others following it (one session's events
        # are queued in order by its own thread). Older rows hold [seq, ts, dir, data].
        chunks: dict[str, tuple[int, list[tuple[int, str, str]]]] = {}
        while self._events:
            session_id, seq, ts, direction, data = self._events.popleft()
            chunk = chunks.get(session_id)
            if chunk is None or chunk[0] + len(chunk[1]) != seq:
                if chunk is not None:  # seqs not consecutive: first_seq + index would lie
                    rows.append((session_id, chunk[0], json.dumps(chunk[1], ensure_ascii=False)))
                chunk = chunks[session_id] = (seq, [])
            chunk[1].append((ts, direction, data))
        sessions = [
            (
                r.id,
                r.protocol,
                r.endpoint,
                r.client_addr,
                r.client_port,
                r.started_at,
                r.ended_at,
                # a copy: the session's own thread may be setting fields meanwhile
                json.dumps(dict(r.fields), default=str),
            )
            for r in records.values()
        ]
        conn.executemany(
            "INSERT INTO wire_sessions(id, protocol, endpoint, client_addr, client_port,"
            " started_at, ended_at, fields) VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET ended_at = excluded.ended_at, fields = excluded.fields",
            sessions,
        )
        rows += [
            (session_id, first, json.dumps(events, ensure_ascii=False))
            for session_id, (first, events) in chunks.items()
        ]
        conn.executemany(
            "INSERT OR IGNORE INTO wire_event_chunks(session_id, first_seq, events) VALUES (?,?,?)",
            rows,
        )

    def flush(self) -> None:
        """Block until everything recorded so far is committed."""
        self.db.write_sync(lambda conn: None)

    # ---- queries ----------------------------------------------------------------------
    def sessions(
        self,
        *,
        since: float = 0.0,
        protocol: str | None = None,
        endpoint: str | None = None,
    ) -> list[WireSession]:
        sql = "SELECT * FROM wire_sessions WHERE started_at >= ?"
        params: list[Any] = [since]
        if protocol:
            sql += " AND protocol = ?"
            params.append(protocol)
        if endpoint:
            sql += " AND endpoint = ?"
            params.append(endpoint)
        rows = self.db.read(sql + " ORDER BY started_at, id", params)
        return [_row_session(r) for r in rows]

    def session(self, session_id: str) -> WireSession | None:
        row = self.db.read_one("SELECT * FROM wire_sessions WHERE id = ?", (session_id,))
        return _row_session(row) if row else None

    def events(self, session_id: str) -> list[WireEvent]:
        rows = self.db.read(
            "SELECT seq, ts, direction, data FROM wire_events WHERE session_id = ?",
            (session_id,),
        )
        events = [WireEvent(r[0], r[1], r[2], r[3]) for r in rows]
        for first, chunk in self.db.read(
            "SELECT first_seq, events FROM wire_event_chunks WHERE session_id = ?", (session_id,)
        ):
            for index, event in enumerate(json.loads(chunk)):
                if len(event) == 4:  # rows written before the compact format
                    events.append(WireEvent(*event))
                else:
                    ts_us, direction, data = event
                    events.append(WireEvent(first + index, ts_us / 1e6, direction, data))
        events.sort(key=lambda event: event.seq)
        return events

    def transcript(self, session_id: str) -> str:
        """A readable transcript, as it goes into proof artefacts."""
        session = self.session(session_id)
        if session is None:
            return ""
        lines = [
            f"# session {session.id} ({session.protocol} on {session.endpoint}) from "
            f"{session.client_addr}:{session.client_port}",
            f"# fields {json.dumps(session.fields, sort_keys=True, default=str)}",
        ]
        arrows = {"C": "C:", "S": "S:", "I": "--"}
        for ev in self.events(session_id):
            stamp = time.strftime("%H:%M:%S", time.gmtime(ev.ts)) + f".{int(ev.ts % 1 * 1000):03d}"
            lines.append(f"{stamp} {arrows[ev.direction]} {ev.data}")
        return "\n".join(lines) + "\n"


def _row_session(row: sqlite3.Row) -> WireSession:
    return WireSession(
        row["id"],
        row["protocol"],
        row["endpoint"],
        row["client_addr"],
        row["client_port"],
        row["started_at"],
        row["ended_at"],
        json.loads(row["fields"]),
    )
