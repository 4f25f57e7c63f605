"""What a run produces: the JSON document, JUnit XML, a text summary and the signed
proof bundle (in-toto test-result statement + detached CMS, see core/proof.py)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from simulators import DISCLAIMER, __version__
from simulators.core.proof import bundle_dir_for, latest_report, write_bundle
from simulators.core.verdict import Status
from simulators.mss.conformance.runs import RunRecord, TestResult
from simulators.mss.services import MssServices

PROOF_KIND = "mss"
_JUNIT_STATUS = {
    Status.PASS: "pass",
    Status.OMIT: "skip",
    Status.SKIP: "skip",
    Status.FAIL: "fail",
    Status.ERROR: "error",
    Status.CANCEL: "error",
    Status.WAIT: "error",
    Status.RUNNING: "error",
}


def run_document(run: RunRecord) -> dict[str, Any]:
    return {"simulation": True, "disclaimer": DISCLAIMER, **run.as_dict()}


def write_json(run: RunRecord, path: Path) -> None:
    path.write_text(json.dumps(run_document(run), indent=2, default=str) + "\n")


def write_junit_report(run: RunRecord, path: Path) -> None:
    from simulators.core.junit import JUnitCase, write_junit

    cases = []
    for test in run.tests:
        verdict = test.verdict
        details = ""
        if verdict is not None:
            details = "\n".join(
                [
                    f"expected: {verdict.expected}",
                    f"observed: {verdict.observed}",
                    f"requirements: {', '.join(test.requirements)}",
                    "evidence: " + ", ".join(f"{e.kind} {e.ref}" for e in verdict.evidence),
                ]
            )
        cases.append(
            JUnitCase(
                name=f"{test.test_id} {test.name}",
                classname=f"segur-sim.mss.{run.case_id}",
                time=(test.ended_at or 0) - (test.started_at or 0),
                status=_JUNIT_STATUS[test.status],
                message=verdict.message if verdict else "",
                details=details,
            )
        )
    write_junit(
        path,
        f"segur-sim MSS {run.case_id} (SIMULATION)",
        cases,
        properties={
            "runId": run.run_id,
            "mailbox": run.mailbox,
            "nil": run.nil,
            "disclaimer": DISCLAIMER,
        },
    )


def summary_text(run: RunRecord) -> str:
    lines = [
        f"run {run.run_id}  suite {run.suite} ({run.case_id})  mailbox {run.mailbox}  "
        f"NIL {run.nil}",
        f"  {DISCLAIMER}",
    ]
    for test in run.tests:
        verdict = test.verdict
        lines.append(f"  {test.status.value.upper():6} {test.test_id:7} {test.name}")
        if verdict is not None and test.status is not Status.PASS:
            lines.append(f"         {verdict.message}")
            if verdict.expected:
                lines.append(f"         expected: {verdict.expected}")
            if verdict.observed:
                lines.append(f"         observed: {verdict.observed}")
            lines.append(f"         requirements: {', '.join(test.requirements)}")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(run.counts().items()))
    lines.append(f"referencing case {run.case_id}: {run.case_status.value.upper()} ({counts})")
    return "\n".join(lines)


# ---- the proof bundle ------------------------------------------------------------------------
def proof_artefacts(run: RunRecord, services: MssServices) -> dict[str, bytes]:
    """Transcripts of every session of the run, the mail submitted, the client logs."""
    artefacts: dict[str, bytes] = {}
    recorder = services.recorder
    end = run.ended_at or float("inf")
    for session in recorder.sessions(since=run.started_at):
        if session.started_at <= end:
            artefacts[f"transcripts/{session.id}.txt"] = recorder.transcript(session.id).encode()
    box = services.store.get_mailbox(run.mailbox)
    if box is not None:
        for sub in services.store.list_submissions(mailbox_id=box.id):
            if run.started_at <= sub.received_at <= end:
                artefacts[f"messages/submission-{sub.id}.eml"] = services.store.blob(sub.blob_id)
    for test in run.tests:
        for step in test.steps:
            output = step.client.get("output")
            if output:
                artefacts[f"client/{test.test_id}-{step.step_id}.log"] = output.encode()
    document = run_document(run)
    for test in document["tests"]:  # client output is in its own files
        for step in test["steps"]:
            step["client"].pop("output", None)
    artefacts["run.json"] = json.dumps(document, indent=2, default=str).encode()
    return artefacts


def _test_label(test: TestResult) -> str:
    return f"{test.test_id} {test.name}"


def write_proof(run: RunRecord, services: MssServices, proofs_dir: Path | None = None) -> Path:
    base = proofs_dir or services.data.proofs_dir
    out = bundle_dir_for(base, PROOF_KIND, run.run_id)
    previous = latest_report(base, PROOF_KIND)
    predicate = {
        "result": "PASSED" if run.passed else "FAILED",
        "passedTests": [_test_label(t) for t in run.tests if t.status is Status.PASS],
        "failedTests": [
            _test_label(t) for t in run.tests if t.status not in (Status.PASS, Status.OMIT)
        ],
        "configuration": [{"name": "testcases/mss", "uri": "urn:segur-sim:testcases:mss"}],
        "toolVersions": {"segur-sim": __version__},
        "run": {
            "suite": run.suite,
            "referencingCase": run.case_id,
            "mailbox": run.mailbox,
            "mailboxType": run.mailbox_type,
            "nil": run.nil,
            "mode": run.mode,
            "status": run.status.value,
            "startedAt": run.started_at,
            "endedAt": run.ended_at,
        },
        "verdicts": [
            {
                "test": t.test_id,
                "name": t.name,
                "status": t.status.value,
                "requirements": list(t.requirements),
                "message": t.verdict.message if t.verdict else "",
                "expected": t.verdict.expected if t.verdict else "",
                "observed": t.verdict.observed if t.verdict else "",
                "evidence": [e.as_dict() for e in t.verdict.evidence] if t.verdict else [],
            }
            for t in run.tests
        ],
    }
    artefacts = proof_artefacts(run, services)
    path = write_bundle(
        out,
        kind=PROOF_KIND,
        predicate=predicate,
        artefacts=artefacts,
        html=_html(run, artefacts),
        pki=services.pki,
        previous=previous,
        run_id=run.run_id,
    )
    run.proof_dir = str(path)
    return path


def _html(run: RunRecord, artefacts: dict[str, bytes]) -> str:
    e = html.escape
    rows = []
    for t in run.tests:
        v = t.verdict
        links = []
        if v is not None:
            for ev in v.evidence:
                name = (
                    f"transcripts/{ev.ref}.txt"
                    if ev.kind == "session"
                    else f"messages/submission-{ev.ref}.eml"
                    if ev.kind == "submission"
                    else None
                )
                if name and name in artefacts:
                    links.append(f'<a href="artefacts/{e(name)}">{e(ev.ref)}</a>')
                else:
                    links.append(e(f"{ev.kind} {ev.ref}"))
        rows.append(
            "<tr>"
            f"<td>{e(t.test_id)}<br><small>{e(t.name)}</small></td>"
            f'<td class="{e(t.status.value)}">{e(t.status.value.upper())}</td>'
            f"<td>{e(v.message if v else '')}"
            + (f"<br><b>expected</b> {e(v.expected)}" if v and v.expected else "")
            + (f"<br><b>observed</b> {e(v.observed)}" if v and v.observed else "")
            + f"</td><td>{e(', '.join(t.requirements))}</td>"
            f"<td>{'<br>'.join(links[:8])}</td></tr>"
        )
    return (
        f"<h2>MSS run {e(run.run_id)}: {e(run.case_id)} {e(run.case_status.value.upper())}</h2>"
        f"<p>Mailbox {e(run.mailbox)} ({e(run.mailbox_type)}), NIL {e(run.nil)}, "
        f"mode {e(run.mode)}.</p>"
        "<table><tr><th>test</th><th>verdict</th><th>why</th><th>requirements</th>"
        "<th>evidence</th></tr>" + "".join(rows) + "</table>"
    )
