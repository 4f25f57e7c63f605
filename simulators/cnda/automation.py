"""The automated CNDA agent: rules that act as the agent so CI can walk a dossier.

The rules only call the ordinary transitions, so they obey the same state machine,
guards and compare-and-set as a human agent; each event they cause says
``actor = "agent:rules"``. They stop as soon as the dossier waits on the editor, or
on a human judgement (an uploaded file is never validated automatically).

The pre-examen rule, in order:

1. a FAILED bundle in the round, or a plan case some bundle of the round fails, makes
   the agent refuse (``refuse_failed_bundles``), with the failed tests and cases;
2. the agent validates (``validate_passed_bundles``) only when every proof of the round
   is a verified PASSED bundle **and** every case of the personalised test plan is
   covered by a passing bundle of the round (``coverage.py``);
3. otherwise it waits: for more proofs from the editor, or for a human agent, who may
   validate a plan that files or declarations cover.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simulators.cnda.coverage import FAILED, plan_coverage
from simulators.cnda.errors import IllegalTransitionError
from simulators.cnda.repository import Dossier, Event
from simulators.cnda.states import TRANSITIONS, Action, Role, State

if TYPE_CHECKING:
    from simulators.cnda.service import CndaService

AUTOMATED_ACTOR = "agent:rules"


@dataclass(frozen=True)
class AgentRules:
    """What the automated agent may do. The defaults walk a clean dossier to the end."""

    send_test_plan: bool = True
    # Every proof of the round is a PASSED bundle and the plan is fully covered by them.
    validate_passed_bundles: bool = True
    refuse_failed_bundles: bool = True  # a FAILED bundle, or a failed plan case, sends it back
    schedule_exam: bool = True
    exam_in_days: int = 7
    exam_mode: str = "remote"
    pass_exam: bool = True
    finalise: bool = True
    complete: bool = True


@dataclass
class AutomationReport:
    done: list[Event] = field(default_factory=list)
    waiting_for: list[str] = field(default_factory=list)


def run_agent(service: CndaService, request_id: str, rules: AgentRules) -> AutomationReport:
    report = AutomationReport()
    for _ in range(len(TRANSITIONS) * 3):  # bounded, whatever the rules say
        dossier = service.dossier(request_id)
        step = next_automatic(service, dossier, rules)
        if step is None:
            break
        action, kwargs = step
        try:
            service.transition(request_id, action, role=Role.AGENT, actor=AUTOMATED_ACTOR, **kwargs)
        except IllegalTransitionError as exc:  # someone else moved the dossier meanwhile
            report.waiting_for.append(f"{action}: {exc.message}")
            break
        report.done.append(service.repo.events(request_id)[-1])
    report.waiting_for += service.next_steps(service.dossier(request_id))
    return report


def next_automatic(
    service: CndaService, dossier: Dossier, rules: AgentRules
) -> tuple[str, dict[str, Any]] | None:
    """The transition the rules would make now, or None when they must wait."""
    from simulators.cnda.service import required_final_documents, required_initial_documents

    state = State(dossier.state)
    docs = {d.doc_type for d in service.repo.documents(dossier.id)}
    if state is State.INITIALISATION and rules.send_test_plan:
        if all(d in docs for d in required_initial_documents(dossier)):
            return Action.SEND_TEST_PLAN, {}
    elif state is State.PRE_EXAMEN:
        proofs = [p for p in service.repo.proofs(dossier.id) if p.round == dossier.round]
        coverage = plan_coverage(dossier.test_plan, dossier.round, proofs)
        failed = [p for p in proofs if p.kind == "bundle" and p.result == "FAILED"]
        failed_cases = coverage[FAILED]
        if (failed or failed_cases) and rules.refuse_failed_bundles:
            tests = sorted({t for p in failed for t in p.details.get("failedTests", [])})
            reasons = []
            if failed:
                reasons.append(
                    f"FAILED proof(s) {', '.join(p.name for p in failed)}; failed tests: "
                    + (", ".join(tests) or "see the bundles")
                )
            if failed_cases:
                reasons.append(f"failed plan cases: {', '.join(failed_cases)}")
            return Action.REFUSE, {"reason": "automatic review: " + "; ".join(reasons)}
        if (
            proofs
            and rules.validate_passed_bundles
            and all(p.kind == "bundle" and p.result == "PASSED" for p in proofs)
            and coverage["complete"]
        ):
            return Action.VALIDATE, {
                "reason": f"automatic review: {len(proofs)} bundle(s) verified and PASSED; "
                f"{coverage['total']}/{coverage['total']} plan case(s) covered"
            }
    elif state is State.EXAMEN_A_PLANIFIER and rules.schedule_exam:
        day = service.clock().date() + dt.timedelta(days=rules.exam_in_days)
        return Action.SCHEDULE_EXAM, {"exam_date": day.isoformat(), "exam_mode": rules.exam_mode}
    elif state is State.EXAMEN_PLANIFIE and rules.pass_exam:
        return Action.PASS_EXAM, {"reason": "automatic exam: passed"}
    elif state is State.FINALISATION and rules.finalise:
        return Action.FINALISE, {}
    elif (
        state is State.ATTESTATION_EMISE
        and rules.complete
        and all(d in docs for d in required_final_documents(dossier))
    ):
        return Action.COMPLETE, {}
    return None
