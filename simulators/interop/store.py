"""Where validations are kept: the ``validations`` table of the project's SQLite store.

Every validation, made through the EVS API, the upload API, the console or
``segur-sim interop validate``, becomes one row: its OID (the EVS identifier, also
used by the CLI), the report's uuid, the time, kind, validator, object name, sha256
and size, the result and counters, and the whole report as JSON (so the gvr, JSON,
text and HTML forms can be rebuilt, with or without a severity threshold).

``SqliteValidationRepository(db)`` is the store-backed repository;
``InMemoryValidationRepository`` keeps them in memory (the EVS router's default when
the application has no store). Both follow :class:`ValidationRepository`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from simulators.core.proof import utc_now_iso
from simulators.core.store.database import Database, Schema, register_schema
from simulators.interop.report import ValidationReport

# segur-sim simulated validation OIDs (Gazelle gives each validation an OID)
OID_ROOT = "1.2.250.1.213.1.1.9.99.1"

SCHEMA = Schema(
    "interop",
    (
        """
        CREATE TABLE validations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            oid TEXT NOT NULL UNIQUE,
            uuid TEXT NOT NULL,
            created_at TEXT NOT NULL,
            origin TEXT NOT NULL,
            kind TEXT NOT NULL,
            validator TEXT NOT NULL,
            service_name TEXT NOT NULL,
            requested_validator TEXT NOT NULL,
            object_name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            result TEXT NOT NULL CHECK (result IN ('PASSED', 'FAILED')),
            constraints INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            warnings INTEGER NOT NULL,
            infos INTEGER NOT NULL,
            report_json TEXT NOT NULL
        );
        CREATE INDEX validations_created ON validations(created_at);
        CREATE INDEX validations_sha256 ON validations(sha256)
        """,
    ),
)
register_schema(SCHEMA)


def new_oid() -> str:
    return f"{OID_ROOT}.{uuid.uuid4().int % 10**12}"


@dataclass
class StoredValidation:
    """One kept validation. ``service_name``/``validator`` are what the caller asked
    for (Gazelle's service and validator names, or "segur-sim cli" and the kind)."""

    oid: str
    report: ValidationReport
    service_name: str
    validator: str
    origin: str = "api"  # api (EVS), upload, console, cli...
    created_at: str = field(default_factory=utc_now_iso)
    id: int | None = None

    def summary(self) -> dict[str, object]:
        """What a listing shows (no constraint details)."""
        counters = self.report.counters
        return {
            "id": self.id,
            "oid": self.oid,
            "uuid": self.report.uuid,
            "createdAt": self.created_at,
            "origin": self.origin,
            "kind": self.report.kind,
            "validatorID": self.report.validator_id,
            "validationService": self.service_name,
            "validator": self.validator,
            "objectName": self.report.object_name,
            "sha256": self.report.object_sha256,
            "size": self.report.object_size,
            "result": self.report.result.value,
            "counters": {
                "constraints": counters.constraints,
                "errors": counters.errors,
                "warnings": counters.warnings,
                "infos": counters.infos,
            },
        }


class ValidationRepository(Protocol):
    def save(self, item: StoredValidation) -> None: ...

    def get(self, oid: str) -> StoredValidation | None: ...

    def page(self, *, offset: int = 0, limit: int = 50) -> tuple[list[StoredValidation], int]:
        """Newest first: (``limit`` items from ``offset``, total count)."""
        ...


class InMemoryValidationRepository:
    def __init__(self) -> None:
        self._items: dict[str, StoredValidation] = {}
        self._lock = threading.Lock()

    def save(self, item: StoredValidation) -> None:
        with self._lock:
            if item.id is None:
                item.id = len(self._items) + 1
            self._items[item.oid] = item

    def get(self, oid: str) -> StoredValidation | None:
        with self._lock:
            return self._items.get(oid)

    def page(self, *, offset: int = 0, limit: int = 50) -> tuple[list[StoredValidation], int]:
        with self._lock:
            items = sorted(
                self._items.values(), key=lambda i: (i.created_at, i.id or 0), reverse=True
            )
        return items[max(offset, 0) : max(offset, 0) + max(limit, 0)], len(items)


def _insert(conn: sqlite3.Connection, item: StoredValidation) -> int:
    report = item.report
    counters = report.counters
    cursor = conn.execute(
        "INSERT INTO validations (oid, uuid, created_at, origin, kind, validator, "
        "service_name, requested_validator, object_name, sha256, size, result, constraints, "
        "errors, warnings, infos, report_json) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            item.oid,
            report.uuid,
            item.created_at,
            item.origin,
            report.kind,
            report.validator_id,
            item.service_name,
            item.validator,
            report.object_name,
            report.object_sha256,
            report.object_size,
            report.result.value,
            counters.constraints,
            counters.errors,
            counters.warnings,
            counters.infos,
            json.dumps(report.to_dict(), ensure_ascii=False, separators=(",", ":")),
        ),
    )
    return int(cursor.lastrowid or 0)


def _item(row: sqlite3.Row) -> StoredValidation:
    return StoredValidation(
        oid=row["oid"],
        report=ValidationReport.from_dict(json.loads(row["report_json"])),
        service_name=row["service_name"],
        validator=row["requested_validator"],
        origin=row["origin"],
        created_at=row["created_at"],
        id=row["id"],
    )


class SqliteValidationRepository:
    """Validations in the ``validations`` table of a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)  # this package may be imported after the db opened

    def save(self, item: StoredValidation) -> None:
        item.id = self.db.write_sync(lambda conn: _insert(conn, item))

    def save_many(self, items: list[StoredValidation]) -> None:
        """One write job (one commit) for a batch, as the CLI does."""

        def job(conn: sqlite3.Connection) -> list[int]:
            return [_insert(conn, item) for item in items]

        for item, row_id in zip(items, self.db.write_sync(job), strict=True):
            item.id = row_id

    def get(self, oid: str) -> StoredValidation | None:
        row = self.db.read_one("SELECT * FROM validations WHERE oid = ?", (oid,))
        return _item(row) if row else None

    def page(self, *, offset: int = 0, limit: int = 50) -> tuple[list[StoredValidation], int]:
        total_row = self.db.read_one("SELECT count(*) AS n FROM validations")
        total = int(total_row["n"]) if total_row else 0
        rows = self.db.read(
            "SELECT * FROM validations ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (max(limit, 0), max(offset, 0)),
        )
        return [_item(r) for r in rows], total
