"""The validations table and its repositories (SQLite and in memory)."""

from __future__ import annotations

import json
from pathlib import Path

from interop_helpers import FIXTURES, mutate

from simulators.core.store.database import Database
from simulators.interop.engine import validate_bytes
from simulators.interop.report import ValidationReport
from simulators.interop.store import (
    OID_ROOT,
    InMemoryValidationRepository,
    SqliteValidationRepository,
    StoredValidation,
    new_oid,
)

GOOD = (FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml").read_bytes()
BAD = mutate(GOOD, b'confidentialityCode code="N"', b'confidentialityCode code="X"')


def _reports() -> list[ValidationReport]:
    return [
        validate_bytes(GOOD, name="good.xml"),
        validate_bytes(BAD, name="bad.xml"),
        validate_bytes(b"\xff\xfe not xml", name="junk.bin"),
    ]


def test_sqlite_repository_keeps_every_field_and_the_whole_report(tmp_path: Path) -> None:
    reports = _reports()
    items = [StoredValidation(new_oid(), r, "svc", "kind=auto", origin="cli") for r in reports]
    with Database(tmp_path / "db.sqlite3") as db:
        repo = SqliteValidationRepository(db)
        repo.save(items[0])
        repo.save_many(items[1:])
        assert [i.id for i in items] == [1, 2, 3]
    with Database(tmp_path / "db.sqlite3") as db:  # reopened: it is on disk
        repo = SqliteValidationRepository(db)
        for item, report in zip(items, reports, strict=True):
            back = repo.get(item.oid)
            assert back is not None and back.oid.startswith(OID_ROOT + ".")
            assert back.report.to_dict() == report.to_dict()
            assert (back.service_name, back.validator, back.origin) == ("svc", "kind=auto", "cli")
            assert back.created_at == item.created_at and back.id == item.id
        row = db.read_one("SELECT * FROM validations WHERE oid = ?", (items[1].oid,))
        assert row is not None
        assert (row["result"], row["kind"], row["object_name"]) == ("FAILED", "cda", "bad.xml")
        assert row["errors"] == reports[1].counters.errors >= 1
        assert row["size"] == len(BAD) and row["sha256"] == reports[1].object_sha256
        assert json.loads(row["report_json"])["result"] == "FAILED"
        newest, total = repo.page(limit=2)
        assert total == 3 and [i.oid for i in newest] == [items[2].oid, items[1].oid]
        rest, _ = repo.page(offset=2, limit=2)
        assert [i.oid for i in rest] == [items[0].oid]
        assert repo.get("1.2.3") is None
        summary = rest[0].summary()
        assert summary["objectName"] == "good.xml" and summary["result"] == "PASSED"


def test_in_memory_repository_pages_the_same_way() -> None:
    repo = InMemoryValidationRepository()
    items = [StoredValidation(new_oid(), r, "svc", "v") for r in _reports()]
    for item in items:
        repo.save(item)
    page, total = repo.page(offset=1, limit=5)
    assert total == 3 and [i.oid for i in page] == [items[1].oid, items[0].oid]
