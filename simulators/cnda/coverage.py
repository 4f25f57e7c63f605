"""Which cases of the personalised test plan the deposited proofs cover.

A proof covers a plan case in one of two ways:

- **verified**: a proof bundle (signature and digests checked at deposit) lists the
  case in its in-toto test-result fields. A name matches when it is the case's ID, or
  one of the case's ``covered_by`` aliases from the catalogue (test IDs of other proof
  bundles, such as this project's interop or MSS runs). ``failedTests`` gives
  *failed*, else ``passedTests`` gives *passed*, else ``warnedTests`` gives *warned*;
- **declared**: the editor says, at deposit, that the proof covers the case
  (``--case ID``). The simulator cannot judge an uploaded file, nor a bundle that does
  not name the case, so a declaration stays *declared*: a human agent decides.

A plan case's status over the proofs of the current round is the strongest outcome
among them: failed > passed > warned > declared > uncovered. The plan is *fully
covered* when every case is passed. The automated agent validates only a fully covered
plan (see ``automation.py``); a human agent may validate anyway, and the validate
event records the coverage it validated with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PASSED, FAILED, WARNED, DECLARED, UNCOVERED = "passed", "failed", "warned", "declared", "uncovered"
# Strongest first: one failing proof of the round outweighs any passing one.
PRECEDENCE = (FAILED, PASSED, WARNED, DECLARED, UNCOVERED)


def plan_case_ids(plan: Mapping[str, Any] | None) -> list[str]:
    return [str(case["id"]) for case in (plan or {}).get("cases", [])]


def proof_outcomes(
    plan: Mapping[str, Any] | None,
    tests: Mapping[str, Iterable[str]] | None,
    declared: Iterable[str] = (),
) -> dict[str, str]:
    """The plan cases one proof covers, and how: ``{case id: outcome}``.

    ``tests`` holds a verified bundle's ``passed``/``failed``/``warned`` test names
    (None for an uploaded file); ``declared`` the case IDs the editor named.
    """
    lists = {key: set(values) for key, values in (tests or {}).items()}
    chosen = set(declared)
    outcomes: dict[str, str] = {}
    for case in (plan or {}).get("cases", []):
        names = {str(case["id"]), *(str(a) for a in case.get("coveredBy", []))}
        if names & lists.get("failed", set()):
            outcomes[case["id"]] = FAILED
        elif names & lists.get("passed", set()):
            outcomes[case["id"]] = PASSED
        elif names & lists.get("warned", set()):
            outcomes[case["id"]] = WARNED
        elif case["id"] in chosen:
            outcomes[case["id"]] = DECLARED
    return outcomes


def plan_coverage(
    plan: Mapping[str, Any] | None, round_number: int, proofs: Iterable[Any]
) -> dict[str, Any]:
    """Coverage of the plan by the proofs of ``round_number`` (``Proof`` rows).

    Every proof's ``details["cases"]`` was computed when it was deposited, against the
    plan the dossier had then (the plan never changes after it is sent).
    """
    current = [p for p in proofs if p.round == round_number]
    cases: list[dict[str, Any]] = []
    for case in (plan or {}).get("cases", []):
        covering = [
            {
                "proofId": p.id,
                "name": p.name,
                "kind": p.kind,
                "sha256": p.sha256,
                "outcome": p.details.get("cases", {})[case["id"]],
            }
            for p in current
            if case["id"] in p.details.get("cases", {})
        ]
        outcomes = {c["outcome"] for c in covering}
        status = next((o for o in PRECEDENCE if o in outcomes), UNCOVERED)
        cases.append(
            {
                "id": case["id"],
                "title": case.get("title", ""),
                "requirements": list(case.get("requirements", [])),
                "status": status,
                "proofs": covering,
            }
        )
    by_status = {s: [c["id"] for c in cases if c["status"] == s] for s in PRECEDENCE}
    return {
        "round": round_number,
        "planSent": plan is not None,
        "total": len(cases),
        "counts": {s: len(ids) for s, ids in by_status.items()},
        "notPassed": [c["id"] for c in cases if c["status"] != PASSED],
        **{s: ids for s, ids in by_status.items()},
        "complete": plan is not None and all(c["status"] == PASSED for c in cases),
        "cases": cases,
    }


def coverage_summary(coverage: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a coverage recorded in events and the attestation (IDs only)."""
    return {
        "round": coverage["round"],
        "total": coverage["total"],
        "complete": coverage["complete"],
        **{s: list(coverage[s]) for s in PRECEDENCE},
    }
