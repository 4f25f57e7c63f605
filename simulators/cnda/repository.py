"""CNDA tables, row types and the hash-chained event log, over the shared Database.

Reads go through ``db.read``; writes are plain functions of a ``sqlite3.Connection``
so that the service can compose them into ONE write job per operation (the job
re-reads the state inside the writer's transaction: compare-and-set).

Each dossier has its own event chain: ``hash = sha256(canonical_json(event without
hash))`` and each event stores the previous one's hash. The dossier row keeps the
head hash, so editing, deleting or reordering an event, or editing the dossier's
state behind the log's back, is detected by :func:`verify_chain`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from simulators.core.proof import canonical_json, sha256_bytes
from simulators.core.store.database import Database, Schema, register_schema

SCHEMA = Schema(
    "cnda",
    (
        """
        CREATE TABLE cnda_editors (
            nie TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            contact_email TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        );
        CREATE TABLE cnda_software (
            nil TEXT PRIMARY KEY,
            nie TEXT NOT NULL REFERENCES cnda_editors(nie),
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            parent_nil TEXT REFERENCES cnda_software(nil),
            created_at TEXT NOT NULL
        );
        CREATE INDEX cnda_software_nie ON cnda_software(nie);
        CREATE TABLE cnda_requests (
            id TEXT PRIMARY KEY,
            nie TEXT NOT NULL REFERENCES cnda_editors(nie),
            nil TEXT NOT NULL REFERENCES cnda_software(nil),
            service TEXT NOT NULL,
            perimeter TEXT NOT NULL,
            components TEXT NOT NULL DEFAULT '[]',
            psc INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1,
            round INTEGER NOT NULL DEFAULT 1,
            provisional_number TEXT,
            production_number TEXT,
            test_plan TEXT,
            test_environment TEXT,
            expected_return_date TEXT,
            exam_date TEXT,
            exam_mode TEXT,
            exam_attempts INTEGER NOT NULL DEFAULT 0,
            attestation_dir TEXT,
            attestation_sha256 TEXT,
            head_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX cnda_requests_nie ON cnda_requests(nie);
        CREATE TABLE cnda_documents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL REFERENCES cnda_requests(id),
            doc_type TEXT NOT NULL,
            filename TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            stored_path TEXT NOT NULL,
            deposited_at TEXT NOT NULL
        );
        CREATE INDEX cnda_documents_request ON cnda_documents(request_id);
        CREATE TABLE cnda_proofs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL REFERENCES cnda_requests(id),
            round INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('bundle', 'file')),
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            result TEXT,
            details TEXT NOT NULL DEFAULT '{}',
            stored_path TEXT NOT NULL,
            deposited_at TEXT NOT NULL
        );
        CREATE INDEX cnda_proofs_request ON cnda_proofs(request_id, round);
        CREATE TABLE cnda_events (
            request_id TEXT NOT NULL REFERENCES cnda_requests(id),
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            role TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            reason TEXT,
            evidence_sha256 TEXT,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (request_id, seq)
        ) WITHOUT ROWID
        """,
    ),
)
register_schema(SCHEMA)

GENESIS = "0" * 64


@dataclass(frozen=True)
class Editor:
    nie: str
    name: str
    contact_email: str
    created_at: str


@dataclass(frozen=True)
class Software:
    nil: str
    nie: str
    name: str
    version: str
    parent_nil: str | None
    created_at: str


@dataclass(frozen=True)
class Dossier:
    id: str
    nie: str
    nil: str
    service: str
    perimeter: dict[str, list[str]]
    components: list[str]
    psc: bool
    state: str
    version: int
    round: int
    provisional_number: str | None
    production_number: str | None
    test_plan: dict[str, Any] | None
    test_environment: dict[str, Any] | None
    expected_return_date: str | None
    exam_date: str | None
    exam_mode: str | None
    exam_attempts: int
    attestation_dir: str | None
    attestation_sha256: str | None
    head_hash: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Document:
    id: int
    request_id: str
    doc_type: str
    filename: str
    sha256: str
    size: int
    stored_path: str
    deposited_at: str


@dataclass(frozen=True)
class Proof:
    id: int
    request_id: str
    round: int
    kind: str
    name: str
    sha256: str
    size: int
    result: str | None
    details: dict[str, Any]
    stored_path: str
    deposited_at: str


@dataclass(frozen=True)
class Event:
    request_id: str
    seq: int
    at: str
    role: str
    actor: str
    action: str
    from_state: str | None
    to_state: str
    reason: str | None
    evidence_sha256: str | None
    data: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""

    def hashed_fields(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "seq": self.seq,
            "at": self.at,
            "role": self.role,
            "actor": self.actor,
            "action": self.action,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "reason": self.reason,
            "evidence_sha256": self.evidence_sha256,
            "data": self.data,
            "prev_hash": self.prev_hash,
        }

    def compute_hash(self) -> str:
        return sha256_bytes(canonical_json(self.hashed_fields()))


# ---- row mapping ------------------------------------------------------------------------
def _dossier(row: sqlite3.Row) -> Dossier:
    def opt_json(value: str | None) -> Any:
        return json.loads(value) if value else None

    return Dossier(
        id=row["id"],
        nie=row["nie"],
        nil=row["nil"],
        service=row["service"],
        perimeter=json.loads(row["perimeter"]),
        components=json.loads(row["components"]),
        psc=bool(row["psc"]),
        state=row["state"],
        version=row["version"],
        round=row["round"],
        provisional_number=row["provisional_number"],
        production_number=row["production_number"],
        test_plan=opt_json(row["test_plan"]),
        test_environment=opt_json(row["test_environment"]),
        expected_return_date=row["expected_return_date"],
        exam_date=row["exam_date"],
        exam_mode=row["exam_mode"],
        exam_attempts=row["exam_attempts"],
        attestation_dir=row["attestation_dir"],
        attestation_sha256=row["attestation_sha256"],
        head_hash=row["head_hash"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(
        request_id=row["request_id"],
        seq=row["seq"],
        at=row["at"],
        role=row["role"],
        actor=row["actor"],
        action=row["action"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        reason=row["reason"],
        evidence_sha256=row["evidence_sha256"],
        data=json.loads(row["data"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def _proof(row: sqlite3.Row) -> Proof:
    values = dict(row)
    values["details"] = json.loads(values["details"])
    return Proof(**values)


class CndaRepository:
    """Queries over the CNDA tables. Writes are the module-level ``*_in`` functions."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)  # the cnda package may be imported after the db opened

    def editor(self, nie: str) -> Editor | None:
        row = self.db.read_one("SELECT * FROM cnda_editors WHERE nie = ?", (nie,))
        return Editor(**dict(row)) if row else None

    def editors(self) -> list[Editor]:
        return [Editor(**dict(r)) for r in self.db.read("SELECT * FROM cnda_editors ORDER BY 4")]

    def software(self, nil: str) -> Software | None:
        row = self.db.read_one("SELECT * FROM cnda_software WHERE nil = ?", (nil,))
        return Software(**dict(row)) if row else None

    def software_of(self, nie: str) -> list[Software]:
        rows = self.db.read(
            "SELECT * FROM cnda_software WHERE nie = ? ORDER BY created_at, nil", (nie,)
        )
        return [Software(**dict(r)) for r in rows]

    def components_of(self, nil: str) -> list[Software]:
        rows = self.db.read(
            "SELECT * FROM cnda_software WHERE parent_nil = ? ORDER BY created_at, nil", (nil,)
        )
        return [Software(**dict(r)) for r in rows]

    def dossier(self, request_id: str) -> Dossier | None:
        row = self.db.read_one("SELECT * FROM cnda_requests WHERE id = ?", (request_id,))
        return _dossier(row) if row else None

    def dossiers(self, nie: str | None = None) -> list[Dossier]:
        if nie is None:
            rows = self.db.read("SELECT * FROM cnda_requests ORDER BY created_at, id")
        else:
            rows = self.db.read(
                "SELECT * FROM cnda_requests WHERE nie = ? ORDER BY created_at, id", (nie,)
            )
        return [_dossier(r) for r in rows]

    def documents(self, request_id: str) -> list[Document]:
        rows = self.db.read(
            "SELECT * FROM cnda_documents WHERE request_id = ? ORDER BY id", (request_id,)
        )
        return [Document(**dict(r)) for r in rows]

    def proofs(self, request_id: str) -> list[Proof]:
        rows = self.db.read(
            "SELECT * FROM cnda_proofs WHERE request_id = ? ORDER BY id", (request_id,)
        )
        return [_proof(r) for r in rows]

    def events(self, request_id: str) -> list[Event]:
        rows = self.db.read(
            "SELECT * FROM cnda_events WHERE request_id = ? ORDER BY seq", (request_id,)
        )
        return [_event(r) for r in rows]


# ---- inside write jobs ------------------------------------------------------------------
def dossier_in(conn: sqlite3.Connection, request_id: str) -> Dossier | None:
    row = conn.execute("SELECT * FROM cnda_requests WHERE id = ?", (request_id,)).fetchone()
    return _dossier(row) if row else None


def count_in(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def proofs_in(conn: sqlite3.Connection, request_id: str) -> list[Proof]:
    rows = conn.execute(
        "SELECT * FROM cnda_proofs WHERE request_id = ? ORDER BY id", (request_id,)
    ).fetchall()
    return [_proof(r) for r in rows]


def document_types_in(conn: sqlite3.Connection, request_id: str) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT doc_type FROM cnda_documents WHERE request_id = ?", (request_id,)
    ).fetchall()
    return {r[0] for r in rows}


def append_event_in(
    conn: sqlite3.Connection,
    *,
    request_id: str,
    at: str,
    role: str,
    actor: str,
    action: str,
    from_state: str | None,
    to_state: str,
    reason: str | None = None,
    evidence_sha256: str | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    """Append to the dossier's chain and move its head; the caller holds the transaction."""
    last = conn.execute(
        "SELECT seq, hash FROM cnda_events WHERE request_id = ? ORDER BY seq DESC LIMIT 1",
        (request_id,),
    ).fetchone()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    event = Event(
        request_id=request_id,
        seq=seq,
        at=at,
        role=str(role),  # plain str, not StrEnum: the hash must not depend on the type
        actor=actor,
        action=str(action),
        from_state=None if from_state is None else str(from_state),
        to_state=str(to_state),
        reason=reason,
        evidence_sha256=evidence_sha256,
        data=data or {},
        prev_hash=prev_hash,
    )
    digest = event.compute_hash()
    conn.execute(
        "INSERT INTO cnda_events (request_id, seq, at, role, actor, action, from_state, "
        "to_state, reason, evidence_sha256, data, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            request_id,
            seq,
            at,
            event.role,
            actor,
            event.action,
            event.from_state,
            event.to_state,
            reason,
            evidence_sha256,
            canonical_json(event.data).decode("utf-8"),
            prev_hash,
            digest,
        ),
    )
    updated = conn.execute(
        # Every event bumps the version: a job prepared on an older snapshot sees it.
        "UPDATE cnda_requests SET head_hash = ?, updated_at = ?, version = version + 1 "
        "WHERE id = ?",
        (digest, at, request_id),
    )
    if updated.rowcount != 1:
        raise LookupError(f"dossier {request_id} vanished during the event append")
    return Event(**{**event.__dict__, "hash": digest})


def verify_chain(dossier: Dossier, events: list[Event]) -> list[str]:
    """Problems in a dossier's event chain; empty when it is intact."""
    problems: list[str] = []
    prev = GENESIS
    if not events:
        return [f"{dossier.id}: no events"]
    for expected_seq, event in enumerate(events, start=1):
        label = f"event #{event.seq} ({event.action})"
        if event.seq != expected_seq:
            problems.append(f"{label}: sequence gap, expected #{expected_seq} (deleted event?)")
        if event.prev_hash != prev:
            problems.append(f"{label}: does not link to the previous event")
        if event.compute_hash() != event.hash:
            problems.append(f"{label}: content does not match its hash (edited)")
        prev = event.hash
    if dossier.head_hash != prev:
        problems.append("the dossier's head hash does not match the last event (event removed?)")
    if events[-1].to_state != dossier.state:
        problems.append(
            f"the dossier says {dossier.state!r} but its last event leads to "
            f"{events[-1].to_state!r}"
        )
    opened = events[0].data
    for key in ("nie", "nil", "service", "perimeter", "components"):
        if opened.get(key) != getattr(dossier, key):
            problems.append(f"the dossier's {key} differs from the one recorded at opening")
    return problems
