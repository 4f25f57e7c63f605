"""Run state: runs and their results, kept in the store (Inferno keeps definitions in
memory and run state in the database; so do we).

A run has a run ID (``SIMU-MSS-<date>-<n>``, visibly not a MOTCO2 execution ID), one
result per unit test and one per step, each with its verdict.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from simulators.core.store.database import Database, Schema, register_schema
from simulators.core.verdict import Status, Verdict, roll_up

SCHEMA = Schema(
    "mss_runs",
    (
        """
        CREATE TABLE mss_runs (
            id TEXT PRIMARY KEY,
            suite TEXT NOT NULL,
            case_id TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            mailbox_type TEXT NOT NULL,
            nil TEXT NOT NULL,
            mode TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            proof_dir TEXT,
            document TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX mss_runs_started ON mss_runs(started_at);
        CREATE TABLE mss_results (
            run_id TEXT NOT NULL REFERENCES mss_runs(id),
            test_id TEXT NOT NULL,
            step_id TEXT NOT NULL,  -- '' for the unit test itself
            seq INTEGER NOT NULL,
            status TEXT NOT NULL,
            started_at REAL,
            ended_at REAL,
            verdict TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (run_id, test_id, step_id)
        );
        """,
    ),
)
register_schema(SCHEMA)


@dataclass
class StepResult:
    step_id: str
    stage: str
    action: str
    instruction: str
    status: Status = Status.WAIT
    verdict: Verdict | None = None
    started_at: float | None = None
    ended_at: float | None = None
    client: dict[str, Any] = field(default_factory=dict)  # exit code, output artefact
    marks: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.step_id,
            "stage": self.stage,
            "action": self.action,
            "instruction": self.instruction,
            "status": self.status.value,
            "verdict": self.verdict.as_dict() if self.verdict else None,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "client": self.client,
            "marks": self.marks,
        }


@dataclass
class TestResult:
    test_id: str
    name: str
    title: str
    requirements: tuple[str, ...]
    steps: list[StepResult]
    status: Status = Status.WAIT
    verdict: Verdict | None = None

    @property
    def started_at(self) -> float | None:
        return self.steps[0].started_at if self.steps else None

    @property
    def ended_at(self) -> float | None:
        return self.steps[-1].ended_at if self.steps else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.test_id,
            "name": self.name,
            "title": self.title,
            "requirements": list(self.requirements),
            "status": self.status.value,
            "verdict": self.verdict.as_dict() if self.verdict else None,
            "steps": [s.as_dict() for s in self.steps],
        }


@dataclass
class RunRecord:
    run_id: str
    suite: str
    case_id: str
    mailbox: str
    mailbox_type: str
    nil: str
    mode: str  # "scripted" (--client-cmd) or "interactive"
    tests: list[TestResult]
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    status: Status = Status.RUNNING
    proof_dir: str | None = None
    case_status: Status = Status.WAIT

    def roll_up(self) -> None:
        self.status = roll_up(t.status for t in self.tests)
        self.case_status = self.status

    @property
    def passed(self) -> bool:
        return self.status in (Status.PASS, Status.OMIT) and any(
            t.status is Status.PASS for t in self.tests
        )

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tests:
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "suite": self.suite,
            "case": self.case_id,
            "mailbox": self.mailbox,
            "mailboxType": self.mailbox_type,
            "nil": self.nil,
            "mode": self.mode,
            "status": self.status.value,
            "caseStatus": self.case_status.value,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "counts": self.counts(),
            "proofDir": self.proof_dir,
            "tests": [t.as_dict() for t in self.tests],
        }


class RunRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    def new_run_id(self) -> str:
        day = time.strftime("%Y%m%d", time.gmtime())
        prefix = f"SIMU-MSS-{day}-"
        row = self.db.read_one("SELECT COUNT(*) FROM mss_runs WHERE id LIKE ?", (prefix + "%",))
        return f"{prefix}{(row[0] if row else 0) + 1:04d}"

    async def save(self, run: RunRecord) -> None:
        """Insert or update the run and every result (one transaction)."""
        document = json.dumps(run.as_dict(), default=str)

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO mss_runs(id, suite, case_id, mailbox, mailbox_type, nil, mode,"
                " status, started_at, ended_at, proof_dir, document)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
                " status = excluded.status, ended_at = excluded.ended_at,"
                " proof_dir = excluded.proof_dir, document = excluded.document",
                (
                    run.run_id,
                    run.suite,
                    run.case_id,
                    run.mailbox,
                    run.mailbox_type,
                    run.nil,
                    run.mode,
                    run.status.value,
                    run.started_at,
                    run.ended_at,
                    run.proof_dir,
                    document,
                ),
            )
            rows = []
            for seq, test in enumerate(run.tests):
                rows.append(
                    (
                        run.run_id,
                        test.test_id,
                        "",
                        seq,
                        test.status.value,
                        test.started_at,
                        test.ended_at,
                        json.dumps(test.verdict.as_dict() if test.verdict else {}),
                    )
                )
                for step in test.steps:
                    rows.append(
                        (
                            run.run_id,
                            test.test_id,
                            step.step_id,
                            seq,
                            step.status.value,
                            step.started_at,
                            step.ended_at,
                            json.dumps(step.verdict.as_dict() if step.verdict else {}),
                        )
                    )
            conn.executemany(
                "INSERT INTO mss_results(run_id, test_id, step_id, seq, status, started_at,"
                " ended_at, verdict) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(run_id, test_id,"
                " step_id) DO UPDATE SET status = excluded.status,"
                " started_at = excluded.started_at, ended_at = excluded.ended_at,"
                " verdict = excluded.verdict",
                rows,
            )

        await self.db.write(job)

    def get(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.read_one("SELECT document FROM mss_runs WHERE id = ?", (run_id,))
        return json.loads(row[0]) if row else None

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.read(
            "SELECT id, suite, case_id, mailbox, mailbox_type, nil, mode, status, started_at,"
            " ended_at, proof_dir FROM mss_runs ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )
        return [
            {
                "runId": r[0],
                "suite": r[1],
                "case": r[2],
                "mailbox": r[3],
                "mailboxType": r[4],
                "nil": r[5],
                "mode": r[6],
                "status": r[7],
                "startedAt": r[8],
                "endedAt": r[9],
                "proofDir": r[10],
            }
            for r in rows
        ]

    def latest_test_results(self) -> dict[str, dict[str, Any]]:
        """The most recent finished verdict of every unit test, with its run and proof."""
        rows = self.db.read(
            "SELECT r.test_id, r.status, r.ended_at, r.run_id, m.proof_dir, r.verdict"
            " FROM mss_results r JOIN mss_runs m ON m.id = r.run_id"
            " WHERE r.step_id = '' AND r.status NOT IN ('wait', 'running')"
            " ORDER BY r.ended_at"
        )
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            latest[r[0]] = {
                "status": r[1],
                "endedAt": r[2],
                "runId": r[3],
                "proofDir": r[4],
                "message": json.loads(r[5]).get("message", ""),
            }
        return latest
