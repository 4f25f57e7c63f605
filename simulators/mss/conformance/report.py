"""What a run produces: the JSON document, JUnit XML, a text summary and the signed
proof bundle (in-toto test-result statement + detached CMS, see core/proof.py)."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from simulators import DISCLAIMER, __version__
from simulators.core.proof import bundle_dir_for, latest_report, write_bundle
from simulators.core.verdict import Status, Verdict, combine, roll_up
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


# ---- a cancelled run ----------------------------------------------------------------------------
_UNFINISHED = (Status.WAIT, Status.RUNNING, Status.CANCEL)


def mark_cancelled(run: RunRecord, reason: str, at: float | None = None) -> dict[str, Any]:
    """Give every unit test of a run stopped before its end a final status, and say how.

    Tests judged before the cancel keep their verdicts. The test the run stopped in
    becomes ``cancel``: its judged steps keep their verdicts, the step the runner was
    waiting for is ``cancel`` (with its instruction as the expected value), the steps
    after it ``omit``. Tests that never started are ``omit`` ("not run"). By the
    precedence of core/verdict.py (cancel first) the run and its referencing case then
    roll up to ``cancel``: a cancelled run never passes. Returns the description kept in
    the proof bundle (``predicate.cancellation`` and ``artefacts/run.json``).
    """
    now = at or time.time()
    stopped: dict[str, Any] | None = None
    for test in run.tests:
        if test.verdict is not None and test.status not in _UNFINISHED:
            continue  # judged before the cancel
        if test.steps and all(s.verdict is not None for s in test.steps):
            # every step was judged, only the test's own roll-up was missing
            test.verdict = combine(s.verdict for s in test.steps if s.verdict is not None)
            test.verdict.requirements = test.requirements
            test.status = roll_up(s.status for s in test.steps)
            continue
        if stopped is None:
            for step in test.steps:
                if step.verdict is not None:
                    continue
                if stopped is None:
                    waiting = step.started_at is not None
                    where = (
                        f"while the runner waited for step {step.step_id} ({step.action})"
                        if waiting
                        else f"before step {step.step_id} ({step.action}) started"
                    )
                    step.verdict = Verdict(
                        Status.CANCEL,
                        f"run cancelled {where}: {reason}",
                        expected=" ".join(step.instruction.split()),
                        observed="nothing judged: the run was cancelled before the step ended",
                        requirements=test.requirements,
                    )
                    step.status = Status.CANCEL
                    if waiting:
                        step.ended_at = now
                    stopped = {"test": test.test_id, "step": step.step_id, "waiting": waiting}
                else:
                    step.verdict = Verdict(
                        Status.OMIT, "not run: the run was cancelled before this step"
                    )
                    step.status = Status.OMIT
            test.verdict = combine(s.verdict for s in test.steps if s.verdict is not None)
            test.verdict.requirements = test.requirements
            test.status = roll_up(s.status for s in test.steps)
            continue
        for step in test.steps:
            step.verdict = Verdict(Status.OMIT, "not run: the run was cancelled before this step")
            step.status = Status.OMIT
        test.verdict = Verdict(
            Status.OMIT,
            "not run: the run was cancelled before this test started",
            requirements=test.requirements,
        )
        test.status = Status.OMIT
    run.ended_at = run.ended_at or now
    run.roll_up()
    return {
        "cancelled": True,
        "reason": reason,
        "at": now,
        "stoppedIn": stopped,
        "testsJudged": [
            t.test_id
            for t in run.tests
            if not _never_ran(t) and (stopped is None or t.test_id != stopped["test"])
        ],
        "testsNotRun": [t.test_id for t in run.tests if _never_ran(t)],
    }


def _never_ran(test: TestResult) -> bool:
    return test.status is Status.OMIT and all(s.started_at is None for s in test.steps)


def _cancellation_text(run: RunRecord, cancellation: dict[str, Any]) -> str:
    stopped = cancellation.get("stoppedIn")
    where = (
        f"in {stopped['test']} step {stopped['step']}"
        + (" while waiting for the software under test" if stopped.get("waiting") else "")
        if stopped
        else "after its last unit test was judged"
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(cancellation["at"]))
    return (
        f"This run was CANCELLED at {when} {where} ({cancellation['reason']}). "
        f"{len(cancellation['testsJudged'])} unit test(s) were judged before; "
        f"{len(cancellation['testsNotRun'])} did not run (omit)."
    )


# ---- the proof bundle ------------------------------------------------------------------------
def proof_artefacts(
    run: RunRecord, services: MssServices, cancellation: dict[str, Any] | None = None
) -> dict[str, bytes]:
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
    if cancellation is not None:
        document["cancellation"] = cancellation
    for test in document["tests"]:  # client output is in its own files
        for step in test["steps"]:
            step["client"].pop("output", None)
    artefacts["run.json"] = json.dumps(document, indent=2, default=str).encode()
    return artefacts


def _test_label(test: TestResult) -> str:
    return f"{test.test_id} {test.name}"


def write_proof(
    run: RunRecord,
    services: MssServices,
    proofs_dir: Path | None = None,
    *,
    cancellation: dict[str, Any] | None = None,
) -> Path:
    """Write the run's signed bundle. ``cancellation`` (from :func:`mark_cancelled`) is
    given for a run stopped before its end: the report then says so first."""
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
    if cancellation is not None:
        predicate["cancellation"] = {**cancellation, "text": _cancellation_text(run, cancellation)}
        predicate["omittedTests"] = [_test_label(t) for t in run.tests if t.status is Status.OMIT]
    artefacts = proof_artefacts(run, services, cancellation)
    path = write_bundle(
        out,
        kind=PROOF_KIND,
        predicate=predicate,
        artefacts=artefacts,
        html=_html(run, artefacts, cancellation),
        pki=services.pki,
        previous=previous,
        run_id=run.run_id,
    )
    run.proof_dir = str(path)
    return path


def _html(
    run: RunRecord, artefacts: dict[str, bytes], cancellation: dict[str, Any] | None = None
) -> str:
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
    banner = (
        f'<p id="cancelled" class="FAILED">{e(_cancellation_text(run, cancellation))}</p>'
        if cancellation is not None
        else ""
    )
    return (
        f"<h2>MSS run {e(run.run_id)}: {e(run.case_id)} {e(run.case_status.value.upper())}</h2>"
        + banner
        + f"<p>Mailbox {e(run.mailbox)} ({e(run.mailbox_type)}), NIL {e(run.nil)}, "
        f"mode {e(run.mode)}.</p>"
        "<table><tr><th>test</th><th>verdict</th><th>why</th><th>requirements</th>"
        "<th>evidence</th></tr>" + "".join(rows) + "</table>"
    )
