"""Verdicts and how they roll up, shared by every simulator that judges something.

The statuses and their precedence follow Inferno's model: when results are grouped
(steps into a unit test, unit tests into a referencing case, cases into a run) the
group takes the status that comes first in :data:`PRECEDENCE`. ``omit`` (a test that
does not apply) never fails its parent; ``skip`` (a test that could not run) keeps a
parent from passing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    CANCEL = "cancel"  # the operator stopped the run
    WAIT = "wait"  # waiting for the software under test to act
    RUNNING = "running"
    ERROR = "error"  # the simulator could not judge (a bug or a broken set-up)
    FAIL = "fail"  # the software under test broke the rule
    SKIP = "skip"  # could not run (missing prerequisite); never counts as passed
    PASS = "pass"
    OMIT = "omit"  # does not apply; ignored by the roll-up


PRECEDENCE: tuple[Status, ...] = (
    Status.CANCEL,
    Status.WAIT,
    Status.RUNNING,
    Status.ERROR,
    Status.FAIL,
    Status.SKIP,
    Status.PASS,
    Status.OMIT,
)
_RANK = {status: rank for rank, status in enumerate(PRECEDENCE)}


def roll_up(statuses: Iterable[Status]) -> Status:
    """The status of a group: the first in precedence order; ``omit`` when empty."""
    found = [Status(s) for s in statuses]
    return min(found, key=_RANK.__getitem__) if found else Status.OMIT


@dataclass(frozen=True)
class Evidence:
    """What a verdict points at: a recorder session, a stored message, an HTTP request."""

    kind: str  # "session" | "submission" | "message" | "http" | "note"
    ref: str  # the session ID, submission ID...
    detail: str = ""  # one line saying why this item matters

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "ref": self.ref, "detail": self.detail}


@dataclass
class Verdict:
    """One judgement: what was expected, what was seen, and where to look."""

    status: Status
    message: str
    expected: str = ""
    observed: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    requirements: tuple[str, ...] = ()

    @classmethod
    def passed(cls, message: str, **kw: Any) -> Verdict:
        return cls(Status.PASS, message, **kw)

    @classmethod
    def failed(cls, message: str, **kw: Any) -> Verdict:
        return cls(Status.FAIL, message, **kw)

    @classmethod
    def error(cls, message: str, **kw: Any) -> Verdict:
        return cls(Status.ERROR, message, **kw)

    @classmethod
    def skipped(cls, message: str, **kw: Any) -> Verdict:
        return cls(Status.SKIP, message, **kw)

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.OMIT)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "message": self.message,
            "expected": self.expected,
            "observed": self.observed,
            "evidence": [e.as_dict() for e in self.evidence],
            "requirements": list(self.requirements),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            Status(data["status"]),
            data.get("message", ""),
            data.get("expected", ""),
            data.get("observed", ""),
            [Evidence(**e) for e in data.get("evidence", [])],
            tuple(data.get("requirements", ())),
        )


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """Several findings into one verdict: the worst status, its messages first."""
    items = list(verdicts)
    if not items:
        return Verdict(Status.OMIT, "nothing to judge")
    status = roll_up(v.status for v in items)
    lead = [v for v in items if v.status == status]
    rest = [v for v in items if v.status != status]
    ordered = lead + rest
    return Verdict(
        status,
        "; ".join(v.message for v in lead),
        expected="; ".join(v.expected for v in ordered if v.expected),
        observed="; ".join(v.observed for v in ordered if v.observed),
        evidence=[e for v in ordered for e in v.evidence],
        requirements=tuple(dict.fromkeys(r for v in ordered for r in v.requirements)),
    )
