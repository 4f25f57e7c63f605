"""The requirement coverage table: the MSS chapter of an editor's referencing dossier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulators.core.verdict import Status, roll_up
from simulators.mss.conformance.catalogue import Catalogue


def coverage_rows(
    catalogue: Catalogue, latest: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One row per requirement: tests, latest verdict (rolled up over its tests), proof.

    ``latest`` maps a unit-test ID to its most recent finished result (see
    ``RunRepository.latest_test_results``).
    """
    rows = []
    for req in catalogue.requirements.values():
        tests = catalogue.tests_for_requirement(req)
        results = [latest[t.id] for t in tests if t.id in latest]
        if req.not_testable:
            state, note = "not-testable", f"not testable here: {req.not_testable}"
        elif not tests:
            state, note = "not-covered", "no unit test traces to this requirement"
        elif len(results) < len(tests):
            missing = [t.id for t in tests if t.id not in latest]
            state, note = "not-run", f"never run: {', '.join(missing)}"
        else:
            state = roll_up(Status(r["status"]) for r in results).value
            note = ""
        if req.partial and not req.not_testable:
            note = (note + "; " if note else "") + f"partly: {req.partial}"
        newest = max(results, key=lambda r: r["endedAt"] or 0) if results else None
        rows.append(
            {
                "id": req.id,
                "aliases": list(req.aliases),
                "text": req.text,
                "tests": [t.id for t in tests],
                "latest": state,
                "runId": newest["runId"] if newest else None,
                "proof": newest["proofDir"] if newest else None,
                "results": {t.id: latest[t.id] for t in tests if t.id in latest},
                "note": note,
            }
        )
    return rows
